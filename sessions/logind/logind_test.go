package logind

// No systemd-logind runs on this machine, so these tests run against a
// test double: a fake org.freedesktop.login1 on a private dbus-daemon. Each
// test says so in its name (TestLogindDouble_...).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

// privateBus starts a dbus-daemon of its own and returns its address.
func privateBus(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		if out, err := exec.Command("../../scripts/install-deps").CombinedOutput(); err != nil {
			t.Fatalf("installing dbus-daemon: %v %s", err, out)
		}
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=`+filepath.Join(dir, "bus")+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`), 0o600)
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--print-address=1")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon printed no address: %v", err)
	}
	return strings.TrimSpace(line)
}

// fakeLogind is the double: a session table behind the login1 names.
type fakeLogind struct {
	mu       sync.Mutex
	sessions map[string]map[string]dbus.Variant
	users    map[string]string
	deny     bool     // answer TerminateSession with AccessDenied, as polkit would
	killed   []string // KillSession calls, as "id who signal"
	conn     *dbus.Conn
}

type listEntry struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

func sessionPath(id string) dbus.ObjectPath {
	return dbus.ObjectPath("/org/freedesktop/login1/session/_" + id)
}

func (f *fakeLogind) ListSessions() ([]listEntry, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []listEntry
	for id := range f.sessions {
		out = append(out, listEntry{ID: id, UID: 1000, User: f.users[id], Seat: "", Path: sessionPath(id)})
	}
	return out, nil
}

func (f *fakeLogind) TerminateSession(id string) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deny {
		return dbus.NewError("org.freedesktop.DBus.Error.AccessDenied", []any{"Permission denied"})
	}
	if _, ok := f.sessions[id]; !ok {
		return dbus.NewError("org.freedesktop.login1.NoSuchSession", []any{"No session " + id})
	}
	delete(f.sessions, id)
	return nil
}

func (f *fakeLogind) KillSession(id, who string, signal int32) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id]; !ok {
		return dbus.NewError("org.freedesktop.login1.NoSuchSession", []any{"No session " + id})
	}
	f.killed = append(f.killed, fmt.Sprintf("%s %s %d", id, who, signal))
	return nil
}

type fakeProps struct {
	f  *fakeLogind
	id string
}

func (p fakeProps) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	props, ok := p.f.sessions[p.id]
	if !ok || iface != sessionIface {
		return nil, dbus.NewError("org.freedesktop.DBus.Error.UnknownObject", []any{"gone"})
	}
	return props, nil
}

func (f *fakeLogind) add(id, user, tty, service, class string, leader uint32, idle bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions[id] = map[string]dbus.Variant{
		"Id": dbus.MakeVariant(id), "Name": dbus.MakeVariant(user), "TTY": dbus.MakeVariant(tty),
		"RemoteHost": dbus.MakeVariant("192.0.2.7"), "Service": dbus.MakeVariant(service),
		"Type": dbus.MakeVariant("tty"), "Class": dbus.MakeVariant(class), "State": dbus.MakeVariant("active"),
		"Timestamp": dbus.MakeVariant(uint64(time.Now().Add(-time.Hour).UnixMicro())),
		"IdleHint":  dbus.MakeVariant(idle), "IdleSinceHint": dbus.MakeVariant(uint64(time.Now().Add(-10 * time.Minute).UnixMicro())),
		"Leader": dbus.MakeVariant(leader), "Remote": dbus.MakeVariant(true),
	}
	f.users[id] = user
	f.conn.Export(fakeProps{f: f, id: id}, sessionPath(id), "org.freedesktop.DBus.Properties")
}

// startDouble runs the fake logind on a private bus and returns a client
// connection to that bus.
func startDouble(t *testing.T) (*fakeLogind, *dbus.Conn) {
	t.Helper()
	addr := privateBus(t)
	server, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	f := &fakeLogind{sessions: map[string]map[string]dbus.Variant{}, users: map[string]string{}, conn: server}
	if err := server.Export(f, managerPath, managerIface); err != nil {
		t.Fatal(err)
	}
	if reply, err := server.RequestName(busName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", reply, err)
	}
	client, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return f, client
}

func TestLogindDouble_ListMapsProperties(t *testing.T) {
	f, conn := startDouble(t)
	f.add("3", "bob", "pts/4", "sshd", "user", 4242, false)
	f.add("c1", "carol", "", "cron", "user", 4343, true)
	src := New(conn, time.Second)
	if err := src.Available(context.Background()); err != nil {
		t.Fatalf("the double is not available: %v", err)
	}
	list, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]sessions.Session{}
	for _, s := range list {
		got[s.User] = s
	}
	bob, carol := got["bob"], got["carol"]
	if bob.Name != "pts/4" || bob.Type != "sshd" || bob.Device != "192.0.2.7" || bob.State != sessions.Active || bob.LogonTime.IsZero() {
		t.Errorf("bob: %+v", bob)
	}
	if carol.Name != "session-c1" || carol.Type != "cron" || carol.State != sessions.Active || carol.IdleTime < 9*time.Minute {
		t.Errorf("carol (no tty, idle): %+v", carol)
	}
	ttys, leaders, err := src.Claims(context.Background())
	if err != nil || !ttys["pts/4"] || !leaders[4242] || !leaders[4343] || ttys["session-c1"] {
		t.Errorf("claims: %v %v %v", ttys, leaders, err)
	}
}

