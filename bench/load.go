package main

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// result is what the load generator measured on one server, summed over
// the rounds.
type result struct {
	mu    sync.Mutex
	lat   []time.Duration
	total time.Duration
	conns int
	bytes int64 // output received, over all connections
	fails int
	cpu   time.Duration
	// per round: conn/s and CPU per connection, to show the spread
	roundRates []float64
	roundCPU   []time.Duration
}

func (r *result) rate() float64 {
	if r.total == 0 {
		return 0
	}
	return float64(r.conns) / r.total.Seconds()
}

func (r *result) pct(p int) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	s := slices.Clone(r.lat)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

// bytesPerConn is the mean output of a connection's command.
func (r *result) bytesPerConn() int64 {
	if r.conns == 0 {
		return 0
	}
	return r.bytes / int64(r.conns)
}

func (r *result) cpuPerConn() time.Duration {
	if r.conns == 0 {
		return 0
	}
	return (r.cpu / time.Duration(r.conns)).Round(time.Microsecond)
}

// measureLoad runs the rounds, each server once a round.
func (b *bench) measureLoad() {
	servers := b.servers()
	for r := range b.opt.rounds {
		// Rotate the order so that machine noise hits all alike.
		for i := range servers {
			s := servers[(i+r)%len(servers)]
			load(s, clientConfig(s, b.signer), b.opt.count, b.opt.concurrency, &s.load)
		}
	}
}

// afterRound is how long after a round its server's CPU time is read.
const afterRound = 750 * time.Millisecond

// load runs n connections to s, c at a time, each running query session
// once, and adds what it measured to res.
func load(s *server, cfg *ssh.ClientConfig, n, c int, res *result) {
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	var fails, bytes atomic.Int64
	lat := make([]time.Duration, 0, n)
	var latMu sync.Mutex
	cpu0 := cpuTime(s.cmd.Process.Pid)
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				t0 := time.Now()
				n, err := oneCommand(s.addr, cfg, "query session")
				if err != nil {
					fails.Add(1)
					continue
				}
				bytes.Add(n)
				d := time.Since(t0)
				latMu.Lock()
				lat = append(lat, d)
				latMu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	// What the server does once the round is over is the round's too:
	// tsadmin hands memory back 250 ms after a burst (server/settle.go).
	time.Sleep(afterRound)
	cpu := cpuTime(s.cmd.Process.Pid) - cpu0
	res.mu.Lock()
	res.lat = append(res.lat, lat...)
	res.total += took
	res.conns += len(lat)
	res.bytes += bytes.Load()
	res.fails += int(fails.Load())
	res.cpu += cpu
	if len(lat) > 0 {
		res.roundRates = append(res.roundRates, float64(len(lat))/took.Seconds())
		res.roundCPU = append(res.roundCPU, cpu/time.Duration(len(lat)))
	}
	res.mu.Unlock()
}

func clientConfig(s *server, signer ssh.Signer) *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User: s.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second,
	}
}

// oneCommand opens a connection, runs cmd in one session, and returns
// how many bytes it printed; it fails if it printed nothing. The output is counted, not kept: a client that
// buffered 10,000 rows for each command would spend the cores the servers
// are measured on.
func oneCommand(addr string, cfg *ssh.ClientConfig, cmd string) (int64, error) {
	var out byteCount
	err := runCommand(addr, cfg, cmd, &out)
	if err == nil && out == 0 {
		err = fmt.Errorf("no output")
	}
	return int64(out), err
}

// runCommand opens a connection and runs cmd in one session, its output
// to stdout.
func runCommand(addr string, cfg *ssh.ClientConfig, cmd string, stdout io.Writer) error {
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	sess.Stdout = stdout
	return sess.Run(cmd)
}

// byteCount is an io.Writer that counts what it is given.
type byteCount int64

func (n *byteCount) Write(p []byte) (int, error) {
	*n += byteCount(len(p))
	return len(p), nil
}
