package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/internal/sshdtest"
)

// The time limits of sessions.policy, against real sshd logins. A host
// terminal's idle time is its last read (atime), which Linux updates at
// most every 8 seconds: the warning comes 8 s or more after the last
// input, so input after it always shows.
const (
	policyIdle = 16 * time.Second
	policyWarn = 8 * time.Second
)

func policyConfig(alice Key, idleRule, dryRule string) string {
	return fmt.Sprintf(`name: WF12
sessions:
  sources: [shell, host]
  logoff_grace: 2s
  policy_interval: 1s
  idle_after: 5s
  policy:
    - match: [%q]
      idle_logoff: %s
      warn_before: %s
    - match: [%q]
      idle_logoff: %s
      warn_before: %s
      dry_run: true
roles:
  operator: { logoff: ["*"] }
admins:
  - { name: alice, role: operator, keys: [%q] }
`, idleRule, policyIdle, policyWarn, dryRule, policyIdle, policyWarn, alice.Public)
}

// auditFor returns the audit records of event about the Unix user.
func auditFor(s *Server, event, user string) []map[string]any {
	var out []map[string]any
	for _, r := range s.Audit() {
		if r["msg"] == event && r["session_user"] == user {
			out = append(out, r)
		}
	}
	return out
}

const warningText = "by policy it will be logged off"

func TestPolicyWarnsThenLogsOffIdleSessions(t *testing.T) {
	sshdtest.Require(t, "..")
	dir := t.TempDir()
	alice := newKey(t, dir, "alice")
	sshd := sshdtest.Start(t)
	idle := sshd.AddUser(t, "tspid")  // matched, left idle: warned, then logged off
	typer := sshd.AddUser(t, "tspid") // matched, types after the warning: stays
	dry := sshd.AddUser(t, "tspdr")   // matched by a dry_run rule: only audited
	other := sshd.AddUser(t, "tspot") // matched by nothing: untouched
	srv := startServer(t, dir, policyConfig(alice, "user:tspid*", "user:tspdr*"))

	lIdle := sshd.LoginReady(t, idle, true, "")
	lTyper := sshd.LoginReady(t, typer, true, "")
	lDry := sshd.LoginReady(t, dry, true, "")
	lOther := sshd.LoginReady(t, other, true, "")
	start := time.Now()

	// Both matched sessions are warned on their own terminals.
	for _, l := range []*sshdtest.Login{lIdle, lTyper} {
		if !l.WaitFor(warningText, policyIdle+10*time.Second) {
			t.Fatalf("no warning on the terminal after %s: %q\n%s", time.Since(start), l.Output(), srv.Log())
		}
	}
	t.Logf("warned after %s", time.Since(start))
	// The listing marks them idle past idle_after, in JSON only: STATE
	// stays Active, as on Windows. The admin's own session is not idle.
	for _, s := range srv.List(alice) {
		if s.User == idle.Name && (!s.Idle || s.State != "Active") || s.Current && s.Idle {
			t.Errorf("idle: true past sessions.idle_after, STATE unchanged: %+v", s)
		}
	}
	// The typer answers the warning: the shell reads from the terminal.
	typed := time.Now()
	if !lTyper.Run("true", 5*time.Second) {
		t.Fatalf("the typer's shell does not answer: %q", lTyper.Output())
	}
	if lIdle.Exited(0) {
		t.Fatal("the idle session ended together with its warning, not warn_before later")
	}

	// The idle one is logged off, warn_before after its warning.
	if !lIdle.Exited(policyWarn + 10*time.Second) {
		t.Fatalf("the idle session was not logged off: %q\n%s", lIdle.Output(), srv.Log())
	}
	t.Logf("idle session ended after %s", time.Since(start))
	if left := sshdtest.PIDsOf(idle.UID); len(left) > 0 {
		t.Errorf("processes of the idle user remain: %v", left)
	}
	// The outcome is written once every process of the session is gone.
	waitUntil(5*time.Second, func() bool { return len(auditFor(srv, "logoff.outcome", idle.Name)) > 0 })
	intent := auditFor(srv, "logoff.intent", idle.Name)
	outcome := auditFor(srv, "logoff.outcome", idle.Name)
	warned := auditFor(srv, "policy.warn", idle.Name)
	if len(intent) != 1 || len(outcome) != 1 || len(warned) != 1 {
		t.Fatalf("audit: %d intents, %d outcomes, %d warnings for the idle user, want one each:\n%v", len(intent), len(outcome), len(warned), srv.Audit())
	}
	if intent[0]["admin"] != "tsadmin:policy" || outcome[0]["result"] != "ok" || warned[0]["result"] != "written" ||
		!strings.HasPrefix(intent[0]["rule"].(string), "sessions.policy[0] (line 9) user:tspid*: idle ") ||
		!strings.Contains(intent[0]["rule"].(string), "idle_logoff 16s") {
		t.Errorf("the policy logoff is not audited as the server's own, with its rule and idle time:\n%v\n%v\n%v", intent, outcome, warned)
	}

	// Past the time it would have been logged off had it not typed, the
	// typer is still there and was never logged off.
	time.Sleep(time.Until(typed.Add(policyWarn + 2*time.Second)))
	if lTyper.Exited(0) || len(auditFor(srv, "logoff.intent", typer.Name)) != 0 {
		t.Fatalf("a session used after its warning was logged off: %q\n%s", lTyper.Output(), srv.Log())
	}
	lTyper.Close()

	// The dry run wrote what it would have done, and did nothing.
	if len(auditFor(srv, "policy.dry_run", dry.Name)) != 1 {
		t.Errorf("the dry run is not audited once: %v", srv.Audit())
	}
	if lDry.Exited(0) || strings.Contains(lDry.Output(), warningText) || len(auditFor(srv, "logoff.intent", dry.Name)) != 0 {
		t.Errorf("the dry run touched its session: %q", lDry.Output())
	}
	if !strings.Contains(srv.Log(), "policy: would log off") {
		t.Errorf("the dry run is not in the server log:\n%s", srv.Log())
	}
	// The unmatched session: no warning, no record, still there.
	if lOther.Exited(0) || strings.Contains(lOther.Output(), warningText) {
		t.Errorf("an unmatched session was touched: %q", lOther.Output())
	}
	for _, r := range srv.Audit() {
		if r["session_user"] == other.Name {
			t.Errorf("an unmatched session is in the audit log: %v", r)
		}
	}

	// Reload: the dry run becomes a real rule, and the long-idle session
	// is warned and then logged off.
	if err := os.WriteFile(srv.Config, []byte("listen: 127.0.0.1:0\naudit:\n  file: audit.log\n"+
		policyConfig(alice, "user:tspdr*", "user:nobody*")), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.Signal(syscall.SIGHUP)
	if !lDry.WaitFor(warningText, 10*time.Second) {
		t.Fatalf("no warning after the reload: %q\n%s", lDry.Output(), srv.Log())
	}
	if !lDry.Exited(policyWarn + 10*time.Second) {
		t.Fatalf("the reloaded rule did not log off: %q\n%s", lDry.Output(), srv.Log())
	}
	if lOther.Exited(0) {
		t.Error("the unmatched session ended")
	}
	raw, _ := os.ReadFile(filepath.Join(srv.Dir, "audit.log"))
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, "tsadmin:policy") {
			t.Logf("audit: %s", line) // the README's sample
		}
	}
}
