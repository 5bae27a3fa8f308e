package e2e

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// rss is the server's resident memory in KiB; fds its open descriptors.
func (s *Server) rss(t *testing.T) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}

func (s *Server) fds(t *testing.T) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// dialFrom connects from a given loopback source address.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// A flood of half-open connections from one address never locks out an
// admin from another: 300 connections that never finish their handshake
// are held (and reopened when the server drops them, for 5 seconds) while
// an admin runs query session.
func TestHalfOpenFloodDoesNotLockOutAnAdmin(t *testing.T) {
	f := newFleet(t, "")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var opened, dropped atomic.Int64
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(5 * time.Second)
			buf := make([]byte, 256)
			for time.Now().Before(deadline) {
				c, err := dialFrom("127.0.0.2", f.Addr)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				opened.Add(1)
				// Say nothing; wait until the server drops us.
				c.SetReadDeadline(deadline)
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				c.Close()
				dropped.Add(1)
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // let the flood build up
	var times []time.Duration
	for i := 0; i < 10; i++ {
		start := time.Now()
		r := f.Run(f.alice, "", "query", "session")
		if r.Status != 0 {
			t.Fatalf("during the flood the admin got status %d: %q", r.Status, r.Stderr)
		}
		times = append(times, time.Since(start))
	}
	close(stop)
	wg.Wait()
	fmt.Printf("MEASURE flood: %d half-open connections opened, %d dropped by the server; admin query session (ssh client, whole run) median %s, max %s\n",
		opened.Load(), dropped.Load(), median(times), times[len(times)-1])
}

// The load test: 1,000 concurrent interactive sessions and 10,000 one-shot
// commands against one server, 0 failures, and nothing leaks once they
// end. TSADMIN_LOAD=1 runs it (scripts/test does).
func TestLoad(t *testing.T) {
	if os.Getenv("TSADMIN_LOAD") == "" {
		t.Skip("load test: set TSADMIN_LOAD=1")
	}
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	f := newFleet(t, "limits: { max_startups: 1000, max_startups_per_source: 1000 }\n")
	baseRSS, baseFDs := f.rss(t), f.fds(t)
	cfg := &ssh.ClientConfig{User: "load", Auth: []ssh.AuthMethod{ssh.PublicKeys(f.alice.Signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 20 * time.Second}

	// 1,000 interactive sessions, held at once.
	const interactive = 1000
	var failures atomic.Int64
	clients := make([]*ssh.Client, interactive)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := ssh.Dial("tcp", f.Addr, cfg)
			if err != nil {
				failures.Add(1)
				return
			}
			s, err := c.NewSession()
			if err == nil {
				err = s.RequestPty("xterm", 24, 80, ssh.TerminalModes{})
			}
			if err == nil {
				// Hold stdin open: a nil Stdin is an immediate EOF,
				// which is Ctrl-D.
				_, err = s.StdinPipe()
			}
			if err == nil {
				err = s.Shell()
			}
			if err != nil {
				failures.Add(1)
				c.Close()
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	heldRSS, heldFDs := f.rss(t), f.fds(t)
	fmt.Printf("MEASURE load: %d interactive sessions opened in %s, %d failures; server RSS %d -> %d KiB (%.1f KiB per session), fds %d -> %d\n",
		interactive, time.Since(start).Round(time.Millisecond), failures.Load(), baseRSS, heldRSS,
		float64(heldRSS-baseRSS)/interactive, baseFDs, heldFDs)
	list := f.List(f.alice)
	if len(list) < interactive {
		t.Errorf("the listing shows %d sessions with %d held", len(list), interactive)
	}

	// 10,000 one-shot commands, 16 at a time, while the sessions are held.
	const oneShots = 10000
	start = time.Now()
	jobs := make(chan int)
	var shotFailures atomic.Int64
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				c, err := ssh.Dial("tcp", f.Addr, cfg)
				if err != nil {
					if shotFailures.Add(1) <= 3 {
						fmt.Printf("one-shot dial failure: %v\n", err)
					}
					continue
				}
				s, err := c.NewSession()
				if err == nil {
					var out []byte
					out, err = s.Output("query user alice")
					if err == nil && !strings.Contains(string(out), "alice") {
						err = fmt.Errorf("no output")
					}
				}
				if err != nil {
					if shotFailures.Add(1) <= 3 {
						fmt.Printf("one-shot failure: %v\n", err)
					}
				}
				c.Close()
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < oneShots && time.Now().Before(deadline); i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	fmt.Printf("MEASURE load: %d one-shot commands in %s (%.0f/s), %d failures\n",
		oneShots, took.Round(time.Millisecond), float64(oneShots)/took.Seconds(), shotFailures.Load())

	for _, c := range clients {
		if c != nil {
			c.Close()
		}
	}
	// Everything ends: descriptors come back to where they were.
	var endFDs, endRSS int
	for i := 0; i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		endFDs, endRSS = f.fds(t), f.rss(t)
		if endFDs <= baseFDs+2 {
			break
		}
	}
	fmt.Printf("MEASURE load: after all ended: fds %d (baseline %d), RSS %d KiB (baseline %d)\n", endFDs, baseFDs, endRSS, baseRSS)
	if failures.Load() != 0 || shotFailures.Load() != 0 {
		t.Errorf("failures: %d interactive, %d one-shot", failures.Load(), shotFailures.Load())
		for _, l := range strings.Split(f.Log(), "\n") {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") || strings.Contains(l, "panic") {
				t.Log(l)
			}
		}
	}
	if endFDs > baseFDs+2 {
		t.Errorf("descriptors leak: %d at the end, %d at the start", endFDs, baseFDs)
	}
	if n := len(sessionsOf(f.List(f.alice), "alice")); n != 0 {
		t.Errorf("%d sessions are still listed after every client left", n)
	}
}