func TestLogindDouble_ClassFilter(t *testing.T) {
	f, conn := startDouble(t)
	f.add("1", "gdm", "tty1", "gdm-launch-environment", "greeter", 10, false)
	f.add("2", "alice", "tty2", "login", "user", 11, false)
	f.add("3", "alice", "", "systemd-user", "manager", 12, false)
	f.add("4", "alice", "", "", "lock-screen", 13, false)
	list, err := New(conn, time.Second).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].User != "alice" || list[0].Name != "tty2" {
		t.Fatalf("only logins are listed, not greeters, lock screens or the user manager: %+v", list)
	}
}

// Background sessions (cron) are listed, as the host source lists them,
// with a TYPE that says they are background ones, and are claimed so that
// the host source does not list them a second time.
func TestLogindDouble_BackgroundSessionsAreListed(t *testing.T) {
	f, conn := startDouble(t)
	f.add("c7", "dave", "", "cron", "background", 4545, false)
	f.add("2", "alice", "tty2", "login", "user", 11, false)
	src := New(conn, time.Second)
	list, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var cron *sessions.Session
	for i := range list {
		if list[i].User == "dave" {
			cron = &list[i]
		}
	}
	if len(list) != 2 || cron == nil || cron.Type != "bg:cron" || cron.Name != "session-c7" {
		t.Fatalf("a cron session: %+v", list)
	}
	if _, leaders, err := src.Claims(context.Background()); err != nil || !leaders[4545] {
		t.Errorf("the background session is not claimed from the host source: %v %v", leaders, err)
	}
	if err := src.Logoff(context.Background(), *cron, sessions.LogoffRequest{}); err != nil {
		t.Errorf("logoff of a background session: %v", err)
	}
}

func TestLogindDouble_TerminateSession(t *testing.T) {
	f, conn := startDouble(t)
	f.add("7", "bob", "pts/1", "sshd", "user", 99, false)
	src := New(conn, time.Second)
	list, _ := src.List(context.Background())
	var steps []string
	err := src.Logoff(context.Background(), list[0], sessions.LogoffRequest{Report: func(format string, a ...any) { steps = append(steps, fmt.Sprintf(format, a...)) }})
	if err != nil {
		t.Fatalf("logoff: %v", err)
	}
	if after, _ := src.List(context.Background()); len(after) != 0 {
		t.Errorf("the session is still listed: %+v", after)
	}
	if !strings.Contains(strings.Join(steps, "\n"), "terminate session 7") {
		t.Errorf("/v steps: %q", steps)
	}
}

// logoff /now: every process of the session gets SIGKILL through logind
// before the session is terminated; a plain logoff sends no KillSession.
func TestLogindDouble_NowKillsBeforeTerminating(t *testing.T) {
	f, conn := startDouble(t)
	f.add("7", "bob", "pts/1", "sshd", "user", 99, false)
	f.add("8", "bob", "pts/2", "sshd", "user", 98, false)
	src := New(conn, time.Second)
	list, _ := src.List(context.Background())
	for _, s := range list {
		if err := src.Logoff(context.Background(), s, sessions.LogoffRequest{Now: s.Name == "pts/1"}); err != nil {
			t.Fatalf("logoff of %s: %v", s.Name, err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.killed) != 1 || f.killed[0] != "7 all 9" {
		t.Fatalf("KillSession calls: %q, want one \"7 all 9\"", f.killed)
	}
	if len(f.sessions) != 0 {
		t.Errorf("sessions left: %v", f.sessions)
	}
}

func TestLogindDouble_PolkitRefusalIsPrivilegeError(t *testing.T) {
	f, conn := startDouble(t)
	f.add("7", "bob", "pts/1", "sshd", "user", 99, false)
	f.mu.Lock()
	f.deny = true
	f.mu.Unlock()
	src := New(conn, time.Second)
	list, _ := src.List(context.Background())
	err := src.Logoff(context.Background(), list[0], sessions.LogoffRequest{})
	if !errors.Is(err, sessions.ErrPrivilege) || !strings.Contains(err.Error(), "polkit") {
		t.Fatalf("a polkit refusal: %v", err)
	}
}

func TestLogindDouble_NoSuchSession(t *testing.T) {
	f, conn := startDouble(t)
	f.add("7", "bob", "pts/1", "sshd", "user", 99, false)
	src := New(conn, time.Second)
	list, _ := src.List(context.Background())
	f.TerminateSession("7") // it ends by itself meanwhile
	if err := src.Logoff(context.Background(), list[0], sessions.LogoffRequest{}); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("a session that ended meanwhile: %v", err)
	}
}

func TestLogindDouble_Unavailable(t *testing.T) {
	addr := privateBus(t) // a bus with nobody owning org.freedesktop.login1
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := New(conn, time.Second).Available(context.Background()); err == nil {
		t.Fatal("logind reported available on a bus without it")
	}
}
