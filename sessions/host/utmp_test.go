package host

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the utmp fixtures in testdata/")

// fixtureRecords are the records of the fixture files: one of each type,
// and hostile strings, as a crafted utmp could hold.
func fixtureRecords() []Record {
	at := time.Unix(1764000000, 123000)
	return []Record{
		{Type: loginProcess, PID: 10, Line: "tty1", ID: "1", User: "LOGIN", Time: at},
		{Type: userProcess, PID: 200, Line: "pts/3", ID: "ts/3", User: "bob", Host: "198.51.100.9", Session: 7, Time: at},
		{Type: deadProcess, PID: 201, Line: "pts/4", ID: "ts/4", Time: at},
		{Type: userProcess, PID: 300, Line: "tty2", ID: "2", User: "\x1b]0;x\x07eve", Host: "evil\r\nrow", Time: at},
		{Type: userProcess, PID: 0, Line: "pts/9", User: "nopid", Time: at}, // no pid: skipped
	}
}

func fixture(t *testing.T, size int) []byte {
	path := filepath.Join("testdata", "utmp"+map[int]string{Size384: "384", Size400: "400"}[size])
	if *update {
		var data []byte
		for _, r := range fixtureRecords() {
			data = append(data, Encode(r, size)...)
		}
		data = append(data, make([]byte, size/2)...) // a truncated tail
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (regenerate with go test -run Utmp -update)", err)
	}
	return data
}

func TestParseUtmpFixturesInBothSizes(t *testing.T) {
	for _, size := range []int{Size384, Size400} {
		data := fixture(t, size)
		if len(data)%size == 0 {
			t.Fatalf("the %d fixture should end with a truncated record", size)
		}
		got := Parse(data, size)
		if len(got) != 2 {
			t.Fatalf("size %d: want the 2 USER_PROCESS records with a pid, got %+v", size, got)
		}
		bob, eve := got[0], got[1]
		if bob.User != "bob" || bob.Line != "pts/3" || bob.Host != "198.51.100.9" || bob.PID != 200 || bob.Session != 7 {
			t.Errorf("size %d: %+v", size, bob)
		}
		if !bob.Time.Equal(time.Unix(1764000000, 123000)) {
			t.Errorf("size %d: time %v", size, bob.Time)
		}
		if eve.User != "\x1b]0;x\x07eve" || eve.Host != "evil\r\nrow" {
			t.Errorf("size %d: the strings must come back raw (the printers escape them): %+v", size, eve)
		}
		// The other layout reads garbage, but never panics and never
		// invents a session from the truncated tail.
		other := Size400
		if size == Size400 {
			other = Size384
		}
		_ = Parse(data, other)
	}
}

func TestMissingUtmpIsNoSessions(t *testing.T) {
	recs, err := ReadFile(filepath.Join(t.TempDir(), "nothing"), Size384)
	if err != nil || len(recs) != 0 {
		t.Fatalf("a missing utmp: %v %v", recs, err)
	}
}

func FuzzParseUtmp(f *testing.F) {
	for _, size := range []int{Size384, Size400} {
		var data []byte
		for _, r := range fixtureRecords() {
			data = append(data, Encode(r, size)...)
		}
		f.Add(data, size == Size400)
	}
	f.Add([]byte{7, 0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, data []byte, wide bool) {
		size := Size384
		if wide {
			size = Size400
		}
		for _, r := range Parse(data, size) {
			if r.Type != userProcess || r.PID <= 0 || r.Line == "" || r.User == "" {
				t.Fatalf("Parse returned a record it should have skipped: %+v", r)
			}
			if int(r.RecordOff)+size > len(data) {
				t.Fatalf("a record past the end: %+v", r)
			}
		}
	})
}

