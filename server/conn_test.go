package server

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// dial opens an authenticated connection to the in-process server.
func dial(t testing.TB, addr string, key gossh.Signer) *gossh.Client {
	t.Helper()
	c, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User: "x", Auth: []gossh.AuthMethod{gossh.PublicKeys(key)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openShell opens an interactive session (PTY + shell) that sends nothing.
func openShell(c *gossh.Client) (*gossh.Session, error) {
	s, _, err := startShell(c, true)
	return s, err
}

// startShell opens an interactive session (with pty) or a script (without)
// and returns its input, left open.
func startShell(c *gossh.Client, pty bool) (*gossh.Session, io.WriteCloser, error) {
	s, err := c.NewSession()
	if err != nil {
		return nil, nil, err
	}
	if pty {
		if err := s.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
			return nil, nil, err
		}
	}
	// Without a pipe, x/crypto sends EOF at once, and the shell ends as
	// at Ctrl-D.
	in, err := s.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	return s, in, s.Shell()
}

// settledGoroutines waits for the goroutine count to stop moving (the
// handshakes' short-lived goroutines end) and returns it.
func settledGoroutines() int {
	last := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(50 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == last {
			return n
		}
		last = n
	}
	return last
}

// waitGoroutines waits, a bounded time, until at most n goroutines run:
// the server's side of closed connections has ended. A test closes its
// clients and waits before the server's Shutdown (its cleanup) notifies
// live sessions: x/crypto's channel does not synchronise a write with
// CloseWrite, and a notice racing a session's own end is reported by the
// race detector.
func waitGoroutines(n int) {
	for range 100 {
		if runtime.NumGoroutine() <= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An idle interactive session costs the server five goroutines: x/crypto's
// three per connection (mux loop, read loop, key exchange loop), the one
// that serves the connection's requests, its channels and its first
// session's requests, and the shell waiting for input. gliderlabs'
// HandleConn cost two more, each with its stack. The sessions are held by
// a child process (this test binary, in TestHoldSessionsHelper), so that
// the count is the server's alone.
func TestIdleSessionsCostFiveGoroutines(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	addr, alice := startWithKey(t, nil, priv)
	// The keepalive loop starts with the first session: start it now, so
	// that it is not counted as the sessions' own.
	idle := settledGoroutines()
	warm := dial(t, addr, alice)
	if _, err := openShell(warm); err != nil {
		t.Fatal(err)
	}
	const n = 50
	before := settledGoroutines()
	release := holdSessions(t, addr, priv, n)
	defer func() {
		release()
		warm.Close()
		// What stays is the keepalive loop.
		waitGoroutines(idle + 1)
	}()
	after := settledGoroutines()
	perSession := float64(after-before) / n
	t.Logf("goroutines: %d before, %d with %d idle interactive sessions: %.2f per session", before, after, n, perSession)
	if perSession > 5 {
		t.Errorf("an idle interactive session costs the server %.2f goroutines, want at most 5", perSession)
	}
	if perSession < 3 {
		t.Errorf("%.2f goroutines per session: the sessions were not held", perSession)
	}
}

// holdSessions has a child process (this test binary, in
// TestHoldSessionsHelper) open n idle interactive sessions to addr with
// key priv, and returns once they are open; release closes them and waits
// for the child to end. The child's client connections are not counted in
// this process's goroutines or memory.
func holdSessions(t testing.TB, addr string, priv ed25519.PrivateKey, n int) (release func()) {
	t.Helper()
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := t.TempDir() + "/key"
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldSessionsHelper$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "TSADMIN_HOLD="+addr+","+keyFile+","+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	release = func() {
		stdin.Close() // the helper lets its sessions go when its input closes
		cmd.Wait()
	}
	if err := waitFor(stdout, "HELD"); err != nil {
		release()
		t.Fatal(err)
	}
	return release
}

// waitFor reads lines from r until one is want; the helper's other lines
// are errors.
func waitFor(r interface{ Read([]byte) (int, error) }, want string) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if sc.Text() == want {
			return nil
		}
		return errors.New(sc.Text())
	}
	return fmt.Errorf("the helper ended without %s: %v", want, sc.Err())
}

// TestHoldSessionsHelper is not a test: run by holdSessions as a child
// process, it opens the
// idle interactive sessions that the parent counts, says HELD, and holds
// them until its standard input closes.
func TestHoldSessionsHelper(t *testing.T) {
	spec := os.Getenv("TSADMIN_HOLD")
	if spec == "" {
		t.Skip("a helper process of TestIdleSessionsCostFiveGoroutines")
	}
	f := strings.Split(spec, ",")
	addr, keyFile := f[0], f[1]
	n, _ := strconv.Atoi(f[2])
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		fmt.Println(err)
		return
	}
	key, err := gossh.ParsePrivateKey(raw)
	if err != nil {
		fmt.Println(err)
		return
	}
	for range n {
		c := dial(t, addr, key)
		defer c.Close()
		if _, err := openShell(c); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println("HELD")
	os.Stdin.Read(make([]byte, 1))
}

// On one connection: a second session channel works beside an idle
// interactive one (the first is served by the connection's goroutine,
// later ones by their own); remote forwarding (a global request) and
// every channel type but session are refused.
func TestSecondSessionAndRefusals(t *testing.T) {
	addr, alice := startInProcess(t, nil)
	idle := settledGoroutines()
	c := dial(t, addr, alice)
	defer func() {
		c.Close()
		waitGoroutines(idle + 1) // and the keepalive loop
	}()
	if _, err := openShell(c); err != nil {
		t.Fatal(err)
	}
	// Sessions in turn: each can be the second, and one that returned is
	// no longer listed (its row leaves before its exit status is sent).
	for i := range 20 {
		s, err := c.NewSession()
		if err != nil {
			t.Fatalf("session %d beside the shell: %v", i+2, err)
		}
		out, err := s.CombinedOutput("query session")
		if err != nil || strings.Count(string(out), "alice") != 2 || !strings.Contains(string(out), ">ssh#") {
			t.Fatalf("query session on session %d: %v %q, want the two sessions of alice", i+2, err, out)
		}
	}
	if ok, _, err := c.SendRequest("tcpip-forward", true, gossh.Marshal(struct {
		Addr string
		Port uint32
	}{"127.0.0.1", 0})); ok || err != nil {
		t.Errorf("tcpip-forward: accepted %v, err %v; want a refusal", ok, err)
	}
	if l, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
		t.Error("remote forwarding (-R) was accepted")
	}
	if conn, err := c.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Error("a direct-tcpip channel (-L, -W) was accepted")
	} else if oc := new(gossh.OpenChannelError); !errors.As(err, &oc) || oc.Reason != gossh.UnknownChannelType {
		t.Errorf("direct-tcpip: %v, want an unknown channel type refusal", err)
	}
	for _, kind := range []string{"x11", "auth-agent@openssh.com", "forwarded-tcpip"} {
		if ch, _, err := c.OpenChannel(kind, nil); err == nil {
			ch.Close()
			t.Errorf("a %s channel was accepted", kind)
		}
	}
	// The connection still serves sessions after the refusals.
	mustOutput(t, c, "help")
}

