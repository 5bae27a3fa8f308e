package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Regression tests for what the red team found after issue 10's fixes.

// A key removed by a reload must not keep working on a connection that
// authenticated before the reload but had opened no session yet: it used
// to open sessions afterwards, as the removed identity.
func TestAKeyRemovedByAReloadCannotOpenSessionsOnAnOldConnection(t *testing.T) {
	dir := t.TempDir()
	alice, evil, bob := newKey(t, dir, "alice"), newKey(t, dir, "evil"), newKey(t, dir, "bob")
	config := func(aliceKeys ...string) string {
		return fmt.Sprintf("name: WF12\nsessions: { sources: [shell] }\nroles: { operator: { logoff: [\"*\"] } }\nadmins:\n"+
			"  - { name: alice, role: operator, keys: [%s] }\n  - { name: bob, role: operator, keys: [%q] }\n",
			quoteAll(aliceKeys), bob.Public)
	}
	s := startServer(t, dir, config(alice.Public, evil.Public))
	c, err := s.dial(t, "admin", ssh.PublicKeys(evil.Signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	s.rewriteConfig(t, config(alice.Public))
	s.Signal(syscall.SIGHUP)
	if !s.waitLog("configuration reloaded", 5*time.Second) {
		t.Fatalf("no reload:\n%s", s.Log())
	}
	if out, err := runOn(t, c, "query session"); err == nil {
		t.Fatalf("the removed key opened a session after the reload: %q", out)
	}
	if r := s.Run(alice, "", "query", "user"); r.Status != 0 {
		t.Fatalf("alice's remaining key: status %d", r.Status)
	}
}

func quoteAll(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// silentPeer is an SSH server with a configured peer's host key that
// completes the handshake, accepts any key, and then never answers a
// channel open.
func silentPeer(t *testing.T, hostKey Key) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hostKey.Signer)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, nc)
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for range chans {
					// Neither accepted nor rejected.
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// A peer that takes the handshake and then never answers held /server:X
// and /server:* with no time limit. Both must end with 7 within the relay
// timeouts.
func TestAPeerThatNeverAnswersAChannelIsStatus7InTime(t *testing.T) {
	dir := t.TempDir()
	alice := newKey(t, dir, "alice")
	peerKey := newKey(t, dir, "peer_host_key")
	addr := silentPeer(t, peerKey)
	s := startServer(t, dir, fmt.Sprintf(`name: A
sessions: { sources: [shell] }
roles: { operator: { logoff: ["*"] } }
admins:
  - { name: alice, role: operator, keys: [%q] }
limits: { relay_connect_timeout: 1s, relay_command_timeout: 1s }
servers:
  B: { address: %q, host_key: %q }
`, alice.Public, addr, pubOnly(peerKey.Public)))
	for _, args := range [][]string{{"query", "session", "/server:B"}, {"query", "session", "/server:*"}} {
		start := time.Now()
		r := s.Run(alice, "", args...)
		if r.Status != 7 || !strings.Contains(r.Stderr, "server B") {
			t.Errorf("%v: want 7 naming server B, got %d %q", args, r.Status, r.Stderr)
		}
		if took := time.Since(start); took > 6*time.Second {
			t.Errorf("%v took %s", args, took)
		}
	}
}

// A script's idle timeout ended it with status 0 even after a command had
// failed, and it cut off a command that was still running (a logoff
// waiting out /delay), still with 0.
func TestAScriptsIdleTimeoutKeepsItsStatusAndNeverCutsACommand(t *testing.T) {
	f := newFleet(t, "limits: { idle_timeout: 2s }\n")
	script := func(line string) (int, time.Duration) {
		c := f.client(t, f.alice)
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		stdin, _ := sess.StdinPipe()
		var stderr strings.Builder
		sess.Stderr = &stderr
		defer func() { t.Logf("%s: stderr %q", line, stderr.String()) }()
		if err := sess.Shell(); err != nil {
			t.Fatal(err)
		}
		// The script's line, then silence with the input left open.
		fmt.Fprintf(stdin, "%s\n", line)
		start := time.Now()
		err = sess.Wait()
		status := 0
		if e, ok := err.(*ssh.ExitError); ok {
			status = e.ExitStatus()
		} else if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return status, time.Since(start)
	}
	if status, _ := script("logoff 999"); status != 1 {
		t.Errorf("a script whose logoff failed ended by idle timeout with status %d, want 1", status)
	}
	bob := f.Open(f.bob)
	// bob keeps typing (blank lines), so his own idle timeout does not
	// end him before the delayed logoff does.
	typing := make(chan struct{})
	defer close(typing)
	go func() {
		for range 40 {
			select {
			case <-typing:
				return
			case <-time.After(300 * time.Millisecond):
				bob.Send("")
			}
		}
	}()
	id := 0
	for _, s := range f.List(f.alice) {
		if s.User == "bob" {
			id = s.ID
		}
	}
	status, took := script(fmt.Sprintf("logoff %d /delay:4", id))
	if status != 0 || took < 4*time.Second {
		t.Errorf("logoff /delay:4 in a script with a 2s idle timeout: status %d after %s, want 0 after 4s", status, took)
	}
	if !bob.Exited(5 * time.Second) {
		t.Error("the delayed logoff was cut off: bob is still connected")
	}
}

// A script whose last line never ended (no newline, input left open) was
// ended by the idle timeout with status 0, the line silently dropped. It
// is not run (the client may not have finished it), and the status says
// the input was refused.
func TestAScriptsUnfinishedLastLineIsStatus2AtTheIdleTimeout(t *testing.T) {
	f := newFleet(t, "limits: { idle_timeout: 2s }\n")
	c := f.client(t, f.carol)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	stdin, _ := sess.StdinPipe()
	var stderr strings.Builder
	sess.Stderr = &stderr
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(stdin, "query session\nlogoff 9999")
	err = sess.Wait()
	e, ok := err.(*ssh.ExitError)
	if !ok || e.ExitStatus() != 2 || !strings.Contains(stderr.String(), "not finished") {
		t.Fatalf("want status 2 and a word on the unfinished line, got %v %q", err, stderr.String())
	}
}
