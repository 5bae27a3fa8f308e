package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/internal/sshdtest"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// helpdeskFleet is hostFleet with one more admin: tina, whose role may end
// only sessions with a terminal (name:pts/*), so that one user's sessions
// are partly hers to end and partly not.
type helpdeskFleet struct {
	*hostFleet
	tina Key
}

func newHelpdeskFleet(t *testing.T, grace string) *helpdeskFleet {
	t.Helper()
	sshdtest.Require(t, "..")
	dir := t.TempDir()
	f := &helpdeskFleet{hostFleet: &hostFleet{alice: newKey(t, dir, "alice"), helen: newKey(t, dir, "helen"),
		carol: newKey(t, dir, "carol")}, tina: newKey(t, dir, "tina")}
	f.sshd = sshdtest.Start(t)
	f.Server = startServer(t, dir, fmt.Sprintf(`name: WF12
sessions: { sources: [shell, host], logoff_grace: %s }
roles:
  operator: { logoff: ["*"] }
  helpdesk: { logoff: ["user:tsstu*"] }
  ttydesk:  { logoff: ["name:pts/*"] }
  viewer:   { logoff: [] }
admins:
  - { name: alice, role: operator, keys: [%q] }
  - { name: helen, role: helpdesk, keys: [%q] }
  - { name: carol, role: viewer, keys: [%q] }
  - { name: tina, role: ttydesk, keys: [%q] }
`, grace, f.alice.Public, f.helen.Public, f.carol.Public, f.tina.Public))
	return f
}

// hostSessions waits until tsadmin lists n host sessions of user.
func (f *hostFleet) hostSessions(t *testing.T, user string, n int) []session {
	t.Helper()
	var got []session
	ok := waitUntil(10*time.Second, func() bool {
		got = nil
		for _, s := range f.List(f.alice) {
			if s.User == user && s.Source == "host" {
				got = append(got, s)
			}
		}
		return len(got) == n
	})
	if !ok {
		t.Fatalf("want %d host sessions of %s, listed: %+v", n, user, got)
	}
	return got
}

// auditCount counts the audit records of one kind about user's sessions.
func auditCount(recs []map[string]any, msg, admin, user string) int {
	n := 0
	for _, m := range recs {
		if m["msg"] == msg && m["admin"] == admin && m["session_user"] == user {
			n++
		}
	}
	return n
}

