package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/internal/sshdtest"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// forkChain is a shell line that starts, in the background, a process
// that ignores SIGHUP and every 20 ms forks a child and exits, so its PID
// keeps changing.
const forkChain = `bash -c 'trap "" HUP; hop() { sleep 0.02; hop & exit 0; }; hop' </dev/null >/dev/null 2>&1 &`

// F1: a session whose process forks away from each signal is not
// reported ended while the chain lives on; the logoff ends it.
func TestForkingChainDoesNotSurviveLogoff(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	src := New(sshdtest.UtmpPath, 300*time.Millisecond)
	u := d.AddUser(t, "tsfork")
	d.LoginReady(t, u, false, forkChain)
	s := waitSession(t, src, u.Name, false)
	steps, err := logoff(t, src, s)
	if err != nil && !errors.Is(err, sessions.ErrSurvived) {
		t.Fatalf("logoff: %v\n%s", err, steps)
	}
	time.Sleep(time.Second) // the chain, were it alive, would have hopped 50 times
	left := sshdtest.PIDsOf(u.UID)
	if err == nil && len(left) > 0 {
		t.Fatalf("the logoff reported success, but processes of the session live on: %v\n%s", left, steps)
	}
	if len(left) > 0 {
		t.Fatalf("the forking chain survived the logoff: %v\n%s", left, steps)
	}
	src.forget()
	for _, x := range mustList(t, src) {
		if x.User == u.Name {
			t.Fatalf("the session is listed again after the logoff: %+v\n%s", x, steps)
		}
	}
}

