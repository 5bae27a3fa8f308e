package e2e

import (
	"encoding/pem"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func pemEncode(b *pem.Block) []byte { return pem.EncodeToMemory(b) }

// fleet is one server with three admins: alice (operator), bob (operator)
// and carol (viewer), and a stranger key that belongs to no one.
type fleet struct {
	*Server
	alice, bob, carol, stranger Key
}

func newFleet(t *testing.T, extra string) *fleet {
	t.Helper()
	dir := t.TempDir()
	f := &fleet{
		alice: newKey(t, dir, "alice"), bob: newKey(t, dir, "bob"),
		carol: newKey(t, dir, "carol"), stranger: newKey(t, dir, "stranger"),
	}
	// Only tsadmin's own sessions: host logins made by tests running in
	// parallel (sessions/host) must not appear in these listings.
	cfg := fmt.Sprintf(`name: WF12
sessions: { sources: [shell] }
roles:
  operator: { logoff: ["*"] }
  viewer:   { logoff: [] }
admins:
  - name: alice
    role: operator
    keys:
      - %s
  - name: bob
    role: operator
    keys: [%q]
  - name: carol
    role: viewer
    keys_file: carol.pub
%s`, f.alice.Public, f.bob.Public, extra)
	f.Server = startServer(t, dir, cfg)
	return f
}

func TestQuerySessionMarksTheCurrentSession(t *testing.T) {
	f := newFleet(t, "")
	bob := f.Open(f.bob)
	r := f.Run(f.alice, "", "query", "session")
	if r.Status != 0 {
		t.Fatalf("status %d: %s", r.Status, r.Stderr)
	}
	lines := strings.Split(strings.TrimRight(r.Stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and two rows, got:\n%s", r.Stdout)
	}
	for _, h := range []string{"SESSIONNAME", "USERNAME", "ID", "STATE"} {
		if !strings.Contains(lines[0], h) {
			t.Errorf("header lacks %s: %q", h, lines[0])
		}
	}
	var mine, other string
	for _, l := range lines[1:] {
		switch {
		case strings.Contains(l, "alice"):
			mine = l
		case strings.Contains(l, "bob"):
			other = l
		}
	}
	if !strings.HasPrefix(mine, ">ssh#") || !strings.HasPrefix(other, " ssh#") {
		t.Errorf("the > must mark alice's own row only:\n%s", r.Stdout)
	}
	if !strings.Contains(other, "Active") || !strings.Contains(other, "tsadmin") || !strings.Contains(other, "127.0.0.1") {
		t.Errorf("bob's row lacks state, type or device: %q", other)
	}
	bob.Close()
}

func TestLogoffAnotherAdminsInteractiveSessionByID(t *testing.T) {
	f := newFleet(t, "")
	bob := f.Open(f.bob)
	targets := sessionsOf(f.List(f.alice), "bob")
	if len(targets) != 1 {
		t.Fatalf("want one session of bob, got %+v", targets)
	}
	start := time.Now()
	r := f.Run(f.alice, "", "logoff", fmt.Sprint(targets[0].ID))
	if r.Status != 0 {
		t.Fatalf("logoff: status %d: %s", r.Status, r.Stderr)
	}
	if !bob.Exited(5 * time.Second) {
		t.Fatal("bob's ssh client is still connected after the logoff")
	}
	t.Logf("logoff to client exit: %s", time.Since(start))
	if !strings.Contains(bob.Output(), "logged off by alice") {
		t.Errorf("bob was not told who logged him off: %q", bob.Output())
	}
	if left := sessionsOf(f.List(f.alice), "bob"); len(left) != 0 {
		t.Errorf("bob's session is still listed: %+v", left)
	}
	// The audit has the intent and the outcome, with the rule.
	var intent, outcome bool
	for _, rec := range f.Audit() {
		if rec["msg"] == "logoff.intent" && rec["session_user"] == "bob" && rec["admin"] == "alice" && rec["rule"] == "role operator: *" {
			intent = true
		}
		if rec["msg"] == "logoff.outcome" && rec["session_user"] == "bob" && rec["result"] == "ok" {
			outcome = true
		}
	}
	if !intent || !outcome {
		t.Errorf("audit lacks the logoff intent (%v) or outcome (%v)", intent, outcome)
	}
}

func TestLogoffByNameAndVerbose(t *testing.T) {
	f := newFleet(t, "")
	bob := f.Open(f.bob)
	targets := sessionsOf(f.List(f.alice), "bob")
	if len(targets) != 1 {
		t.Fatalf("want one session of bob, got %+v", targets)
	}
	r := f.Run(f.alice, "", "logoff", strings.ToUpper(targets[0].Name), "/V")
	if r.Status != 0 {
		t.Fatalf("logoff by name: status %d: %s", r.Status, r.Stderr)
	}
	for _, want := range []string{"Logging off session", "of user bob", "on server WF12", fmt.Sprintf("Session %d ended", targets[0].ID)} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("/v output lacks %q:\n%s", want, r.Stdout)
		}
	}
	if !bob.Exited(5 * time.Second) {
		t.Fatal("bob's client is still connected")
	}
}

