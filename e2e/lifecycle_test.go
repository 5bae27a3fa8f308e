package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rewriteConfig replaces the server's config file.
func (s *Server) rewriteConfig(t *testing.T, text string) {
	t.Helper()
	if !strings.Contains(text, "listen:") {
		text = "listen: 127.0.0.1:0\n" + text
	}
	if !strings.Contains(text, "audit:") {
		text += "\naudit:\n  file: audit.log\n"
	}
	if err := os.WriteFile(s.Config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitLog waits until the server's log contains s.
func (s *Server) waitLog(s2 string, timeout time.Duration) bool {
	return waitUntil(timeout, func() bool { return strings.Contains(s.Log(), s2) })
}

func TestSIGHUPReloadsAdminsRolesAndKeys(t *testing.T) {
	f := newFleet(t, "")
	dave := newKey(t, f.Dir, "dave")
	bob := f.Open(f.bob)
	if r := f.Run(dave, "", "query", "user"); r.Status != 255 {
		t.Fatalf("dave is not configured yet, but got status %d", r.Status)
	}

	// A broken file is refused and the old config stays in force.
	f.rewriteConfig(t, "roles: { operator: { logoff: [\"*\"] } }\nadmins:\n  - name: alice\n    role: nosuchrole\n    keys: [\""+f.alice.Public+"\"]\n")
	f.Signal(syscall.SIGHUP)
	if !f.waitLog("reload refused", 5*time.Second) {
		t.Fatalf("a broken config was not refused:\n%s", f.Log())
	}
	if !strings.Contains(f.Log(), `role \"nosuchrole\" does not exist`) || !strings.Contains(f.Log(), "line ") {
		t.Errorf("the refusal lacks its reason and line:\n%s", f.Log())
	}
	if r := f.Run(f.bob, "", "query", "user"); r.Status != 0 {
		t.Fatalf("after a refused reload bob cannot work: %d %s", r.Status, r.Stderr)
	}

	// Bob removed, dave added, carol made an operator.
	f.rewriteConfig(t, fmt.Sprintf(`name: WF12
roles:
  operator: { logoff: ["*"] }
  viewer:   { logoff: [] }
admins:
  - name: alice
    role: operator
    keys: [%q]
  - name: carol
    role: operator
    keys_file: carol.pub
  - name: dave
    role: viewer
    keys: [%q]
`, f.alice.Public, dave.Public))
	f.Signal(syscall.SIGHUP)
	if !f.waitLog("configuration reloaded", 5*time.Second) {
		t.Fatalf("no reload:\n%s", f.Log())
	}
	if !bob.Exited(5 * time.Second) {
		t.Fatal("bob was removed from the config but his session lives on")
	}
	if !strings.Contains(bob.Output(), "revoked") {
		t.Errorf("bob was not told why: %q", bob.Output())
	}
	if r := f.Run(f.bob, "", "query", "user"); r.Status != 255 {
		t.Errorf("bob can still log in after removal: %d", r.Status)
	}
	if r := f.Run(dave, "", "query", "user"); r.Status != 0 {
		t.Errorf("dave cannot log in after being added: %d %s", r.Status, r.Stderr)
	}
	// carol's new role applies to her next permission check.
	alice := f.Open(f.alice)
	for _, s := range f.List(f.carol) {
		if s.User == "alice" && !s.CanLogoff {
			t.Errorf("carol is an operator now but may not log off alice: %+v", s)
		}
	}
	alice.Close()
}

func TestSIGTERMStopsGracefully(t *testing.T) {
	f := newFleet(t, "")
	it := f.Open(f.alice)
	start := time.Now()
	f.Signal(syscall.SIGTERM)
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		t.Fatal("tsadmin did not stop within 5s of SIGTERM")
	}
	if code := f.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	if !it.Exited(3 * time.Second) {
		t.Fatal("the admin's client is still connected after the server stopped")
	}
	if !strings.Contains(it.Output(), "shutting down") {
		t.Errorf("the connected admin was not told: %q", it.Output())
	}
	t.Logf("stopped in %s", time.Since(start))
}

// With an audit log that cannot be written, logoff is refused (status 5)
// and nothing is logged off, while listing still works.
func TestLogoffFailsClosedWhenTheAuditCannotBeWritten(t *testing.T) {
	dir := t.TempDir()
	alice := newKey(t, dir, "alice")
	bobKey := newKey(t, dir, "bob")
	s := startServer(t, dir, fmt.Sprintf(`roles: { operator: { logoff: ["*"] } }
admins:
  - { name: alice, role: operator, keys: [%q] }
  - { name: bob, role: operator, keys: [%q] }
audit:
  file: /dev/full
`, alice.Public, bobKey.Public))
	bob := s.Open(bobKey)
	list := sessionsOf(s.List(alice), "bob")
	if len(list) != 1 {
		t.Fatalf("listing does not work with a broken audit log: %+v", list)
	}
	r := s.Run(alice, "", "logoff", fmt.Sprint(list[0].ID))
	if r.Status != 5 || !strings.Contains(r.Stderr, "audit log cannot be written") {
		t.Fatalf("want status 5 and the reason, got %d %q", r.Status, r.Stderr)
	}
	if bob.Exited(500 * time.Millisecond) {
		t.Fatal("bob was logged off although the audit failed")
	}
	if !s.waitLog("audit record lost", time.Second) {
		t.Errorf("the operator was not told that the audit log fails:\n%s", s.Log())
	}
}

func TestIdleTimeoutEndsAnInteractiveSession(t *testing.T) {
	f := newFleet(t, "limits: { idle_timeout: 1s }\n")
	it := f.Open(f.alice)
	if !it.Exited(6 * time.Second) {
		t.Fatal("an idle interactive session outlived idle_timeout")
	}
	if !strings.Contains(it.Output(), "idle timeout") {
		t.Errorf("not told: %q", it.Output())
	}
}

func TestHostKeyIsPersistentAndPrivate(t *testing.T) {
	f := newFleet(t, "")
	path := filepath.Join(f.Dir, "ssh_host_ed25519_key")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("host key mode %04o, want 0600", st.Mode().Perm())
	}
	first, _ := os.ReadFile(path)
	f.Stop()
	g := startServer(t, f.Dir, mustRead(t, f.Config))
	second, _ := os.ReadFile(path)
	if string(first) != string(second) {
		t.Error("the host key changed across restarts")
	}
	g.Stop()
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A client that stops answering (its process stopped with SIGSTOP: the
// TCP connection stays up, nothing reads) is closed after the keepalives
// go unanswered, and its session leaves the listing.
func TestUnansweredKeepalivesCloseTheConnection(t *testing.T) {
	f := newFleet(t, "limits: { keepalive_interval: 1s, keepalive_count_max: 2 }\n")
	it := f.Open(f.bob)
	if len(sessionsOf(f.List(f.alice), "bob")) != 1 {
		t.Fatal("bob's session is not listed")
	}
	it.cmd.Process.Signal(syscall.SIGSTOP)
	defer it.cmd.Process.Signal(syscall.SIGCONT)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(sessionsOf(f.List(f.alice), "bob")) == 0 {
			if !f.waitLog("keepalives unanswered", time.Second) {
				t.Errorf("the session went, but not for the keepalives:\n%s", f.Log())
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("a client that stopped answering is still listed after 10s with 1s keepalives")
}

// A client that answers the keepalives (OpenSSH's, whose answer is a
// failure reply) keeps its connection over many intervals: the one
// keepalive loop of the server counts only unanswered ones.
func TestAnsweredKeepalivesKeepTheConnection(t *testing.T) {
	f := newFleet(t, "limits: { keepalive_interval: 1s, keepalive_count_max: 2 }\n")
	f.Open(f.bob)
	time.Sleep(5 * time.Second) // five intervals, more than twice the count
	if len(sessionsOf(f.List(f.alice), "bob")) != 1 {
		t.Fatalf("bob's session, whose client answers the keepalives, was closed:\n%s", f.Log())
	}
	if strings.Contains(f.Log(), "keepalives unanswered") {
		t.Fatalf("a keepalive was counted as unanswered:\n%s", f.Log())
	}
}

// A script whose input stays open but silent is ended after the idle
// timeout too.
func TestIdleTimeoutEndsASilentScript(t *testing.T) {
	f := newFleet(t, "limits: { idle_timeout: 1s }\n")
	args := append(f.sshArgs(f.alice, "-T"), "admin@127.0.0.1")
	cmd := exec.Command("ssh", args...)
	stdin, _ := cmd.StdinPipe() // held open, never written
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(8 * time.Second):
		cmd.Process.Kill()
		t.Fatal("a silent script outlived the 1s idle timeout")
	}
}
