package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// idleMemory holds n idle sessions on s and returns the RSS growth per
// session; on a server with an audit log (tsadmin) it also times query
// session with them present, on the server.
func (b *bench) idleMemory(s *server, n int) (float64, time.Duration) {
	cfg := clientConfig(s, b.signer)
	runtime.GC()
	time.Sleep(500 * time.Millisecond)
	before := rss(s.cmd.Process.Pid)
	clients := openMany(s.addr, cfg, n)
	time.Sleep(time.Second)
	after := rss(s.cmd.Process.Pid)
	var took time.Duration
	if s.audit != "" {
		for range 20 {
			oneCommand(s.addr, cfg, "query session")
		}
		took = serverQueryTime(s.audit)
	}
	for _, c := range clients {
		c.Close()
	}
	time.Sleep(time.Second)
	if len(clients) == 0 {
		return 0, took
	}
	return float64(after-before) / float64(len(clients)), took
}

// hold opens idle sessions on s until one fails or n are held, and
// returns how many were held at once.
func (b *bench) hold(s *server, n int) int {
	cfg := clientConfig(s, b.signer)
	var clients []*ssh.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	const batch = 500
	for len(clients) < n {
		got := openMany(s.addr, cfg, min(batch, n-len(clients)))
		clients = append(clients, got...)
		if len(got) < min(batch, n-len(clients)+len(got)) {
			break
		}
		select {
		case <-s.done:
			return len(clients)
		default:
		}
	}
	// The server still answers with all of them held.
	if err := oneCommand(s.addr, cfg, "query user"); err != nil {
		fmt.Fprintf(os.Stderr, "bench: with %d held, query user failed: %v\n", len(clients), err)
	}
	return len(clients)
}

// openIdle opens one interactive session (PTY and shell, input held open).
func openIdle(addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	sess, err := c.NewSession()
	if err == nil {
		err = sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{})
	}
	if err == nil {
		_, err = sess.StdinPipe()
	}
	if err == nil {
		err = sess.Shell()
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// openMany tries n idle sessions, 32 at a time, and returns those that
// opened.
func openMany(addr string, cfg *ssh.ClientConfig, n int) []*ssh.Client {
	var mu sync.Mutex
	var clients []*ssh.Client
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if c, err := openIdle(addr, cfg); err == nil {
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return clients
}

// serverQueryTime is the median server-side time of the last 20 query
// commands in tsadmin's audit log (its took_us), which leaves the
// network and the client out.
func serverQueryTime(auditPath string) time.Duration {
	data, _ := os.ReadFile(auditPath)
	var d []time.Duration
	for _, l := range strings.Split(string(data), "\n") {
		var rec struct {
			Msg    string   `json:"msg"`
			Words  []string `json:"words"`
			TookUS int64    `json:"took_us"`
		}
		if json.Unmarshal([]byte(l), &rec) != nil || rec.Msg != "command" || len(rec.Words) < 2 || rec.Words[0] != "query" {
			continue
		}
		d = append(d, time.Duration(rec.TookUS)*time.Microsecond)
	}
	if len(d) > 20 {
		d = d[len(d)-20:]
	}
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}
