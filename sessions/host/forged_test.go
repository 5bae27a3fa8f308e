package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tsadmin-dev/tsadmin/internal/sshdtest"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// utempterHelper finds libutempter's setgid helper (package libutempter0,
// installed with tmux), which writes a utmp record for any local user.
func utempterHelper(t *testing.T) string {
	t.Helper()
	for attempt := 0; attempt < 2; attempt++ {
		if m, _ := filepath.Glob("/usr/lib/*/utempter/utempter"); len(m) > 0 {
			return m[0]
		}
		if out, err := exec.Command("../../scripts/install-deps").CombinedOutput(); err != nil {
			t.Fatalf("scripts/install-deps: %v\n%s", err, out)
		}
	}
	t.Fatal("libutempter's helper is not installed (libutempter0)")
	return ""
}

// asUser is the argument list that runs argv as u.
func asUser(u sshdtest.User, argv ...string) []string {
	id := strconv.Itoa(u.UID)
	return append([]string{"setpriv", "--reuid", id, "--regid", id, "--clear-groups"}, argv...)
}

// forgeRecord has user a write a USER_PROCESS record through the utempter
// helper, as any local user can: the helper takes a pty master as its
// standard input and records its parent's PID, here a shell that exits at
// once, so the record outlives its process. It returns the record and
// marks it dead when the test ends.
func forgeRecord(t *testing.T, a sshdtest.User) Record {
	t.Helper()
	helper := utempterHelper(t)
	args := asUser(a, "bash", "-c", `exec 0<>/dev/ptmx; "$1" add 203.0.113.66 && echo "pid=$$"`, "forge", helper)
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("the utempter helper: %v\n%s", err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "pid=")))
	if err != nil {
		t.Fatalf("the forging shell printed %q", out)
	}
	recs, err := ReadFile(sshdtest.UtmpPath, NativeSize())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if int(r.PID) == pid && r.User == a.Name {
			t.Cleanup(func() { markDead(t, r) })
			return r
		}
	}
	t.Fatalf("no record of %s with PID %d was written", a.Name, pid)
	return Record{}
}

// markDead turns the test's record into a DEAD_PROCESS one, under the
// lock glibc takes, if the slot still holds it.
func markDead(t *testing.T, r Record) {
	f, err := os.OpenFile(sshdtest.UtmpPath, os.O_RDWR, 0)
	if err != nil {
		t.Errorf("cleaning utmp: %v", err)
		return
	}
	defer f.Close()
	lock := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: r.RecordOff, Len: int64(NativeSize())}
	unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &lock)
	buf := make([]byte, NativeSize())
	if _, err := f.ReadAt(buf, r.RecordOff); err != nil {
		return
	}
	now := Parse(buf, NativeSize())
	if len(now) != 1 || now[0].PID != r.PID || now[0].User != r.User || now[0].Line != r.Line {
		return // the slot was reused for another login
	}
	dead := r
	dead.Type = deadProcess
	if _, err := f.WriteAt(Encode(dead, NativeSize()), r.RecordOff); err != nil {
		t.Errorf("cleaning utmp: %v", err)
	}
}

// victimAt starts a process of user b, logged in as b with an audit
// session of its own (as pam_loginuid makes a login), whose PID is pid:
// as root, it sets the kernel's last PID just before forking, and retries
// when another fork on the machine took the PID first. It returns nil
// when the PID is held by a process that lives on (a busy machine reused
// it before the test could), so that the caller forges another record.
func victimAt(t *testing.T, b sshdtest.User, pid int) *exec.Cmd {
	t.Helper()
	script := fmt.Sprintf(`echo %d >/proc/self/loginuid && exec "$@"`, b.UID)
	args := append([]string{"sh", "-c", script, "victim"}, asUser(b, "sleep", "1000")...)
	for attempt := 0; attempt < 200; attempt++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Fatalf("setting the next PID: %v", err)
		}
		cmd := exec.Command(args[0], args[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			return cmd
		}
		cmd.Process.Kill()
		cmd.Wait()
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			return nil
		}
	}
	t.Fatalf("could not start a process with PID %d", pid)
	return nil
}

// forgedOver forges a record of a (forgeRecord) and gives its PID to a
// process of b (victimAt), forging again while another process on the
// machine holds the PID.
func forgedOver(t *testing.T, a, b sshdtest.User) (Record, *exec.Cmd) {
	t.Helper()
	for attempt := 0; attempt < 10; attempt++ {
		rec := forgeRecord(t, a)
		if victim := victimAt(t, b, int(rec.PID)); victim != nil {
			return rec, victim
		}
	}
	t.Fatal("every forged record's PID was taken by another process")
	return Record{}, nil
}

// ownedBy waits until the process runs sleep as b (setpriv has run),
// and, with login, is logged in as b.
func ownedBy(t *testing.T, pid int, b sshdtest.User, login bool) *proc {
	t.Helper()
	for i := 0; i < 200; i++ {
		p, ok := readProc("/proc", pid)
		o, ok2 := readOwner("/proc", pid)
		if ok && ok2 && o.uid == b.UID && (!login || o.loginUID == b.UID) && p.comm == "sleep" {
			return p
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d did not become %s's", pid, b.Name)
	return nil
}

// suspicions collects what a source reports as suspicious.
type suspicions struct {
	mu      sync.Mutex
	reasons []string
}

func (s *suspicions) hook(reason string, attrs ...slog.Attr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reasons = append(s.reasons, fmt.Sprint(reason, attrs))
}

func (s *suspicions) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reasons...)
}