func TestViewerIsRefusedAndTheTargetStays(t *testing.T) {
	f := newFleet(t, "")
	bob := f.Open(f.bob)
	targets := sessionsOf(f.List(f.carol), "bob")
	if len(targets) != 1 {
		t.Fatalf("want one session of bob, got %+v", targets)
	}
	if targets[0].CanLogoff {
		t.Error("the listing says carol may log off bob's session")
	}
	r := f.Run(f.carol, "", "logoff", fmt.Sprint(targets[0].ID))
	if r.Status != 5 {
		t.Fatalf("viewer logoff: want status 5, got %d: %s", r.Status, r.Stderr)
	}
	if !strings.Contains(r.Stderr, "access denied") || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
		t.Errorf("want one line saying access denied, got %q", r.Stderr)
	}
	if bob.Exited(500 * time.Millisecond) {
		t.Fatal("bob was disconnected by a refused logoff")
	}
	bob.Send("query session")
	if !bob.WaitFor("SESSIONNAME", 5*time.Second) {
		t.Errorf("bob's session does not work after the refused logoff: %q", bob.Output())
	}
}

func TestAnIdentityMayLogOffItsOwnOtherSession(t *testing.T) {
	f := newFleet(t, "")
	other := f.Open(f.carol)
	mine := sessionsOf(f.List(f.carol), "carol")
	if len(mine) != 1 {
		t.Fatalf("want carol's other session, got %+v", mine)
	}
	r := f.Run(f.carol, "", "logoff", fmt.Sprint(mine[0].ID))
	if r.Status != 0 {
		t.Fatalf("own logoff: status %d: %s", r.Status, r.Stderr)
	}
	if !other.Exited(5 * time.Second) {
		t.Fatal("carol's other session is still connected")
	}
}

func TestBareLogoffEndsTheCallersSession(t *testing.T) {
	f := newFleet(t, "")
	it := f.Open(f.carol)
	it.Send("logoff")
	if !it.Exited(5 * time.Second) {
		t.Fatalf("bare logoff did not end the session: %q", it.Output())
	}
	if it.ExitCode() != 0 {
		t.Errorf("bare logoff: client exit %d, want 0", it.ExitCode())
	}
	// In exec mode too: the reply, status 0, and the connection closes.
	r := f.Run(f.carol, "", "logoff /v")
	if r.Status != 0 || !strings.Contains(r.Stdout, "Ending the current session") {
		t.Errorf("exec bare logoff: status %d, stdout %q, stderr %q", r.Status, r.Stdout, r.Stderr)
	}
	if left := sessionsOf(f.List(f.alice), "carol"); len(left) != 0 {
		t.Errorf("carol's sessions are still listed: %+v", left)
	}
}