// logoff /user:NAME ends every session of the user that the admin may end,
// each audited; what it may not end is named and left alone; a login that
// starts after the command's listing is not touched.
func TestLogoffUserEndsEverySessionItMay(t *testing.T) {
	f := newHelpdeskFleet(t, "2s")
	stu := f.sshd.AddUser(t, "tsstu")
	other := f.sshd.AddUser(t, "tsstf")
	tty1 := loggedIn(t, f.sshd, stu, true)
	tty2 := loggedIn(t, f.sshd, stu, true)
	notty := loggedIn(t, f.sshd, stu, false)
	bystander := loggedIn(t, f.sshd, other, true)
	f.hostSessions(t, stu.Name, 3)

	// The helpdesk, interactively, so that a login can be made while the
	// command waits out /delay: after its listing, before its logoffs.
	it := f.Open(f.helen)
	it.Send(fmt.Sprintf(`logoff /user:%s /v /msg:"The lab closes now" /delay:3`, stu.Name))
	if !it.WaitFor("waiting 3 seconds", 10*time.Second) {
		t.Fatalf("no /delay: %q", it.Output())
	}
	late := loggedIn(t, f.sshd, stu, true)
	if !waitUntil(15*time.Second, func() bool { return strings.Count(it.Output(), "\nSession ") == 3 }) {
		t.Fatalf("three sessions did not end: %q", it.Output())
	}
	for i, l := range []*sshdtest.Login{tty1, tty2, notty} {
		if !l.Exited(5 * time.Second) {
			t.Fatalf("session %d of the user is still connected", i)
		}
	}
	if !strings.Contains(tty1.Output(), "Message from helen (tsadmin on WF12): The lab closes now") {
		t.Errorf("the warning did not reach a terminal of the user: %q", tty1.Output())
	}
	if late.Exited(300 * time.Millisecond) {
		t.Fatal("a login that started after the command's listing was ended")
	}
	if bystander.Exited(0) {
		t.Fatal("another user's session was ended")
	}
	recs := f.Audit()
	if in, out := auditCount(recs, "logoff.intent", "helen", stu.Name), auditCount(recs, "logoff.outcome", "helen", stu.Name); in != 3 || out != 3 {
		t.Errorf("audit: %d intents and %d outcomes, want 3 and 3", in, out)
	}

	// Partly allowed: tina may end the terminal session, not the one
	// without a terminal. Status 5; the refused one is named and stays.
	notty2 := loggedIn(t, f.sshd, stu, false)
	f.hostSessions(t, stu.Name, 2)
	r := f.Run(f.tina, "", "logoff", "/user:"+stu.Name)
	if r.Status != shell.StatusDenied || !strings.Contains(r.Stderr, "sess:") || !strings.Contains(r.Stderr, "left alone") {
		t.Fatalf("partly allowed: want 5 naming the refused session, got %d %q", r.Status, r.Stderr)
	}
	if !late.Exited(5 * time.Second) {
		t.Fatal("the terminal session tina may end is still connected")
	}
	if notty2.Exited(300 * time.Millisecond) {
		t.Fatal("the session tina may not end was ended")
	}
	if n := auditCount(f.Audit(), "logoff.denied", "tina", stu.Name); n != 1 {
		t.Errorf("audit: %d refusals, want 1", n)
	}

	// A viewer ends nothing: 5, and nothing ends.
	if r := f.Run(f.carol, "", "logoff", "/user:"+stu.Name); r.Status != shell.StatusDenied {
		t.Errorf("viewer: %d %q", r.Status, r.Stderr)
	}
	// The operator ends the rest; then the user has no session: 1.
	if r := f.Run(f.alice, "", "logoff", "/user:"+stu.Name); r.Status != 0 {
		t.Fatalf("operator: %d %q", r.Status, r.Stderr)
	}
	if !notty2.Exited(5 * time.Second) {
		t.Fatal("the last session is still connected")
	}
	if left := sshdtest.PIDsOf(stu.UID); len(left) > 0 {
		t.Fatalf("processes of the user remain: %v", left)
	}
	if r := f.Run(f.alice, "", "logoff", "/user:"+stu.Name); r.Status != shell.StatusNotFound || !strings.Contains(r.Stderr, "has no session") {
		t.Errorf("a user with no session: want 1, got %d %q", r.Status, r.Stderr)
	}
}