func alive(cmd *exec.Cmd) bool {
	var ws unix.Siginfo
	// WNOWAIT leaves the child to the test's own Wait.
	err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &ws, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && ws.Signo == 0
}

// The attack of issue 10 item 1, carried out: user A has a login record
// written whose process exits; user B's process is given that PID. The
// record must not become a session of A over B's process, and a logoff
// through the key such a session would have had signals nothing of B's.
func TestForgedRecordOverAReusedPIDIsNotASession(t *testing.T) {
	sshdtest.Require(t, "../..")
	a := sshdtest.NewUser(t, "tsatk")
	b := sshdtest.NewUser(t, "tsvic")
	rec, victim := forgedOver(t, a, b)
	vp := ownedBy(t, victim.Process.Pid, b, true)

	var seen suspicions
	src := New(sshdtest.UtmpPath, time.Second)
	src.OnSuspicious = seen.hook
	for i := 0; i < 2; i++ {
		src.forget()
		for _, s := range mustList(t, src) {
			if s.User == a.Name || strings.Contains(s.Key, ":"+strconv.Itoa(vp.pid)+":") && strings.HasPrefix(s.Key, "utmp:") {
				t.Errorf("the forged record is listed as a session: %+v", s)
			}
		}
	}
	if got := seen.list(); len(got) != 1 || !strings.Contains(got[0], a.Name) {
		t.Errorf("the forged record should be reported as suspicious once, got %q", got)
	}

	// The key the forged session would have had.
	key := fmt.Sprintf("utmp:%s:%d:%d", rec.Line, vp.pid, vp.start)
	steps, err := logoff(t, src, sessions.Session{ID: 99, Key: key, User: a.Name, Name: rec.Line})
	if !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("a logoff through the forged record's key: %v\n%s", err, steps)
	}
	if !alive(victim) {
		t.Fatal("the victim's process was ended through the forged record")
	}
}

// attackerAndVictim makes users A and B, and a process of B.
func attackerAndVictim(t *testing.T) (a, b sshdtest.User, victim *exec.Cmd, vp *proc) {
	t.Helper()
	sshdtest.Require(t, "../..")
	a = sshdtest.NewUser(t, "tsatk")
	b = sshdtest.NewUser(t, "tsvic")
	args := asUser(b, "sleep", "1000")
	victim = exec.Command(args[0], args[1:]...)
	// A session leader, as a login's first process is.
	victim.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Process.Kill(); victim.Wait() })
	return a, b, victim, ownedBy(t, victim.Process.Pid, b, false)
}

// Should a session ever include a process of another user, a logoff
// signals only the processes of the session's user, and reports the rest.
func TestLogoffSignalsOnlyTheSessionUsersProcesses(t *testing.T) {
	a, _, victim, vp := attackerAndVictim(t)

	var seen suspicions
	src := New(sshdtest.UtmpPath, 200*time.Millisecond)
	src.OnSuspicious = seen.hook
	// A session of A whose leader is B's process, as a fooled listing
	// would have made it.
	h := session{leader: vp.pid, leaderAt: vp.start, sessionID: noSession, owner: a.UID}
	h.User, h.Name = a.Name, "pts/999"
	var steps []string
	err := src.end(context.Background(), h, 99, sessions.LogoffRequest{Report: func(f string, args ...any) { steps = append(steps, fmt.Sprintf(f, args...)) }})
	if !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("ending a session with no process of its user: %v", err)
	}
	if !alive(victim) {
		t.Fatal("a process of another user was signalled")
	}
	if !strings.Contains(strings.Join(steps, "\n"), "not signalling process "+strconv.Itoa(vp.pid)) {
		t.Errorf("/v does not say the process was left alone: %q", steps)
	}
	if got := seen.list(); len(got) != 1 {
		t.Errorf("the refused process should be reported as suspicious once, got %q", got)
	}
}

// A record naming a user whose process, though older than the record,
// belongs to someone else (a record written by a program of group utmp
// over a running process) is not a session either.
func TestRecordOverAnotherUsersOlderProcessIsNotASession(t *testing.T) {
	a, b, victim, _ := attackerAndVictim(t)
	time.Sleep(50 * time.Millisecond)

	utmp := filepath.Join(t.TempDir(), "utmp")
	rec := Record{Type: userProcess, PID: int32(victim.Process.Pid), Line: "pts/998", User: a.Name, Time: time.Now().Add(5 * time.Second)}
	if err := os.WriteFile(utmp, Encode(rec, NativeSize()), 0o644); err != nil {
		t.Fatal(err)
	}
	var seen suspicions
	src := New(utmp, time.Second)
	src.OnSuspicious = seen.hook
	for _, s := range mustList(t, src) {
		if s.Name == rec.Line {
			t.Errorf("a record over another user's process is listed: %+v", s)
		}
	}
	if got := seen.list(); len(got) != 1 {
		t.Errorf("the record should be reported as suspicious once, got %q", got)
	}
	// The same record naming the process's own user is a session, listed
	// under the user that owns the process.
	rec.User = b.Name
	os.WriteFile(utmp, Encode(rec, NativeSize()), 0o644)
	src.forget()
	found := false
	for _, s := range mustList(t, src) {
		found = found || s.Name == rec.Line && s.User == b.Name
	}
	if !found {
		t.Error("a consistent record is not listed")
	}
}
