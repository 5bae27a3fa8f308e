package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// server is one server under test: its process, where it listens, whom
// to log in as, and what the load generator measured on it.
type server struct {
	name  string
	addr  string
	user  string
	audit string // tsadmin's audit log, which times commands on the server; empty for the others
	cmd   *exec.Cmd
	done  chan struct{} // closed when the process has exited
	load  result
}

// startServers starts tsadmin, the bare server and sshd, each on its own
// port of 127.0.0.1.
func (b *bench) startServers() error {
	var err error
	if b.tsadmin, err = b.startTsadmin(); err != nil {
		return err
	}
	if b.bare, err = b.startBare(); err != nil {
		return err
	}
	if b.opt.openssh {
		b.openssh, err = b.startOpenSSH()
	}
	return err
}

// launch starts a server's process and records it for cleanup before
// anything else can fail.
func (b *bench) launch(s *server) error {
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	s.done = make(chan struct{})
	b.mu.Lock()
	b.started = append(b.started, s)
	b.mu.Unlock()
	go func() { s.cmd.Wait(); close(s.done) }()
	return nil
}

// startAnnounced runs a server process that prints its address, and waits
// for the line that gives it (on stderr or stdout), for up to 15 seconds.
func (b *bench) startAnnounced(s *server, addrRE *regexp.Regexp, fromStderr bool) error {
	var pipe io.ReadCloser
	var err error
	if fromStderr {
		pipe, err = s.cmd.StderrPipe()
	} else {
		pipe, err = s.cmd.StdoutPipe()
	}
	if err != nil {
		return err
	}
	if err := b.launch(s); err != nil {
		return err
	}
	found := make(chan string, 1)
	go func() {
		// Reads to the end, so that the server never blocks on a full pipe.
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case s.addr = <-found:
		return nil
	case <-time.After(15 * time.Second):
		return fmt.Errorf("%s did not start", s.name)
	}
}

func (b *bench) startTsadmin() (*server, error) {
	dir := filepath.Join(b.tmp, "tsadmin-run")
	os.MkdirAll(dir, 0o700)
	cfg := fmt.Sprintf(`name: BENCH
listen: 127.0.0.1:0
sessions: { sources: [%s] }
roles: { operator: { logoff: ["*"] } }
admins:
  - { name: bench, role: operator, keys: [%q] }
limits: { max_startups: 200, max_startups_per_source: 200 }
audit: { file: audit.log }
`, b.opt.sources, b.pub)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	args := []string{"-config", filepath.Join(dir, "config.yaml")}
	if b.opt.cpuprofile != "" {
		prof, err := filepath.Abs(b.opt.cpuprofile)
		if err != nil {
			return nil, err
		}
		args = append(args, "-cpuprofile", prof)
	}
	cmd := exec.Command(filepath.Join(b.tmp, "tsadmin"), args...)
	cmd.Dir = dir
	s := &server{name: "tsadmin", user: "bench", audit: filepath.Join(dir, "audit.log"), cmd: cmd}
	return s, b.startAnnounced(s, regexp.MustCompile(`msg="tsadmin listening".* addr=(127\.0\.0\.1:\d+)`), true)
}

func (b *bench) startBare() (*server, error) {
	cmd := exec.Command(filepath.Join(b.tmp, "bare"), "-key", filepath.Join(b.tmp, "client.pub"), "-hostkey", b.hostKey)
	s := &server{name: "bare gliderlabs/ssh", user: "bench", cmd: cmd}
	return s, b.startAnnounced(s, regexp.MustCompile(`^(127\.0\.0\.1:\d+)$`), false)
}

// startOpenSSH runs sshd with a ForceCommand script that lists sessions:
// what an admin would build instead of tsadmin.
func (b *bench) startOpenSSH() (*server, error) {
	dir := filepath.Join(b.tmp, "sshd")
	os.MkdirAll(dir, 0o755)
	os.Chmod(b.tmp, 0o755)
	os.MkdirAll("/run/sshd", 0o755)
	script := filepath.Join(dir, "list-sessions")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'USER TTY LOGIN@ FROM'\nwho\n"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(b.pub+"\n"), 0o644); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s
PidFile none
UsePAM yes
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile %s/authorized_keys
StrictModes no
ForceCommand %s
MaxStartups 200
MaxSessions 100
LogLevel ERROR
`, port, b.hostKey, dir, script)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	s := &server{name: "OpenSSH+ForceCommand", user: "root", cmd: cmd, addr: "127.0.0.1:" + port}
	if err := b.launch(s); err != nil {
		return nil, err
	}
	for range 100 {
		if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			c.Close()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("sshd did not start")
}

// freePort finds a port on 127.0.0.1 that is free now, for sshd, which
// cannot be told to pick one and say which.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}
