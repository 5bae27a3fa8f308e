// Package e2e drives the real tsadmin binary with the real OpenSSH client
// (ssh, sftp) on 127.0.0.1. TestMain builds the binary once and installs
// the client if it is missing.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/shell"
)

var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if _, err := exec.LookPath("ssh"); err != nil {
		if out, err := exec.Command("../scripts/install-deps").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: installing the OpenSSH client failed: %v\n%s", err, out)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "tsadmin-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "tsadmin")
	build := exec.Command("go", "build", "-o", binary, "..")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// Key is an admin's key pair on disk, for ssh -i, and in memory, for Go
// clients.
type Key struct {
	Path   string // private key file
	Public string // authorized_keys line
	Signer ssh.Signer
}

func newKey(t testing.TB, dir, name string) Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pemEncode(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " " + name
	if err := os.WriteFile(path+".pub", []byte(pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Key{Path: path, Public: pub, Signer: signer}
}

// Server is a running tsadmin.
type Server struct {
	t      testing.TB
	Dir    string
	Addr   string
	Port   string
	Config string
	cmd    *exec.Cmd
	logMu  sync.Mutex
	log    bytes.Buffer
	done   chan struct{}
}

// startServer writes config (YAML, with listen and host_key filled in if
// absent) into a temporary directory and starts tsadmin on it.
func startServer(t testing.TB, dir, config string) *Server {
	t.Helper()
	if !strings.Contains(config, "listen:") {
		config = "listen: 127.0.0.1:0\n" + config
	}
	if !strings.Contains(config, "audit:") {
		config += "\naudit:\n  file: audit.log\n"
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, Dir: dir, Config: path, done: make(chan struct{})}
	// TSADMIN_SERVER_ARGS adds flags, for profiling: -cpuprofile FILE.
	s.cmd = exec.Command(binary, append([]string{"-config", path}, strings.Fields(os.Getenv("TSADMIN_SERVER_ARGS"))...)...)
	s.cmd.Dir = dir
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`msg="tsadmin listening".* addr=(127\.0\.0\.1:\d+)`)
		for sc.Scan() {
			line := sc.Text()
			s.logMu.Lock()
			s.log.WriteString(line + "\n")
			s.logMu.Unlock()
			if m := re.FindStringSubmatch(line); m != nil {
				addrCh <- m[1]
			}
		}
		close(addrCh)
	}()
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(s.Stop)
	select {
	case addr, ok := <-addrCh:
		if !ok {
			t.Fatalf("tsadmin exited before listening:\n%s", s.Log())
		}
		s.Addr = addr
		s.Port = addr[strings.LastIndex(addr, ":")+1:]
	case <-time.After(10 * time.Second):
		t.Fatalf("tsadmin did not start:\n%s", s.Log())
	}
	return s
}

// Log is what the server wrote to stderr so far.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// Stop ends the server by its own PID, gracefully first.
func (s *Server) Stop() {
	if s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Signal sends a signal to the server process.
func (s *Server) Signal(sig os.Signal) { s.cmd.Process.Signal(sig) }

// Audit returns the audit records written so far.
func (s *Server) Audit() []map[string]any {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "audit.log"))
	var out []map[string]any
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			s.t.Errorf("audit line is not JSON: %q", line)
			continue
		}
		out = append(out, m)
	}
	return out
}

// sshArgs are the OpenSSH client options every test uses.
func (s *Server) sshArgs(key Key, extra ...string) []string {
	args := []string{
		"-p", s.Port, "-i", key.Path,
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
	}
	return append(args, extra...)
}

// Result is a finished ssh run.
type Result struct {
	Stdout, Stderr string
	Status         int
}

// Run runs `ssh admin@127.0.0.1 ARGS...` with stdin, and waits (at most 30s).
func (s *Server) Run(key Key, stdin string, args ...string) Result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append(s.sshArgs(key), append([]string{"admin@127.0.0.1"}, args...)...)
	cmd := exec.CommandContext(ctx, "ssh", all...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	status := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		status = exit.ExitCode()
	} else if err != nil {
		s.t.Fatalf("ssh: %v", err)
	}
	return Result{Stdout: stdout.String(), Stderr: stderr.String(), Status: status}
}

// Interactive is a live `ssh -tt` session whose input the test holds.
type Interactive struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	done  chan struct{}
}

// Open starts an interactive session (a PTY is requested with -tt) and
// waits until its prompt appears.
func (s *Server) Open(key Key) *Interactive {
	s.t.Helper()
	all := append(s.sshArgs(key, "-tt"), "admin@127.0.0.1")
	cmd := exec.Command("ssh", all...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	it := &Interactive{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	cmd.Stdout = &lockedWriter{it: it}
	cmd.Stderr = &lockedWriter{it: it}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(it.done)
	}()
	s.t.Cleanup(it.Close)
	if !it.WaitFor("> ", 10*time.Second) {
		s.t.Fatalf("no prompt from the interactive session; output: %q\nserver log:\n%s", it.Output(), s.Log())
	}
	return it
}

type lockedWriter struct{ it *Interactive }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.it.mu.Lock()
	defer w.it.mu.Unlock()
	return w.it.out.Write(p)
}

// Send types a line.
func (it *Interactive) Send(line string) { io.WriteString(it.stdin, line+"\r") }

// Output is everything the session printed so far.
func (it *Interactive) Output() string {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.out.String()
}

// WaitFor waits until the output contains s.
func (it *Interactive) WaitFor(s string, timeout time.Duration) bool {
	return waitUntil(timeout, func() bool { return strings.Contains(it.Output(), s) })
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// Exited waits up to timeout for the ssh client to exit.
func (it *Interactive) Exited(timeout time.Duration) bool {
	select {
	case <-it.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ExitCode is the client's exit status, once it has exited.
func (it *Interactive) ExitCode() int { return it.cmd.ProcessState.ExitCode() }

// Close ends the client by its own PID.
func (it *Interactive) Close() {
	it.stdin.Close()
	if !it.Exited(2 * time.Second) {
		it.cmd.Process.Kill()
		<-it.done
	}
}

// session is one row of the JSON listing: the server's own stable form.
type session = shell.JSONSession

// List returns the sessions as key's identity sees them.
func (s *Server) List(key Key) []session {
	s.t.Helper()
	r := s.Run(key, "", "query", "session", "/fo:json")
	if r.Status != 0 {
		s.t.Fatalf("query session /fo:json: status %d: %s", r.Status, r.Stderr)
	}
	var out []session
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		s.t.Fatalf("query session /fo:json: %v\n%s", err, r.Stdout)
	}
	return out
}

// sessionsOf returns the tsadmin sessions of an admin, other than the
// listing's own.
func sessionsOf(list []session, user string) []session {
	var out []session
	for _, s := range list {
		if s.User == user && !s.Current {
			out = append(out, s)
		}
	}
	return out
}
