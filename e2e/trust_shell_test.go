package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Issue 10, attack 2: any admin with a terminal typed `exİt` and pressed
// Tab; completion sliced a candidate by the byte length of a case-folded
// prefix, the panic unwound through x/term's ReadLine with its lock
// released, and the whole process died ("sync: unlock of unlocked
// mutex"). Each of these words must leave the server, and the session,
// running.
func TestTabOnRunesWhoseCaseFormsChangeLengthKeepsTheServerUp(t *testing.T) {
	f := newFleet(t, "")
	it := f.Open(f.carol) // a viewer is enough
	for _, word := range []string{"exİt", "İ", "qİ", "logoff K", "ſ", "query ſ", "QUERY SESSİON /S", "logoff /ſERVER:"} {
		// Tab, a second Tab (lists the choices), then drop the line.
		fmt.Fprintf(it.stdin, "%s\t\t\x03", word)
	}
	it.Send("quser")
	if !it.WaitFor("USERNAME", 10*time.Second) {
		t.Fatalf("the session stopped answering after Tab on case-folded Unicode: %q\nserver log:\n%s", it.Output(), f.Log())
	}
	if r := f.Run(f.alice, "", "query", "session"); r.Status != 0 {
		t.Fatalf("the server is gone: status %d %s\nserver log:\n%s", r.Status, r.Stderr, f.Log())
	}
	if strings.Contains(f.Log(), "panic") {
		t.Errorf("completion panicked (recovered, but it must not panic at all):\n%s", f.Log())
	}
}

// stalledShell opens an interactive session with key whose client never
// reads what the server sends, and fills the session's window with output
// so that the server's next write to it blocks. It returns the session's
// ID and the connection.
func stalledShell(t *testing.T, s *Server, key Key) (int, *ssh.Client) {
	t.Helper()
	id, c, _ := stalledShellSession(t, s, key)
	return id, c
}

// stalledShellSession is stalledShell that also returns the session, for
// the requests a test sends on it.
func stalledShellSession(t *testing.T, s *Server, key Key) (int, *ssh.Client, *ssh.Session) {
	t.Helper()
	c := s.client(t, key)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	stdin, _ := sess.StdinPipe()
	// Pipes that are never read: x/crypto widens a channel's window only
	// as its reader takes data (with nil writers it would copy to
	// io.Discard, and read).
	sess.StdoutPipe()
	sess.StderrPipe()
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	// The session's ID: the newest ssh# row of key's identity.
	var id int
	waitUntil(5*time.Second, func() bool {
		for _, row := range s.List(key) {
			if row.Type == "tsadmin" && row.ID > id && !row.Current {
				id = row.ID
			}
		}
		return id != 0
	})
	if id == 0 {
		t.Fatal("the stalled session is not listed")
	}
	// About 3 MiB of help, more than any client window (x/crypto's and
	// OpenSSH's are 2 MiB): the server ends up blocked writing to it.
	go func() {
		for i := 0; i < 2000; i++ {
			if _, err := stdin.Write([]byte("help logoff\r")); err != nil {
				return
			}
		}
	}()
	time.Sleep(2 * time.Second)
	return id, c, sess
}

// closedWithin reports whether the client's connection ends within d.
func closedWithin(c *ssh.Client, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		c.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Issue 10, attack 3: a client that stops reading held every control path
// that wrote a notice to it. A logoff of it, a reload that revokes its key
// and a shutdown must each complete, and close its connection, promptly.
func TestAClientThatStopsReadingCannotHoldLogoff(t *testing.T) {
	f := newFleet(t, "")
	id, c := stalledShell(t, f.Server, f.bob)
	start := time.Now()
	r := f.Run(f.alice, "", "logoff", strconv.Itoa(id))
	if r.Status != 0 {
		t.Fatalf("logoff of the stalled session: status %d %s", r.Status, r.Stderr)
	}
	took := time.Since(start)
	if took > 5*time.Second {
		t.Errorf("logoff of a stalled session took %s", took)
	}
	if !closedWithin(c, 5*time.Second) {
		t.Fatal("the stalled session's connection is still open after its logoff")
	}
	t.Logf("MEASURE logoff of a client that stopped reading: %s (ssh client run included); connection closed %s after the logoff began", took, time.Since(start))
}

func TestAClientThatStopsReadingCannotHoldAReload(t *testing.T) {
	f := newFleet(t, "")
	_, c := stalledShell(t, f.Server, f.carol)
	// carol's key file is emptied: her access is revoked.
	if err := os.WriteFile(f.Dir+"/carol.pub", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f.Signal(syscall.SIGHUP)
	if !f.waitLog("configuration reloaded", 5*time.Second) {
		t.Fatalf("the reload never completed while a client was stalled:\n%s", f.Log())
	}
	if !closedWithin(c, 5*time.Second) {
		t.Fatal("the revoked, stalled connection is still open")
	}
	if r := f.Run(f.carol, "", "query", "user"); r.Status != 255 {
		t.Fatalf("carol's revoked key still works: status %d", r.Status)
	}
}

// Red team (transport round): a client that stopped reading sent a few
// dozen window-changes. The first one's redraw waited for window space
// on the goroutine that serves the channel's requests; x/crypto's mux
// then blocked handing it the next request, so it never read the
// window adjust (nor the client's close, nor a keepalive's answer): the
// connection, its goroutines and its session stayed for good, listed,
// even after the client had gone and the keepalives had closed the
// socket.
func TestWindowChangesFromAClientThatStopsReadingCannotWedgeItsConnection(t *testing.T) {
	f := newFleet(t, "")
	id, c, sess := stalledShellSession(t, f.Server, f.bob)
	// More than x/crypto queues for a channel's requests (16).
	for i := range 40 {
		if err := sess.WindowChange(24+i%10, 80+i%10); err != nil {
			t.Fatalf("window-change %d: %v", i, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	c.Close()
	listed := func() bool {
		for _, row := range f.List(f.alice) {
			if row.ID == id {
				return true
			}
		}
		return false
	}
	if waitUntil(5*time.Second, func() bool { return !listed() }) == false {
		t.Fatalf("session %d of a client that has gone is still listed: its connection is wedged\nserver log:\n%s", id, f.Log())
	}
}

func TestAClientThatStopsReadingCannotHoldAShutdown(t *testing.T) {
	f := newFleet(t, "")
	stalledShell(t, f.Server, f.bob)
	f.Signal(syscall.SIGTERM)
	select {
	case <-f.done:
	case <-time.After(8 * time.Second):
		t.Fatalf("SIGTERM did not stop the server while a client was stalled:\n%s", f.Log())
	}
}
