// Package sshdtest runs a real OpenSSH sshd on 127.0.0.1 for tests, with
// throwaway Unix users and real login sessions (ssh -tt makes a pts and a
// utmp record; ssh -T makes a session without a terminal). Everything it
// makes (users, homes, processes, files) is removed when the test ends;
// processes are ended by their own PIDs.
package sshdtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// UtmpPath is the utmp file sshd writes and the host source reads.
const UtmpPath = "/var/run/utmp"

// Require fails the test unless it runs as root with sshd installed; it
// installs the OpenSSH server when it is missing (scripts/install-deps).
func Require(t testing.TB, repoRoot string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("host session tests create users and start sshd: run them as root")
	}
	_, errSSHD := os.Stat("/usr/sbin/sshd")
	_, errUtmp := os.Stat(UtmpPath)
	if errSSHD != nil || errUtmp != nil {
		// install-deps installs the OpenSSH server and makes utmp, as
		// systemd-tmpfiles would at boot: a machine's file, not a test's.
		out, err := exec.Command(filepath.Join(repoRoot, "scripts/install-deps")).CombinedOutput()
		if err != nil {
			t.Fatalf("scripts/install-deps: %v\n%s", err, out)
		}
	}
}

// SSHD is a running sshd.
type SSHD struct {
	t    testing.TB
	Dir  string
	Port string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
}

// Start starts sshd with UsePAM yes (the Debian default) on a free port.
func Start(t testing.TB) *SSHD {
	t.Helper()
	os.MkdirAll("/run/sshd", 0o755)
	dir := openDir(t)
	keys := filepath.Join(dir, "keys")
	os.MkdirAll(keys, 0o755)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "host_key")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		cfg := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s/host_key