func TestUnknownKeyIsRefusedAtAuthentication(t *testing.T) {
	f := newFleet(t, "")
	r := f.Run(f.stranger, "", "query", "session")
	if r.Status != 255 || !strings.Contains(r.Stderr, "Permission denied") {
		t.Fatalf("want ssh to fail authentication (255, Permission denied), got %d %q", r.Status, r.Stderr)
	}
	// One record for the connection, written when the server sees it end.
	fp := ssh.FingerprintSHA256(f.stranger.Signer.PublicKey())
	refused := waitUntil(5*time.Second, func() bool {
		for _, rec := range f.Audit() {
			if fps, _ := rec["fingerprints"].([]any); rec["msg"] == "auth.refused" && len(fps) == 1 && fps[0] == fp {
				return true
			}
		}
		return false
	})
	if !refused {
		t.Error("the refused authentication is not in the audit log with its fingerprint")
	}
}

func TestExitStatuses(t *testing.T) {
	f := newFleet(t, "")
	cases := []struct {
		name   string
		args   []string
		status int
		stdout string
		stderr string
	}{
		{"unknown verb", []string{"shutdown", "-h"}, 2, "", "unknown command"},
		{"unknown option", []string{"logoff", "3", "/force"}, 2, "", "unknown option"},
		{"missing session", []string{"logoff", "999"}, 1, "", "no session has ID 999"},
		{"missing name", []string{"logoff", "TERM04"}, 1, "", `no session is named "TERM04"`},
		{"comment swallowing the ID", []string{"logoff #12"}, 2, "", "comment"},
		{"unterminated quote", []string{`logoff "ssh#1`}, 2, "", "unterminated quote"},
		{"shell metacharacters", []string{"query session; id"}, 2, "", "unknown object"},
		{"command substitution", []string{"logoff $(id)"}, 1, "", `no session is named "$(id)"`},
		{"backticks", []string{"logoff `id`"}, 1, "", "no session is named"},
		{"and-and", []string{"query user && id"}, 2, "", "one session at a time"},
		{"pipe", []string{"query session | id"}, 2, "", "one session at a time"},
		{"logoff help", []string{"logoff", "/?"}, 0, "logoff [sessionID]", ""},
		{"query help dash", []string{"query", "session", "-?"}, 0, "QUERY SESSION", ""},
		{"help", []string{"help"}, 0, "query session", ""},
		{"exit in exec", []string{"exit"}, 2, "", "interactive"},
		{"unknown server", []string{"query", "session", "/server:WF99"}, 7, "", "no peers are configured"},
		{"own server name", []string{"qwinsta", "/server:wf12"}, 0, "SESSIONNAME", ""},
		{"huge number", []string{"logoff", "99999999999999999999"}, 2, "", "out of range"},
		{"negative number", []string{"logoff", "-5"}, 2, "", "unknown option"},
		// logoff "$NAME" with NAME empty must not log off the caller.
		{"empty name", []string{`logoff ""`}, 2, "", "empty argument"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.Run(f.alice, "", c.args...)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d (stdout %q, stderr %q)", r.Status, c.status, r.Stdout, r.Stderr)
			}
			if !strings.Contains(r.Stdout, c.stdout) || !strings.Contains(r.Stderr, c.stderr) {
				t.Errorf("stdout %q (want %q), stderr %q (want %q)", r.Stdout, c.stdout, r.Stderr, c.stderr)
			}
			if c.status != 0 && strings.Count(strings.TrimRight(r.Stderr, "\n"), "\n") != 0 {
				t.Errorf("an error must be one line: %q", r.Stderr)
			}
		})
	}
}

// A refused line can be as long as an SSH packet: the audit record keeps
// its first 256 bytes, escaped, and its length.
func TestARefusedLongLineIsCutInTheAudit(t *testing.T) {
	f := newFleet(t, "")
	long := "logoff " + strings.Repeat("\x1b", 100000) // 100 kB of escape bytes
	if r := f.Run(f.alice, "", long); r.Status != 2 {
		t.Fatalf("status %d, want 2", r.Status)
	}
	for _, rec := range f.Audit() {
		if rec["msg"] != "command" {
			continue
		}
		words := fmt.Sprint(rec["words"])
		if len(words) > 400 || !strings.Contains(words, "(100007 bytes)") {
			t.Fatalf("the refused line is not cut with its length: %d bytes: %.300s", len(words), words)
		}
		return
	}
	t.Fatalf("the refused line was not audited: %v", f.Audit())
}

