package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/internal/bare"
)

// heldStep is what one step of the held phase measured on one server:
// with held idle interactive sessions open (n were asked for), the RSS
// growth per session since none were, the one-shot conn/s with them
// present (bare answers with as many rows as tsadmin's listing has), and
// the server-side time of query session (on bare, of writing as many
// bytes).
type heldStep struct {
	n, held   int
	mem       float64       // KiB per held session
	queryTook time.Duration // median, on the server
	rate      float64       // one-shot conn/s with them held
	bytes     int64         // a one-shot's output then
}

// holdSteps opens idle sessions on s up to each of the steps in turn,
// keeping those already open, and measures at each; it closes them all at
// the end; a child process holds them (hold.go). It first measures the
// one-shot conn/s with none held (rate0), so that the ratios compare
// figures taken minutes apart at most.
func (b *bench) holdSteps(s *server) (steps []heldStep, rate0 float64) {
	cfg := clientConfig(s, b.signer)
	rate0, _ = b.oneShotRate(s, cfg)
	time.Sleep(500 * time.Millisecond)
	before := rss(s.cmd.Process.Pid)
	h, err := b.startHolder(s)
	if err != nil {
		step(fmt.Sprintf("%s: no sessions held: %v", s.name, err))
		return nil, rate0
	}
	defer func() {
		h.stop()
		time.Sleep(time.Second)
	}()
	for _, n := range b.opt.held {
		held := h.hold(n)
		time.Sleep(time.Second)
		st := heldStep{n: n, held: held}
		if held > 0 {
			st.mem = float64(rss(s.cmd.Process.Pid)-before) / float64(held)
		}
		for range 20 {
			oneCommand(s.addr, cfg, "query session")
		}
		st.queryTook = queryTime(s, cfg)
		st.rate, st.bytes = b.oneShotRate(s, cfg)
		steps = append(steps, st)
		select {
		case <-s.done:
			return steps, rate0 // the server died: nothing more to measure
		default:
		}
	}
	return steps, rate0
}

// oneShotRate is s's conn/s with one query session per connection, one
// round of the load phase's size, and the bytes each printed.
func (b *bench) oneShotRate(s *server, cfg *ssh.ClientConfig) (float64, int64) {
	var res result
	load(s, cfg, b.opt.count, b.opt.concurrency, &res)
	return res.rate(), res.bytesPerConn()
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
// opened; n <= 0 opens none.
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

// queryTime is the median server-side time of s's last 20 answers to
// query session: tsadmin's from its audit log (took_us), bare's from its
// own count of how long each answer took to write (bare.TookCommand).
// Both end when the last byte is handed to the library's channel, which
// encrypts it and writes it to the socket.
func queryTime(s *server, cfg *ssh.ClientConfig) time.Duration {
	var d []time.Duration
	if s.audit == "" {
		var out bytes.Buffer
		if runCommand(s.addr, cfg, bare.TookCommand, &out) != nil {
			return 0
		}
		for _, l := range strings.Fields(out.String()) {
			if us, err := strconv.ParseInt(l, 10, 64); err == nil {
				d = append(d, time.Duration(us)*time.Microsecond)
			}
		}
		return medianOfLast(d, 20)
	}
	data, _ := os.ReadFile(s.audit)
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
	return medianOfLast(d, 20)
}

// medianOfLast is the median of d's last n, 0 if d is empty.
func medianOfLast(d []time.Duration, n int) time.Duration {
	d = slices.Clone(d[max(0, len(d)-n):])
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}