// Without audit session ids (no pam_loginuid), a session is its terminal's
// processes and the tree under its login manager.
func TestMembersWithoutAuditSessionIDs(t *testing.T) {
	procs := procTable{
		1:   {pid: 1, comm: "init", sessionID: noSession},
		100: {pid: 100, ppid: 1, comm: "sshd", start: 5, sessionID: noSession},
		101: {pid: 101, ppid: 100, comm: "bash", tty: 34816, start: 6, sessionID: noSession},
		102: {pid: 102, ppid: 101, comm: "vim", tty: 34816, start: 7, sessionID: noSession},
		103: {pid: 103, ppid: 1, comm: "nohup-job", tty: 34816, start: 8, sessionID: noSession}, // reparented, still on the tty
		104: {pid: 104, ppid: 100, comm: "daemonized", start: 9, sessionID: noSession},          // under the leader, no tty
		200: {pid: 200, ppid: 1, comm: "other", tty: 34817, start: 3, sessionID: noSession},
	}
	src := &Source{self: 999}
	h := session{leader: 100, leaderAt: 5, sessionID: noSession, tty: 34816}
	got := map[int]bool{}
	members := src.members(h, procs)
	for _, p := range members {
		got[p.pid] = true
	}
	for _, want := range []int{100, 101, 102, 103, 104} {
		if !got[want] {
			t.Errorf("process %d is not a member: %v", want, got)
		}
	}
	if got[1] || got[200] {
		t.Errorf("members include init or another session: %v", got)
	}
	if members[0].pid != 100 {
		t.Errorf("the login manager must come first, got %d", members[0].pid)
	}
}

func TestMembersNeverIncludeTsadminItself(t *testing.T) {
	procs := procTable{
		100: {pid: 100, ppid: 1, comm: "sshd", start: 5, sessionID: 42},
		101: {pid: 101, ppid: 100, comm: "tsadmin", start: 6, sessionID: 42},
	}
	src := &Source{self: 101}
	for _, p := range src.members(session{leader: 100, leaderAt: 5, sessionID: 42}, procs) {
		if p.pid == 101 {
			t.Fatal("tsadmin would signal itself")
		}
	}
}

func TestParseStatWithHostileCommandNames(t *testing.T) {
	p, ok := parseStat([]byte("123 (a) b (c) S 1 123 123 34816 0 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0"))
	if !ok || p.pid != 123 || p.comm != "a) b (c" || p.ppid != 1 || p.tty != 34816 || p.start != 4242 {
		t.Fatalf("%+v %v", p, ok)
	}
	if _, ok := parseStat([]byte("garbage")); ok {
		t.Fatal("garbage parsed")
	}
	if p.kthread {
		t.Error("flags 0 read as a kernel thread")
	}
	// kthreadd's flags: PF_KTHREAD and others.
	if p, ok := parseStat([]byte("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0")); !ok || !p.kthread {
		t.Errorf("kthreadd's stat: %+v %v, want a kernel thread", p, ok)
	}
}

// A kernel thread's sessionid is not read (it has no audit session); a
// process's is.
func TestKernelThreadsHaveNoAuditSession(t *testing.T) {
	kthreadd, ok := readProc("/proc", 2)
	if !ok || kthreadd.comm != "kthreadd" {
		t.Skip("no kthreadd at PID 2 in this PID namespace")
	}
	if !kthreadd.kthread || kthreadd.sessionID != noSession {
		t.Errorf("kthreadd: %+v, want a kernel thread with no audit session", kthreadd)
	}
	self, ok := readProc("/proc", os.Getpid())
	want, err := os.ReadFile("/proc/self/sessionid")
	if !ok || err != nil || self.kthread || strconv.FormatUint(self.sessionID, 10) != strings.TrimSpace(string(want)) {
		t.Errorf("this process: %+v (%v), want its sessionid %q", self, err, want)
	}
}

// A PID that now names another process (its start time differs from the
// one read) is never held, so never signalled.
func TestReusedPIDIsNeverSignalled(t *testing.T) {
	// Not root's: a process acts for root only through a trusted login.
	cmd := exec.Command("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	src := &Source{proc: "/proc", self: os.Getpid()}
	var now *proc
	for i := 0; i < 200 && (now == nil || now.comm != "sleep"); i++ { // until setpriv has become sleep
		now, _ = readProc("/proc", cmd.Process.Pid)
		time.Sleep(5 * time.Millisecond)
	}
	if now == nil || now.comm != "sleep" {
		t.Fatal("cannot read the child")
	}
	stale := *now
	stale.start++ // the process that was read had another start time
	h := session{owner: 65534}
	if held, _ := src.hold(h, []*proc{&stale}); len(held) != 0 {
		release(held)
		t.Fatal("a process whose start time changed was held for signalling")
	}
	held, _ := src.hold(h, []*proc{now})
	defer release(held)
	if len(held) != 1 {
		t.Fatal("the genuine process was not held")
	}
}