// logoff ID /now: SIGKILL at once. The user's shell traps SIGHUP by
// writing a file and the grace is 10s: /now must return within a
// fraction of it, the trap must never run, and the audit says now=true.
func TestLogoffNowKillsAtOnce(t *testing.T) {
	f := newHostFleet(t, "10s")
	u := f.sshd.AddUser(t, "tsstu")
	marker := filepath.Join(f.sshd.Dir, "home", u.Name, "got-hup")
	l := f.sshd.LoginReady(t, u, true, fmt.Sprintf(`trap 'echo hup > %s; exit' HUP; sleep 1000 &`, marker))
	s := f.hostSession(t, u.Name)
	start := time.Now()
	r := f.Run(f.helen, "", "logoff", strconv.Itoa(s.ID), "/now", "/v")
	took := time.Since(start)
	if r.Status != 0 {
		t.Fatalf("logoff /now: %d %q", r.Status, r.Stderr)
	}
	if strings.Contains(r.Stdout, "sent SIGHUP") || !strings.Contains(r.Stdout, "sending SIGKILL") {
		t.Errorf("/v of /now: %q", r.Stdout)
	}
	if took > 4*time.Second {
		t.Errorf("logoff /now took %s: it waited for the grace", took)
	}
	if !l.Exited(5 * time.Second) {
		t.Fatal("the client is still connected")
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the shell ran its HUP trap: it got SIGHUP\n%s", r.Stdout)
	}
	if left := sshdtest.PIDsOf(u.UID); len(left) > 0 {
		t.Fatalf("processes remain: %v", left)
	}
	now := 0
	for _, m := range f.Audit() {
		if (m["msg"] == "logoff.intent" || m["msg"] == "logoff.outcome") && m["session_user"] == u.Name && m["now"] == true {
			now++
		}
	}
	if now != 2 {
		t.Errorf("audit: %d logoff records with now=true, want the intent and the outcome", now)
	}
	// A refused /now is refused as any logoff.
	staff := f.sshd.AddUser(t, "tsstf")
	ls := loggedIn(t, f.sshd, staff, true)
	if r := f.Run(f.helen, "", "logoff", strconv.Itoa(f.hostSession(t, staff.Name).ID), "/now"); r.Status != shell.StatusDenied {
		t.Errorf("helpdesk /now on staff: %d", r.Status)
	}
	if ls.Exited(300 * time.Millisecond) {
		t.Error("a refused /now ended the session")
	}
}