PidFile none
UsePAM yes
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile %s/%%u
StrictModes no
PrintMotd no
MaxStartups 500:30:1000
MaxSessions 50
LogLevel ERROR
`, port, dir, keys)
		os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o644)
		s := &SSHD{t: t, Dir: dir, Port: port, log: &bytes.Buffer{}, done: make(chan struct{})}
		s.cmd = exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
		s.cmd.Stderr = &lockedBuffer{s: s}
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("sshd: %v", err)
		}
		go func() { s.cmd.Wait(); close(s.done) }()
		if waitPort("127.0.0.1:"+port, 5*time.Second) {
			t.Cleanup(s.stop)
			return s
		}
		s.stop()
	}
	t.Fatal("sshd did not start")
	return nil
}

type lockedBuffer struct{ s *SSHD }

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	return b.s.log.Write(p)
}

// Log is what sshd logged.
func (s *SSHD) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

func (s *SSHD) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// openDir makes a temporary directory that the users' own sshd
// processes can read (t.TempDir's parent is private to root).
func openDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "sshdtest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func waitPort(addr string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// User is a throwaway Unix user who may log in with Key.
type User struct {
	Name string
	UID  int
	Key  string // private key file
}

// AddUser creates a user named prefix plus random hex (at most 32
// characters), with a home in a temporary directory and a key.
func (s *SSHD) AddUser(t testing.TB, prefix string) User {
	t.Helper()
	u := addUser(t, prefix, filepath.Join(s.Dir, "home"))
	name := u.Name
	key := filepath.Join(s.Dir, "key-"+name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pub, _ := os.ReadFile(key + ".pub")
	os.WriteFile(filepath.Join(s.Dir, "keys", name), pub, 0o644)
	u.Key = key
	return u
}

// NewUser creates a throwaway user, as AddUser does, for tests that need
// a local user but no sshd; it has no key.
func NewUser(t testing.TB, prefix string) User {
	t.Helper()
	return addUser(t, prefix, openDir(t))
}

// addUser creates the user prefix plus random hex with a home under
// homes, and removes it (and ends its processes) when the test ends.
func addUser(t testing.TB, prefix, homes string) User {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	home := filepath.Join(homes, name)
	os.MkdirAll(homes, 0o755)
	if out, err := exec.Command("useradd", "-m", "-d", home, "-s", "/bin/bash", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v %s", name, err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	t.Cleanup(func() {
		KillUser(uid)
		exec.Command("userdel", "-r", "-f", name).Run()
	})
	return User{Name: name, UID: uid}
}

// KillUser ends every process of a uid, by PID, and waits for them.
func KillUser(uid int) {
	for i := 0; i < 50; i++ {
		pids := PIDsOf(uid)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PIDsOf lists the live (not zombie) processes owned by uid.
func PIDsOf(uid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var puid int = -1
		zombie := false
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "Uid:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					puid, _ = strconv.Atoi(f[0])
				}
			}
			if strings.HasPrefix(l, "State:") && strings.Contains(l, "Z") {
				zombie = true
			}
		}
		if puid == uid && !zombie {
			out = append(out, pid)
		}
	}
	return out
}

// Login is a live ssh client logged in to the sshd.
type Login struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan struct{}
}

// Login logs u in. With tty, ssh -tt gives the session a pts (and a utmp
// record); without, ssh -T makes a session with no terminal. command runs
// as the remote command ("" for a login shell).
func (s *SSHD) Login(t testing.TB, u User, tty bool, command string) *Login {
	t.Helper()
	mode := "-T"
	if tty {
		mode = "-tt"
	}
	args := []string{mode, "-p", s.Port, "-i", u.Key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "BatchMode=yes", u.Name + "@127.0.0.1"}
	if command != "" {
		args = append(args, command)
	}
	l := &Login{cmd: exec.Command("ssh", args...), done: make(chan struct{})}
	l.stdin, _ = l.cmd.StdinPipe()
	l.cmd.Stdout = writer{l}
	l.cmd.Stderr = writer{l}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.cmd.Wait(); close(l.done) }()
	t.Cleanup(l.Close)
	return l
}

// LoginReady logs u in and waits until the session runs: with tty, a
// login shell that has run setup; without, a remote command that runs
// setup and then sleeps. setup may be empty.
func (s *SSHD) LoginReady(t testing.TB, u User, tty bool, setup string) *Login {
	t.Helper()
	var l *Login
	var ok bool
	if tty {
		l = s.Login(t, u, true, "")
		ok = l.Run(setup, 10*time.Second)
	} else {
		if setup != "" {
			setup += "\n" // a line of its own: it may end with &
		}
		l = s.Login(t, u, false, setup+"echo "+readyCommand+"; sleep 1000")
		ok = l.waitFrom(0, readyOutput, 10*time.Second)
	}
	if !ok {
		t.Fatalf("%s could not log in: %q\n%s", u.Name, l.Output(), s.Log())
	}
	return l
}

// readyCommand, given to echo, prints readyOutput. Only a shell that has
// run it prints that: a terminal echoes the typed line at once, before the
// shell reads it, so a marker that appears in the typed line itself (echo
// READY) shows up before the commands typed before it have run.
const (
	readyCommand = `$((6*7))"OK"`
	readyOutput  = "42OK"
)

// Run types line (may be empty, may end with &) into a terminal session
// and waits up to d until the shell has run it: until the shell prints a
// marker that the terminal's echo of the typed text cannot contain.
func (l *Login) Run(line string, d time.Duration) bool {
	from := len(l.Output())
	if line != "" {
		line += "\n" // a line of its own: it may end with &
	}
	l.Send(line + "echo " + readyCommand)
	return l.waitFrom(from, readyOutput, d)
}

type writer struct{ l *Login }

func (w writer) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	return w.l.out.Write(p)
}

// Send types a line into the session.
func (l *Login) Send(line string) { io.WriteString(l.stdin, line+"\n") }

// Output is what the session printed so far.
func (l *Login) Output() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.String()
}

// WaitFor waits until the output contains s. On a terminal, text that
// was typed shows at once (the terminal echoes it): to wait until the
// shell has run a line, use Run.
func (l *Login) WaitFor(s string, d time.Duration) bool {
	return l.waitFrom(0, s, d)
}

// waitFrom waits until the output from byte from on contains s.
func (l *Login) waitFrom(from int, s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(l.Output()[from:], s) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Exited waits up to d for the ssh client to exit.
func (l *Login) Exited(d time.Duration) bool {
	select {
	case <-l.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Close ends the client by its own PID.
func (l *Login) Close() {
	l.stdin.Close()
	if !l.Exited(time.Second) {
		l.cmd.Process.Kill()
		<-l.done
	}
}

// PID is the listening sshd's process ID.
func (s *SSHD) PID() int { return s.cmd.Process.Pid }
