package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/internal/sshdtest"
)

// hostFleet is tsadmin with the host source, beside a real sshd with two
// throwaway users logged in: alice is an operator, helen a helpdesk that
// may end the sessions of users whose name starts with "tsstu", and
// carol a viewer.
type hostFleet struct {
	*Server
	sshd                *sshdtest.SSHD
	alice, helen, carol Key
}

func newHostFleet(t *testing.T, grace string) *hostFleet {
	t.Helper()
	sshdtest.Require(t, "..")
	dir := t.TempDir()
	f := &hostFleet{alice: newKey(t, dir, "alice"), helen: newKey(t, dir, "helen"), carol: newKey(t, dir, "carol")}
	f.sshd = sshdtest.Start(t)
	f.Server = startServer(t, dir, fmt.Sprintf(`name: WF12
sessions: { sources: [shell, host], logoff_grace: %s }
roles:
  operator: { logoff: ["*"] }
  helpdesk: { logoff: ["user:tsstu*"] }
  viewer:   { logoff: [] }
admins:
  - { name: alice, role: operator, keys: [%q] }
  - { name: helen, role: helpdesk, keys: [%q] }
  - { name: carol, role: viewer, keys: [%q] }
`, grace, f.alice.Public, f.helen.Public, f.carol.Public))
	return f
}