// execDir is a directory the throwaway users can read and run from.
func execDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "tsexec-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// copyAs copies /bin/sleep to dir/name: a process named name.
func copyAs(t *testing.T, dir, name string) string {
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// F2: a process whose loginuid was unset writes another user's uid into
// it and poses as sshd with a faked SSH_CONNECTION. It is not listed as
// the other user's session, shows no device, and is reported.
func TestSelfSetLoginUIDDoesNotMakeAnotherUsersSession(t *testing.T) {
	a, b, _, _ := attackerAndVictim(t)
	if _, ok := loginUID("/proc", os.Getpid()); ok {
		t.Skip("the test's own loginuid is set: its children cannot set theirs")
	}
	bin := copyAs(t, execDir(t), "sshd")
	script := fmt.Sprintf(`echo %d >/proc/self/loginuid && SSH_CONNECTION='203.0.113.9 1 2 3' exec "$0" 2000`, b.UID)
	args := asUser(a, "bash", "-c", script, bin)
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	for i := 0; i < 200; i++ { // until bash has become "sshd"
		if p, ok := readProc("/proc", pid); ok && p.comm == "sshd" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if o, _ := readOwner("/proc", pid); o.loginUID != b.UID {
		t.Fatalf("the attack did not take: loginuid %d", o.loginUID)
	}
	var seen suspicions
	src := New(sshdtest.UtmpPath, time.Second)
	src.OnSuspicious = seen.hook
	var found *sessions.Session
	for _, s := range mustList(t, src) {
		if s.User == b.Name {
			t.Errorf("the attacker's process is listed as %s's session: %+v", b.Name, s)
		}
		if strings.Contains(s.Key, ":"+strconv.Itoa(pid)+":") {
			found = &s
		}
	}
	if found == nil || found.User != a.Name || found.Device != "" {
		t.Errorf("the process should be listed as %s's, without a device: %+v", a.Name, found)
	}
	if got := strings.Join(seen.list(), "\n"); !strings.Contains(got, "loginuid") {
		t.Errorf("the self-set loginuid is not reported: %q", got)
	}
}

// F3: a record left for a pty by user A, whose pty was closed and whose
// number went to user B, does not make B's terminal A's: the session is
// disconnected, and a message is not written to B's terminal.
func TestRecordOfAClosedPtyDoesNotReachTheNextOwner(t *testing.T) {
	a, b, _, _ := attackerAndVictim(t)
	helper := utempterHelper(t)
	// A: a session leader that has a record written for a pty, closes the
	// pty and stays alive.
	args := asUser(a, "setsid", "bash", "-c", `exec 3<>/dev/ptmx; "$1" add 203.0.113.66 <&3; exec 3>&-; echo "pid=$$"; exec sleep 1000`, "forge", helper)
	forger := exec.Command(args[0], args[1:]...)
	out, _ := forger.StdoutPipe()
	if err := forger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forger.Process.Kill(); forger.Wait() })
	var line [64]byte
	n, _ := out.Read(line[:])
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(line[:n])), "pid=")))
	if err != nil {
		t.Fatalf("the forger printed %q", line[:n])
	}
	var rec Record
	recs, _ := ReadFile(sshdtest.UtmpPath, NativeSize())
	for _, r := range recs {
		if int(r.PID) == pid && r.User == a.Name {
			rec = r
		}
	}
	if rec.Line == "" {
		t.Fatalf("no record of %s with PID %d", a.Name, pid)
	}
	t.Cleanup(func() { markDead(t, rec) })

	// B: opens a pty without a record (script(1)), and gets that number.
	var shown bytes.Buffer
	var mu sync.Mutex
	bargs := asUser(b, "script", "-qfc", "sleep 1000", "/dev/null")
	term := exec.Command(bargs[0], bargs[1:]...)
	term.Stdout = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return shown.Write(p) })
	stdin, _ := term.StdinPipe()
	if err := term.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); term.Process.Kill(); term.Wait() })
	var st syscall.Stat_t
	for i := 0; i < 200; i++ {
		if syscall.Stat("/dev/"+rec.Line, &st) == nil && int(st.Uid) == b.UID {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if int(st.Uid) != b.UID {
		t.Fatalf("%s's pty is not %s (another pty was opened meanwhile?)", b.Name, rec.Line)
	}

	src := New(sshdtest.UtmpPath, time.Second)
	var s *sessions.Session
	for _, x := range mustList(t, src) {
		if x.Name == rec.Line && x.User == a.Name {
			s = &x
		}
	}
	if s == nil {
		t.Fatalf("%s's record is not listed", a.Name)
	}
	if s.State != sessions.Disc || s.IdleTime != 0 {
		t.Errorf("%s's session shows %s's terminal: %+v", a.Name, b.Name, s)
	}
	err = src.Message(context.Background(), *s, "tsadmin-redteam-msg")
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	got := shown.String()
	mu.Unlock()
	if strings.Contains(got, "tsadmin-redteam-msg") {
		t.Fatalf("the message to %s's session was written to %s's terminal (err %v)", a.Name, b.Name, err)
	}
	if err == nil {
		t.Error("a message to a session without its terminal reports success")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// F4: forged root records (as a program of group utmp could write) over
// PID 1, over the listening sshd and over a root process that leads no
// login are refused: not listed, reported, and a logoff through the key
// they would have had finds nothing and signals nothing.
func TestForgedRootRecordsOverNonLoginsAreRefused(t *testing.T) {
	sshdtest.Require(t, "../..")
	d := sshdtest.Start(t)
	plain := exec.Command("sleep", "1000") // root's, no session leader
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plain.Process.Kill(); plain.Wait() })
	time.Sleep(50 * time.Millisecond)
	at := time.Now().Add(5 * time.Second)
	targets := map[string]int{"pts/990": 1, "pts/991": d.PID(), "pts/992": plain.Process.Pid}
	var data []byte
	for line, pid := range targets {
		data = append(data, Encode(Record{Type: userProcess, PID: int32(pid), Line: line, User: "root", Time: at}, NativeSize())...)
	}
	utmp := filepath.Join(t.TempDir(), "utmp")
	if err := os.WriteFile(utmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var seen suspicions
	src := New(utmp, 100*time.Millisecond)
	src.OnSuspicious = seen.hook
	// Fatal, never Error: a logoff below of a record that were listed
	// would signal every root process on the machine.
	for _, s := range mustList(t, src) {
		if _, forged := targets[s.Name]; forged {
			t.Fatalf("a forged root record is listed: %+v", s)
		}
	}
	if got := seen.list(); len(got) != len(targets) {
		t.Fatalf("each forged record should be reported once, got %q", got)
	}
	for line, pid := range targets {
		p, ok := readProc("/proc", pid)
		if !ok {
			t.Fatalf("no process %d", pid)
		}
		key := fmt.Sprintf("utmp:%s:%d:%d", line, pid, p.start)
		steps, err := logoff(t, src, sessions.Session{ID: 99, Key: key, User: "root", Name: line})
		if !errors.Is(err, sessions.ErrNotFound) || steps != "" {
			t.Errorf("a logoff through the forged record over %d: %v\n%s", pid, err, steps)
		}
	}
	if !alive(plain) {
		t.Fatal("the root process was signalled")
	}
	if err := syscall.Kill(d.PID(), 0); err != nil {
		t.Fatal("the listening sshd was signalled")
	}
}

// Without audit session ids, the tree under a leader stops where another
// kernel session starts: a daemon its shell started with setsid is the
// session's only when the leader is the login manager whose child starts
// the login's session.
func TestSessionTreeStopsAtAnotherSession(t *testing.T) {
	procs := procTable{
		50:  {pid: 50, ppid: 1, sid: 50, comm: "tmux: server"},
		51:  {pid: 51, ppid: 50, sid: 51, comm: "bash"}, // a pane: its own session
		52:  {pid: 52, ppid: 50, sid: 50, comm: "helper"},
		100: {pid: 100, ppid: 1, sid: 100, comm: "login"},
		101: {pid: 101, ppid: 100, sid: 101, comm: "bash"}, // the login's session starts below login
	}
	got := procs.sessionTree(50)
	if !got[50] || !got[52] || got[51] {
		t.Errorf("tree under a non-login-manager: %v", got)
	}
	if got := procs.sessionTree(100); !got[101] {
		t.Errorf("tree under login: %v", got)
	}
}
