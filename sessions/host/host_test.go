package host

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/internal/sshdtest"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// waitSession waits until the source lists a session of user (with a
// terminal when tty is set).
func waitSession(t *testing.T, src *Source, user string, tty bool) sessions.Session {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		list, err := src.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.User == user && strings.HasPrefix(s.Name, "pts/") == tty {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	list, _ := src.List(context.Background())
	t.Fatalf("no session of %s (tty %v) listed: %+v", user, tty, list)
	return sessions.Session{}
}

func logoff(t *testing.T, src *Source, s sessions.Session) (string, error) {
	var steps []string
	err := src.Logoff(context.Background(), s, sessions.LogoffRequest{Report: func(f string, a ...any) { steps = append(steps, fmt.Sprintf(f, a...)) }})
	return strings.Join(steps, "\n"), err
}

func TestRealSSHLoginsAreListedAndEnded(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	src := New(sshdtest.UtmpPath, time.Second)
	u := d.AddUser(t, "tsh")

	// A login with a terminal, and a daemon that left with setsid, lost
	// its terminal and its parent (it is reparented, so it is neither on
	// the terminal nor under the login manager): only the audit session
	// id, which setsid does not change, still ties it to the session.
	l := d.LoginReady(t, u, true, "setsid sh -c 'sleep 1000 </dev/null >/dev/null 2>&1 &'; sleep 0.3")
	s := waitSession(t, src, u.Name, true)
	if s.Type != "sshd" || s.Device != "127.0.0.1" || s.State != sessions.Active || s.LogonTime.IsZero() {
		t.Errorf("session fields: %+v", s)
	}
	start := time.Now()
	steps, err := logoff(t, src, s)
	if err != nil {
		t.Fatalf("logoff: %v\n%s", err, steps)
	}
	if !strings.Contains(steps, "the login manager sshd (") {
		t.Errorf("/v does not say sshd was signalled first:\n%s", steps)
	}
	if !l.Exited(5 * time.Second) {
		t.Fatal("the ssh client is still connected")
	}
	t.Logf("logoff -> client exit: %s\n%s", time.Since(start), steps)
	if left := sshdtest.PIDsOf(u.UID); len(left) > 0 {
		t.Fatalf("processes of the session remain: %v", left)
	}
	for _, x := range mustList(t, src) {
		if x.Key == s.Key {
			t.Error("the ended session is still listed")
		}
	}
}

func mustList(t *testing.T, src *Source) []sessions.Session {
	list, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// A session whose shell ignores SIGHUP is ended by the SIGKILL after the
// grace period.
func TestSessionIgnoringSIGHUPIsKilledAfterTheGrace(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	src := New(sshdtest.UtmpPath, time.Second)
	u := d.AddUser(t, "tsh")
	d.LoginReady(t, u, true, `trap "" HUP; nohup sh -c 'trap "" HUP; while :; do sleep 1; done' >/dev/null 2>&1 &`)
	s := waitSession(t, src, u.Name, true)
	start := time.Now()
	steps, err := logoff(t, src, s)
	if err != nil {
		t.Fatalf("logoff: %v\n%s", err, steps)
	}
	if !strings.Contains(steps, "sending SIGKILL") {
		t.Errorf("the HUP-proof processes were not killed after the grace:\n%s", steps)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("SIGKILL came before the grace (%s)", took)
	}
	if left := sshdtest.PIDsOf(u.UID); len(left) > 0 {
		t.Fatalf("processes remain: %v", left)
	}
}

// ssh -T makes no utmp record; the session is found by its audit session
// id, with its user, type and address.
func TestSessionWithoutATerminal(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	src := New(sshdtest.UtmpPath, time.Second)
	u := d.AddUser(t, "tsh")
	l := d.LoginReady(t, u, false, "")
	s := waitSession(t, src, u.Name, false)
	if !strings.HasPrefix(s.Name, "sess:") || s.Type != "sshd" || s.Device != "127.0.0.1" {
		t.Errorf("a no-tty session: %+v", s)
	}
	if _, err := logoff(t, src, s); err != nil {
		t.Fatal(err)
	}
	if !l.Exited(5 * time.Second) {
		t.Fatal("the ssh -T client is still connected")
	}
	if left := sshdtest.PIDsOf(u.UID); len(left) > 0 {
		t.Fatalf("processes remain: %v", left)
	}
}

// Where logind runs, the host source leaves the sessions logind lists to
// it: no session appears twice.
func TestSessionsClaimedByLogindAreLeftOut(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	src := New(sshdtest.UtmpPath, time.Second)
	u := d.AddUser(t, "tsh")
	d.LoginReady(t, u, true, "")
	s := waitSession(t, src, u.Name, true)
	src.DeferTo(func(context.Context) (map[string]bool, map[int]bool, error) {
		return map[string]bool{s.Name: true}, nil, nil
	})
	for _, x := range mustList(t, src) {
		if x.Key == s.Key {
			t.Fatalf("a session logind claims is listed by the host source too: %+v", x)
		}
	}
}

// OpenSSH may record the PID of the user's shell rather than its own (the
// record then names bash or the user's command): the login manager is
// found as the shell's parent sshd, shown as TYPE sshd and signalled
// first. The record here is the real login's, with the shell's PID.
func TestShellRecordedInUtmpIsManagedByItsSSHD(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	u := d.AddUser(t, "tsh")
	l := d.LoginReady(t, u, true, "echo shellpid=$(($$+0))")
	m := regexp.MustCompile(`shellpid=([0-9]+)`).FindStringSubmatch(l.Output())
	if m == nil {
		t.Fatalf("the shell did not print its PID: %q", l.Output())
	}
	shell, _ := strconv.Atoi(m[1])
	sp, ok := readProc("/proc", shell)
	if !ok {
		t.Fatalf("no shell %d", shell)
	}
	recs, err := ReadFile(sshdtest.UtmpPath, NativeSize())
	if err != nil {
		t.Fatal(err)
	}
	var rec *Record
	for i := range recs {
		if recs[i].User == u.Name {
			rec = &recs[i]
		}
	}
	if rec == nil {
		t.Fatalf("sshd wrote no record for %s", u.Name)
	}
	rec.PID = int32(shell)
	utmp := filepath.Join(t.TempDir(), "utmp")
	os.WriteFile(utmp, Encode(*rec, NativeSize()), 0o644)
	src := New(utmp, time.Second)
	s := waitSession(t, src, u.Name, true)
	if s.Type != "sshd" {
		t.Errorf("TYPE of a login whose record names the shell: %q", s.Type)
	}
	steps, err := logoff(t, src, s)
	if err != nil {
		t.Fatalf("logoff: %v\n%s", err, steps)
	}
	want := fmt.Sprintf("the login manager sshd (%d) first", sp.ppid)
	if !strings.Contains(steps, want) || !strings.Contains(steps, fmt.Sprintf("processes: %d (sshd)", sp.ppid)) {
		t.Errorf("/v should signal the shell's sshd %d first:\n%s", sp.ppid, steps)
	}
	if !l.Exited(5 * time.Second) {
		t.Fatal("the ssh client is still connected")
	}
}

// A job runner's session (cron, at) has no utmp record; it is listed as a
// background session, with the TYPE logind gives it (bg:cron). The job
// here is a process named cron with an audit session of its own, as
// pam_loginuid makes one for cron's child.
func TestCronSessionIsListedAsBackground(t *testing.T) {
	sshdtest.Require(t, "../..")
	u := sshdtest.NewUser(t, "tscron")
	bin := filepath.Join(t.TempDir(), "cron")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	job := exec.Command("sh", "-c", fmt.Sprintf(`echo %d >/proc/self/loginuid && exec "$0" 1000`, u.UID), bin)
	if err := job.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { job.Process.Kill(); job.Wait() })
	for i := 0; i < 200; i++ { // until sh has become cron
		if p, ok := readProc("/proc", job.Process.Pid); ok && p.comm == "cron" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := waitSession(t, New(sshdtest.UtmpPath, time.Second), u.Name, false)
	if s.Type != "bg:cron" || !strings.HasPrefix(s.Name, "sess:") {
		t.Errorf("a cron session: %+v", s)
	}
}

// logoff /now: SIGKILL at once, no SIGHUP and no grace. The shell traps
// HUP by writing a file: a plain logoff lets it run (which shows the
// trap works), /now must not, and must not wait out the 10s grace.
func TestNowKillsWithoutHUPOrGrace(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	src := New(sshdtest.UtmpPath, 10*time.Second)
	for _, now := range []bool{false, true} {
		u := d.AddUser(t, "tsnow")
		marker := filepath.Join(d.Dir, "home", u.Name, "got-hup")
		l := d.LoginReady(t, u, true, fmt.Sprintf(`trap 'echo hup > %s; exit' HUP; sleep 1000 &`, marker))
		s := waitSession(t, src, u.Name, true)
		var steps []string
		start := time.Now()
		err := src.Logoff(context.Background(), s, sessions.LogoffRequest{Now: now,
			Report: func(f string, a ...any) { steps = append(steps, fmt.Sprintf(f, a...)) }})
		took := time.Since(start)
		if err != nil {
			t.Fatalf("now=%v: %v\n%s", now, err, strings.Join(steps, "\n"))
		}
		if !l.Exited(5 * time.Second) {
			t.Fatalf("now=%v: the client is still connected", now)
		}
		if left := sshdtest.PIDsOf(u.UID); len(left) > 0 {
			t.Fatalf("now=%v: processes remain: %v", now, left)
		}
		_, statErr := os.Stat(marker)
		all := strings.Join(steps, "\n")
		if now {
			if statErr == nil {
				t.Errorf("/now: the shell's HUP trap ran")
			}
			if strings.Contains(all, "sent SIGHUP") || !strings.Contains(all, "sending SIGKILL") {
				t.Errorf("/now steps: %s", all)
			}
			if took > 3*time.Second {
				t.Errorf("/now took %s: it waited for a grace", took)
			}
		} else if statErr != nil {
			t.Errorf("a plain logoff: the HUP trap did not run, so the /now check proves nothing: %v\n%s", statErr, all)
		}
	}
}

// Processes lists what a logoff would signal, with the name a process
// gave itself kept as it is (the shell printing escapes it).
func TestProcessesOfARealLogin(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	src := New(sshdtest.UtmpPath, time.Second)
	u := d.AddUser(t, "tsps")
	d.LoginReady(t, u, true, `sleep 1001 & printf '\033]0;PWN\007' > /proc/$$/comm`)
	s := waitSession(t, src, u.Name, true)
	byKey, err := src.Processes(context.Background(), []sessions.Session{s, {Key: "utmp:gone:1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := byKey["utmp:gone:1:1"]; ok || len(byKey) != 1 {
		t.Errorf("a session that is not there has processes: %v", byKey)
	}
	var sleep, renamed *sessions.Process
	for i, p := range byKey[s.Key] {
		switch p.Command {
		case "sleep":
			sleep = &byKey[s.Key][i]
		case "\x1b]0;PWN\a":
			renamed = &byKey[s.Key][i]
		}
		if p.User != u.Name && p.User != "root" {
			t.Errorf("process %d of another user listed: %+v", p.PID, p)
		}
	}
	if sleep == nil || renamed == nil {
		t.Fatalf("the sleep and the renamed shell are not both listed: %+v", byKey[s.Key])
	}
	if sleep.User != u.Name || sleep.Start.IsZero() || time.Since(sleep.Start) > time.Minute || time.Since(sleep.Start) < 0 {
		t.Errorf("the sleep's user or start time: %+v", *sleep)
	}
	if first := byKey[s.Key][0]; first.Command != "sshd" && first.Command != "sshd-session" {
		t.Errorf("the login manager is not first: %+v", byKey[s.Key])
	}
}

// Start and CPU times of a machine up for years: ticks times 1e9 would
// overflow a time.Duration after about 2.9 years at 100 Hz.
func TestTicksOfYearsDoNotOverflow(t *testing.T) {
	src := &Source{clkTck: 100}
	fiveYears := 5 * 365 * 24 * time.Hour
	if got := src.ticks(uint64(fiveYears/time.Second)*100 + 25); got != fiveYears+250*time.Millisecond {
		t.Errorf("five years and 25 ticks: %s", got)
	}
}