// hostSession waits until tsadmin lists a session of the Unix user.
func (f *hostFleet) hostSession(t *testing.T, user string) session {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range f.List(f.alice) {
			if s.User == user && s.Source == "host" {
				return s
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no host session of %s is listed: %+v", user, f.List(f.alice))
	return session{}
}

func loggedIn(t *testing.T, d *sshdtest.SSHD, u sshdtest.User, tty bool) *sshdtest.Login {
	t.Helper()
	return d.LoginReady(t, u, tty, "")
}

func TestHostSessionsListedAndEndedThroughTsadmin(t *testing.T) {
	f := newHostFleet(t, "2s")
	stu := f.sshd.AddUser(t, "tsstu")
	staff := f.sshd.AddUser(t, "tsstf")
	lStu := loggedIn(t, f.sshd, stu, true)
	lStaff := loggedIn(t, f.sshd, staff, true)
	sStu := f.hostSession(t, stu.Name)
	sStaff := f.hostSession(t, staff.Name)

	// The table shows user, terminal, state and type.
	r := f.Run(f.alice, "", "query", "session")
	for _, want := range []string{stu.Name, sStu.Name, "sshd", "Active"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("the listing lacks %q:\n%s", want, r.Stdout)
		}
	}
	if !strings.HasPrefix(sStu.Name, "pts/") {
		t.Errorf("a tty login is not named by its terminal: %+v", sStu)
	}

	// The helpdesk may end the student's session, not the staff's.
	if r := f.Run(f.helen, "", "logoff", fmt.Sprint(sStaff.ID)); r.Status != 5 {
		t.Fatalf("helpdesk on a staff session: want 5, got %d %q", r.Status, r.Stderr)
	}
	if lStaff.Exited(300 * time.Millisecond) {
		t.Fatal("a refused logoff ended the staff session")
	}
	start := time.Now()
	if r := f.Run(f.helen, "", "logoff", sStu.Name, "/v"); r.Status != 0 {
		t.Fatalf("helpdesk on a student session by terminal name: %d %q %q", r.Status, r.Stdout, r.Stderr)
	} else if !strings.Contains(r.Stdout, "SIGHUP") {
		t.Errorf("/v does not report the signals: %q", r.Stdout)
	}
	if !lStu.Exited(5 * time.Second) {
		t.Fatal("the student's ssh client is still connected")
	}
	t.Logf("logoff by name -> client exit: %s", time.Since(start))
	if left := sshdtest.PIDsOf(stu.UID); len(left) > 0 {
		t.Fatalf("processes of the student remain: %v", left)
	}
	// The listing drops the ended session; the other keeps its ID.
	for _, s := range f.List(f.alice) {
		if s.User == stu.Name {
			t.Errorf("the ended session is still listed: %+v", s)
		}
		if s.User == staff.Name && s.ID != sStaff.ID {
			t.Errorf("the staff session's ID changed from %d to %d", sStaff.ID, s.ID)
		}
	}
	// A viewer is refused; the operator may, by ID.
	if r := f.Run(f.carol, "", "logoff", fmt.Sprint(sStaff.ID)); r.Status != 5 {
		t.Errorf("viewer: %d", r.Status)
	}
	// The operator, by ID, with a warning written to the user's terminal
	// first.
	if r := f.Run(f.alice, "", fmt.Sprintf(`logoff %d /msg:"The lab closes now" /delay:1`, sStaff.ID)); r.Status != 0 {
		t.Fatalf("operator by ID: %d %q", r.Status, r.Stderr)
	}
	if !lStaff.Exited(5 * time.Second) {
		t.Fatal("the staff client is still connected")
	}
	if !strings.Contains(lStaff.Output(), "Message from alice (tsadmin on WF12): The lab closes now") {
		t.Errorf("the warning did not reach the user's terminal: %q", lStaff.Output())
	}
	// An ID that has ended is not found, and is never reused.
	if r := f.Run(f.alice, "", "logoff", fmt.Sprint(sStu.ID)); r.Status != 1 {
		t.Errorf("logoff of an ended session: %d", r.Status)
	}
}

func TestHostSessionIgnoringHUPAndNoTTY(t *testing.T) {
	f := newHostFleet(t, "1s")
	u := f.sshd.AddUser(t, "tsstu")
	l := loggedIn(t, f.sshd, u, true)
	if !l.Run(`trap "" HUP; setsid sh -c 'trap "" HUP; sleep 1000' &`, 5*time.Second) {
		t.Fatal("no trap")
	}
	notty := loggedIn(t, f.sshd, u, false)
	s := f.hostSession(t, u.Name)
	var sess *session
	for _, x := range f.List(f.alice) {
		if x.User == u.Name && strings.HasPrefix(x.Name, "sess:") {
			x := x
			sess = &x
		}
	}
	if sess == nil || sess.Type != "sshd" {
		t.Fatalf("the ssh -T session is not listed with its type: %+v", f.List(f.alice))
	}
	r := f.Run(f.alice, "", "logoff", fmt.Sprint(s.ID), "/v")
	if r.Status != 0 || !strings.Contains(r.Stdout, "SIGKILL") {
		t.Fatalf("logoff of a HUP-proof session: %d %q %q", r.Status, r.Stdout, r.Stderr)
	}
	if r := f.Run(f.alice, "", "logoff", sess.Name); r.Status != 0 {
		t.Fatalf("logoff of the no-tty session by name: %d %q", r.Status, r.Stderr)
	}
	if !l.Exited(5*time.Second) || !notty.Exited(5*time.Second) {
		t.Fatal("a client is still connected")
	}
	if left := sshdtest.PIDsOf(u.UID); len(left) > 0 {
		t.Fatalf("processes remain: %v", left)
	}
}

// The time of query session with 200 live host login sessions, and of a
// host logoff to the client's exit. TSADMIN_MEASURE=1 runs it.
func TestMeasureHostSessions(t *testing.T) {
	measuring(t)
	f := newHostFleet(t, "10s")
	const users, perUser = 20, 10
	var logins []*sshdtest.Login
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < users; i++ {
		u := f.sshd.AddUser(t, "tsstu")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perUser; j++ {
				l := loggedIn(t, f.sshd, u, true)
				mu.Lock()
				logins = append(logins, l)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	c := f.client(t, f.alice)
	var rows []session
	out, _ := runOn(t, c, "query session /fo:json")
	json.Unmarshal([]byte(out), &rows)
	host := 0
	for _, r := range rows {
		if r.Source == "host" {
			host++
		}
	}
	var times []time.Duration
	for i := 0; i < 20; i++ {
		times = append(times, onConn(t, c, "query session"))
	}
	fmt.Printf("MEASURE query session with %d live host login sessions, a burst: median %s (round trip on an open connection)\n", host, median(times))
	// Apart, so that each reads utmp and /proc afresh.
	var fresh []time.Duration
	for i := 0; i < 10; i++ {
		time.Sleep(300 * time.Millisecond)
		fresh = append(fresh, onConn(t, c, "query session"))
	}
	fmt.Printf("MEASURE query session with %d live host login sessions, each reading /proc afresh: median %s\n", host, median(fresh))
	var logoffs []time.Duration
	for i := 0; i < 10; i++ {
		var target session
		for _, r := range f.List(f.alice) {
			if r.Source == "host" && strings.HasPrefix(r.Name, "pts/") {
				target = r
				break
			}
		}
		start := time.Now()
		onConn(t, c, fmt.Sprintf("logoff %d", target.ID))
		logoffs = append(logoffs, time.Since(start))
	}
	fmt.Printf("MEASURE host logoff (SIGHUP path; the command returns once every process has gone): median %s\n", median(logoffs))
}
