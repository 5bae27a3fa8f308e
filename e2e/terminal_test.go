package e2e

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// ptyShell is an interactive session opened with the Go client, so that a
// test can send bytes no terminal would.
type ptyShell struct {
	sess  *ssh.Session
	in    io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	ended chan struct{}
}

func (s *Server) ptyShell(t *testing.T, key Key) *ptyShell {
	t.Helper()
	c, err := s.dial(t, "admin", ssh.PublicKeys(key.Signer))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	p := &ptyShell{sess: sess, ended: make(chan struct{})}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	p.in, _ = sess.StdinPipe()
	sess.Stdout = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.out.Write(b)
	})
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sess.Wait()
		close(p.ended)
	}()
	if !p.waitFor("> ", 5*time.Second) {
		t.Fatalf("no prompt: %q", p.output())
	}
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *ptyShell) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *ptyShell) waitFor(s string, d time.Duration) bool {
	return waitUntil(d, func() bool { return strings.Contains(p.output(), s) })
}

func (p *ptyShell) endedWithin(d time.Duration) bool {
	select {
	case <-p.ended:
		return true
	case <-time.After(d):
		return false
	}
}

// cpuTicks is the server process's user+system CPU time, in clock ticks.
func (s *Server) cpuTicks(t *testing.T) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(s.cmd.Process.Pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	sy, _ := strconv.Atoi(f[12])
	return u + sy
}

// x/term trap: an ESC followed by more than its buffer of bytes with no
// final letter makes x/term read into a zero-length buffer, and ReadLine
// would spin on a CPU for ever, even after the client left.
func TestUnterminatedEscapeSequenceDoesNotSpin(t *testing.T) {
	f := newFleet(t, "")
	p := f.ptyShell(t, f.alice)
	p.in.Write(append([]byte("\x1b["), bytes.Repeat([]byte("1;"), 400)...))
	if !p.endedWithin(5 * time.Second) {
		t.Fatal("the session did not end after an unterminated escape sequence")
	}
	before := f.cpuTicks(t)
	time.Sleep(time.Second)
	if used := f.cpuTicks(t) - before; used > 20 {
		t.Fatalf("the server used %d ticks of CPU in an idle second: a reader spins", used)
	}
	if r := f.Run(f.alice, "", "query", "user"); r.Status != 0 {
		t.Fatalf("the server does not answer afterwards: %d", r.Status)
	}
}

// Bracketed paste skips x/term's line limit and turns a pasted block into
// lines that would each run: pasted lines are not run.
func TestPastedLinesAreNotRun(t *testing.T) {
	f := newFleet(t, "")
	bob := f.Open(f.bob)
	target := sessionsOf(f.List(f.alice), "bob")[0]
	p := f.ptyShell(t, f.alice)
	p.in.Write([]byte("\x1b[200~logoff " + strconv.Itoa(target.ID) + "\r\x1b[201~"))
	if !p.waitFor("pasted lines are not run", 5*time.Second) {
		t.Fatalf("no refusal: %q", p.output())
	}
	if bob.Exited(500 * time.Millisecond) {
		t.Fatal("a pasted logoff ran")
	}
	// A long paste with no newline ends the session instead of growing.
	p.in.Write([]byte("\x1b[200~" + strings.Repeat("x", 10000)))
	if !p.endedWithin(5 * time.Second) {
		t.Fatal("a 10000-byte paste did not end the session")
	}
	bob.Close()
}

func TestOverlongInteractiveLineEndsTheSession(t *testing.T) {
	f := newFleet(t, "")
	p := f.ptyShell(t, f.alice)
	p.in.Write([]byte(strings.Repeat("q", 5000)))
	if !p.endedWithin(5 * time.Second) {
		t.Fatal("a 5000-byte line did not end the session")
	}
	if !strings.Contains(p.output(), "longer than") {
		t.Errorf("not told why: %q", p.output())
	}
}

func TestCtrlCDropsTheLineAndKeepsTheSession(t *testing.T) {
	f := newFleet(t, "")
	p := f.ptyShell(t, f.alice)
	p.in.Write([]byte("logoff 99\x03"))
	if !p.waitFor("^C", 5*time.Second) {
		t.Fatalf("no ^C: %q", p.output())
	}
	p.in.Write([]byte("quser\r"))
	if !p.waitFor("LOGON TIME", 5*time.Second) {
		t.Fatalf("the session did not go on after Ctrl-C: %q", p.output())
	}
	if strings.Contains(p.output(), "no session has ID 99") {
		t.Error("the dropped line ran")
	}
	// Ctrl-D on an empty line ends the session with status 0.
	p.in.Write([]byte{4})
	if !p.endedWithin(5 * time.Second) {
		t.Fatal("Ctrl-D did not end the session")
	}
}

// Requests in odd orders: window changes before and after exec, signals,
// a second pty-req, a shell after exec. None may hang or crash the session.
func TestRequestsInOddOrders(t *testing.T) {
	f := newFleet(t, "")
	c := f.client(t, f.alice)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	winch := ssh.Marshal(struct{ W, H, PW, PH uint32 }{100, 40, 0, 0})
	// window-change before any pty: refused, harmless.
	sess.SendRequest("window-change", false, winch)
	if err := sess.RequestPty("xterm", 40, 100, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := sess.SendRequest("pty-req", true, ssh.Marshal(struct {
		Term         string
		W, H, PW, PH uint32
		Modes        string
	}{"vt100", 80, 24, 0, 0, ""})); ok {
		t.Error("a second pty-req was accepted")
	}
	for i := 0; i < 50; i++ {
		sess.SendRequest("window-change", false, winch)
		sess.SendRequest("signal", false, ssh.Marshal(struct{ Sig string }{"INT"}))
	}
	var out bytes.Buffer
	sess.Stdout = &out
	done := make(chan error, 1)
	go func() { done <- sess.Run("query user") }()
	for i := 0; i < 50; i++ {
		sess.SendRequest("window-change", false, winch)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exec after odd requests: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exec hung after window changes")
	}
	if !strings.Contains(out.String(), "USERNAME") {
		t.Errorf("no output: %q", out.String())
	}
	if ok, _ := sess.SendRequest("shell", true, nil); ok {
		t.Error("a shell was started after exec on the same channel")
	}
}

// Many channels on one connection, opened and closed, never more than the
// cap at once; the server stays well.
func TestManyChannelsOnOneConnection(t *testing.T) {
	f := newFleet(t, "")
	c := f.client(t, f.alice)
	for i := 0; i < 200; i++ {
		out, err := runOn(t, c, "query user")
		if err != nil || !strings.Contains(out, "alice") {
			t.Fatalf("command %d on one connection: %v %q", i, err, out)
		}
	}
}