func TestPipedScriptRunsEveryLine(t *testing.T) {
	f := newFleet(t, "")
	script := "# a comment line\nquery user\nlogoff 999\nbogus\nquery session /fo:json\n  \nhelp logoff"
	r := f.Run(f.alice, script)
	if r.Status != 1 {
		t.Errorf("status %d, want 1 (the first failure: logoff 999)", r.Status)
	}
	for _, want := range []string{"USERNAME", `"user": "alice"`, "LOGOFF terminates a session"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.Stdout)
		}
	}
	if !strings.Contains(r.Stderr, "no session has ID 999") || !strings.Contains(r.Stderr, "unknown command") {
		t.Errorf("stderr: %q", r.Stderr)
	}
	// exit ends a script; nothing after it runs.
	r = f.Run(f.alice, "query user\nexit\nlogoff 999\n")
	if r.Status != 0 {
		t.Errorf("a script ended by exit: status %d, stderr %q", r.Status, r.Stderr)
	}
}

func TestInteractiveShellWithAPTY(t *testing.T) {
	f := newFleet(t, "")
	it := f.Open(f.alice)
	if !strings.Contains(it.Output(), "alice@WF12> ") {
		t.Errorf("the prompt does not name the identity and server: %q", it.Output())
	}
	if !strings.Contains(it.Output(), "you are alice (operator)") {
		t.Errorf("no banner: %q", it.Output())
	}
	it.Send("quser")
	if !it.WaitFor("LOGON TIME", 5*time.Second) {
		t.Fatalf("quser printed nothing: %q", it.Output())
	}
	it.Send("logoff 999")
	if !it.WaitFor("no session has ID 999", 5*time.Second) {
		t.Fatalf("no error line: %q", it.Output())
	}
	// exit is status 0 even when the last command failed.
	it.Send("bogus")
	if !it.WaitFor("unknown command", 5*time.Second) {
		t.Fatalf("no error line: %q", it.Output())
	}
	it.Send("exit")
	if !it.Exited(5*time.Second) || it.ExitCode() != 0 {
		t.Fatalf("exit did not end the session with status 0: %q", it.Output())
	}
	// Ctrl-D after a failed command: status 0 too.
	it = f.Open(f.alice)
	it.Send("bogus")
	if !it.WaitFor("unknown command", 5*time.Second) {
		t.Fatalf("no error line: %q", it.Output())
	}
	io.WriteString(it.stdin, "\x04")
	if !it.Exited(5*time.Second) || it.ExitCode() != 0 {
		t.Fatalf("Ctrl-D after a failed command: exit %d, %q", it.ExitCode(), it.Output())
	}
}

func TestForwardingAndSubsystemsAreRefused(t *testing.T) {
	f := newFleet(t, "")
	// -W is a direct-tcpip channel.
	r := f.Run(f.alice, "", "-W", f.Addr)
	if r.Status == 0 {
		t.Errorf("ssh -W succeeded: %q", r.Stdout)
	}
	// -R is a tcpip-forward global request.
	r = f.Run(f.alice, "", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:22", "query", "user")
	if r.Status != 255 || !strings.Contains(r.Stderr, "forwarding failed") {
		t.Errorf("ssh -R: status %d, stderr %q", r.Status, r.Stderr)
	}
	// -L is refused when a connection is forwarded through it (direct-tcpip).
	r = f.Run(f.alice, "", "-s", "sftp")
	if r.Status == 0 {
		t.Errorf("the sftp subsystem was accepted: %q", r.Stdout)
	}
	// The real sftp client.
	args := append(f.sshArgs(f.alice), "-b", "-", "admin@127.0.0.1")
	args[0] = "-P" // sftp takes -P for the port
	out, err := exec.Command("sftp", args...).CombinedOutput()
	if err == nil {
		t.Errorf("sftp succeeded: %s", out)
	}
	if !strings.Contains(string(out), "Connection closed") && !strings.Contains(string(out), "subsystem request failed") {
		t.Logf("sftp said: %s", out)
	}
}