// mustOutput runs cmd in a new session on c and returns its output; no
// output, or an error, fails the test.
func mustOutput(t testing.TB, c *gossh.Client, cmd string) []byte {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output(cmd)
	if err != nil || len(out) == 0 {
		t.Fatalf("%s: %v %q", cmd, err, out)
	}
	return out
}

// BenchmarkConnection is what one connection costs: connect, authenticate,
// exec `query session`, disconnect. The client runs in this process too,
// so ns/op and allocs/op include its (unchanging) share; compare with
// BenchmarkConnectionBare, whose client does the same.
func BenchmarkConnection(b *testing.B) {
	addr, alice := startInProcess(b, nil)
	benchmarkConnection(b, addr, alice)
}

// BenchmarkConnectionBare is BenchmarkConnection against the bare
// gliderlabs/ssh server (startBare): the library's own cost.
func BenchmarkConnectionBare(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	addr := startBare(b, pub)
	alice, _ := gossh.NewSignerFromKey(priv)
	benchmarkConnection(b, addr, alice)
}

func benchmarkConnection(b *testing.B, addr string, alice gossh.Signer) {
	cfg := &gossh.ClientConfig{
		User: "x", Auth: []gossh.AuthMethod{gossh.PublicKeys(alice)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
	}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		c, err := gossh.Dial("tcp", addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		s, err := c.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if out, err := s.Output("query session"); err != nil || len(out) == 0 {
			b.Fatal(err, out)
		}
		c.Close()
	}
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the CPU time this process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