// query process lists what runs in a session, and a process that names
// itself with an escape sequence comes out escaped in the table and JSON.
func TestQueryProcessOfARealLogin(t *testing.T) {
	f := newHostFleet(t, "2s")
	u := f.sshd.AddUser(t, "tsstu")
	f.sshd.LoginReady(t, u, true, `sleep 1002 & printf '\033]0;PWN\007' > /proc/$$/comm`)
	s := f.hostSession(t, u.Name)

	// A viewer may see: listing is not logoff.
	r := f.Run(f.carol, "", "query", "process", fmt.Sprintf("/id:%d", s.ID))
	if r.Status != 0 {
		t.Fatalf("query process /id: %d %q", r.Status, r.Stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
	if lines[0] != " USERNAME              SESSIONNAME         ID    PID  IMAGE" {
		t.Errorf("header: %q", lines[0])
	}
	if strings.ContainsAny(r.Stdout, "\x1b\x07") || !strings.Contains(r.Stdout, `\x1b]0;PWN\x07`) {
		t.Errorf("the hostile name is not escaped: %q", r.Stdout)
	}
	var sleepRow string
	for _, l := range lines[1:] {
		if strings.HasSuffix(l, "  sleep") {
			sleepRow = l
		}
	}
	if !strings.HasPrefix(sleepRow, " "+u.Name) || !strings.Contains(sleepRow, " "+s.Name+" ") {
		t.Errorf("the sleep row: %q in\n%s", sleepRow, r.Stdout)
	}

	r = f.Run(f.carol, "", "query", "process", u.Name, "/fo:json")
	if r.Status != 0 || strings.ContainsAny(r.Stdout, "\x1b\x07") {
		t.Fatalf("json: %d %q %q", r.Status, r.Stdout, r.Stderr)
	}
	var procs []shell.JSONProcess
	if err := json.Unmarshal([]byte(r.Stdout), &procs); err != nil {
		t.Fatalf("%v: %s", err, r.Stdout)
	}
	var sleep, renamed *shell.JSONProcess
	for i, p := range procs {
		switch p.Command {
		case "sleep":
			sleep = &procs[i]
		case "\x1b]0;PWN\a":
			renamed = &procs[i]
		}
	}
	if sleep == nil || renamed == nil {
		t.Fatalf("the sleep and the renamed shell: %+v", procs)
	}
	started, err := time.Parse(time.RFC3339, sleep.StartTime)
	if err != nil || time.Since(started) > time.Minute || sleep.PID <= 0 || sleep.User != u.Name ||
		sleep.SessionID != s.ID || sleep.SessionName != s.Name || sleep.SessionUser != u.Name || sleep.CPUSeconds < 0 {
		t.Errorf("the sleep's fields: %+v (%v)", *sleep, err)
	}

	// By PID, and by program name.
	r = f.Run(f.carol, "", "query", "process", strconv.Itoa(sleep.PID))
	if got := strings.Count(r.Stdout, "\n"); r.Status != 0 || got != 2 {
		t.Errorf("by PID: %d, %d lines: %q", r.Status, got, r.Stdout)
	}
	r = f.Run(f.carol, "", "query", "process", "sleep")
	for _, l := range strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")[1:] {
		if !strings.HasSuffix(l, "  sleep") {
			t.Errorf("by program name, a row of another program: %q", l)
		}
	}
	if r := f.Run(f.carol, "", "query", "process", "tsnosuchprogram"); r.Status != shell.StatusNotFound {
		t.Errorf("no such process: %d", r.Status)
	}
}

// logoff /user:NAME /server:* ends the user's sessions on this server and
// on every peer, each peer deciding with its own roles; a query process
// is relayed to one peer, and /server:* is refused for it.
func TestRelayedLogoffUserEverywhere(t *testing.T) {
	k, admins := fedAdmins(t)
	nodes := startFederation(t, []string{"A", "B"}, admins, nil)
	a, b := nodes["A"], nodes["B"]

	// carol's sessions on both servers; alice (operator everywhere) ends
	// them all from A.
	onA, onB := a.Open(k.carol), b.Open(k.carol)
	r := a.Run(k.alice, "", "logoff", "/user:carol", "/server:*", "/v")
	if r.Status != 0 {
		t.Fatalf("everywhere: %d %q %q", r.Status, r.Stdout, r.Stderr)
	}
	if !onA.Exited(5*time.Second) || !onB.Exited(5*time.Second) {
		t.Fatal("a session of carol is still connected")
	}
	if !strings.Contains(r.Stdout, "on server A") || !strings.Contains(r.Stdout, "on server B") {
		t.Errorf("the /v report lacks a server: %q", r.Stdout)
	}
	if !hasAudit(b.Audit(), func(m map[string]any) bool {
		return m["msg"] == "logoff.outcome" && m["via"] == "A" && m["admin"] == "alice" && m["session_user"] == "carol" && m["result"] == "ok"
	}) {
		t.Error("B did not audit the relayed logoff")
	}

	// carol is an operator on A but a viewer on B: A ends alice's session
	// there, B refuses; the status says so.
	aliceA, aliceB := a.Open(k.alice), b.Open(k.alice)
	r = a.Run(k.carol, "", "logoff", "/user:alice", "/server:*")
	if r.Status != shell.StatusDenied || !strings.Contains(r.Stderr, "access denied") {
		t.Fatalf("refused on B: want 5, got %d %q", r.Status, r.Stderr)
	}
	if !aliceA.Exited(5 * time.Second) {
		t.Fatal("alice's session on A, which carol may end, is still connected")
	}
	if aliceB.Exited(300 * time.Millisecond) {
		t.Fatal("B ended a session its roles do not let carol end")
	}

	// Nobody of that name anywhere: 1.
	if r := a.Run(k.alice, "", "logoff", "/user:nobody", "/server:*"); r.Status != shell.StatusNotFound {
		t.Errorf("no session anywhere: want 1, got %d %q", r.Status, r.Stderr)
	}
	// query process goes to one peer; tsadmin's own sessions run nothing.
	if r := a.Run(k.alice, "", "query", "process", "/server:B"); r.Status != 0 || !strings.HasPrefix(r.Stdout, " USERNAME") {
		t.Errorf("relayed query process: %d %q %q", r.Status, r.Stdout, r.Stderr)
	}
	if r := a.Run(k.alice, "", "query", "process", "/server:*"); r.Status != shell.StatusUsage {
		t.Errorf("query process /server:*: want 2, got %d", r.Status)
	}
}
