package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// bench is one run: what the command line asked for, the scratch
// directory and the client key, the servers under test, and what was
// measured on them.
type bench struct {
	opt     options
	tmp     string     // scratch directory; cleanup removes it
	signer  ssh.Signer // the client key that all three servers accept
	keyFile string     // its private key, for the holders
	pub     string     // its authorized_keys line
	hostKey string     // the host key file that bare and sshd share

	tsadmin, bare, openssh *server

	// Figures from the held phase, a step per -held size; the load
	// figures are on each server.
	heldTsadmin, heldBare []heldStep
	rate0, bareRate0      float64 // one-shot conn/s with none held

	// mu guards started and holders, which cleanup may read from the
	// signal handler while a process is being started.
	mu      sync.Mutex
	started []*server
	holders []*exec.Cmd
}

func newBench(opt options) (*bench, error) {
	tmp, err := os.MkdirTemp("", "tsadmin-bench-")
	if err != nil {
		return nil, err
	}
	return &bench{opt: opt, tmp: tmp}, nil
}

// servers are the three in the order the table lists them.
// OpenSSH is left out when -openssh=false.
func (b *bench) servers() []*server {
	if b.openssh == nil {
		return []*server{b.tsadmin, b.bare}
	}
	return []*server{b.tsadmin, b.bare, b.openssh}
}

// run builds and starts the servers, measures them phase by phase and
// prints each phase's figures as it ends.
func (b *bench) run() error {
	raiseFileLimit()
	step("installing what the benchmark needs")
	if err := runQuiet("./scripts/install-deps"); err != nil {
		return err
	}
	step("building tsadmin and the bare server")
	if err := runQuiet("go", "build", "-o", filepath.Join(b.tmp, "tsadmin"), "."); err != nil {
		return err
	}
	if err := runQuiet("go", "build", "-o", filepath.Join(b.tmp, "bare"), "./bench/bare"); err != nil {
		return err
	}
	if err := b.makeKeys(); err != nil {
		return err
	}
	if err := b.startServers(); err != nil {
		return err
	}

	step(fmt.Sprintf("load: %d rounds of %d connections per server, %d at a time, one `query session` each", b.opt.rounds, b.opt.count, b.opt.concurrency))
	b.measureLoad()
	b.printLoad()

	step(fmt.Sprintf("held: idle interactive sessions held in steps of %v; memory, query session and one-shot conn/s at each", b.opt.held))
	b.heldTsadmin, b.rate0 = b.holdSteps(b.tsadmin)
	b.heldBare, b.bareRate0 = b.holdSteps(b.bare)
	b.printHeld()
	b.printMachine()
	return nil
}

// makeKeys writes the client's public key (which bare reads) and the
// shared host key.
func (b *bench) makeKeys() error {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	b.signer = signer
	block, err := ssh.MarshalPrivateKey(priv, "bench client")
	if err != nil {
		return err
	}
	b.keyFile = filepath.Join(b.tmp, "client_key")
	if err := os.WriteFile(b.keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	b.pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	if err := os.WriteFile(filepath.Join(b.tmp, "client.pub"), []byte(b.pub+"\n"), 0o644); err != nil {
		return err
	}
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err = ssh.MarshalPrivateKey(hostPriv, "bench")
	if err != nil {
		return err
	}
	b.hostKey = filepath.Join(b.tmp, "host_key")
	return os.WriteFile(b.hostKey, pem.EncodeToMemory(block), 0o600)
}

// cleanup ends every server this run started, by its PID (SIGTERM, then
// SIGKILL after 5 seconds), and removes the scratch directory. It may run
// twice (the signal handler and main), and the second does nothing new.
func (b *bench) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.started {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
		}
	}
	b.started = nil
	for _, h := range b.holders {
		h.Process.Kill() // gone already after a whole run
	}
	b.holders = nil
	os.RemoveAll(b.tmp)
}

// runQuiet runs a command to its end with its output on stderr, so that
// stdout carries only the table.
func runQuiet(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
