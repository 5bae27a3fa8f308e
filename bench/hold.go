package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// The idle sessions are held by a child process, as other machines would
// hold them: 10,000 client connections in the load generator's process
// would have its garbage collector scan them for every one-shot it runs,
// on the cores the servers are measured on.

// holdEnv names the environment variables that make the bench a holder.
const (
	holdAddrEnv = "TSADMIN_BENCH_HOLD_ADDR"
	holdUserEnv = "TSADMIN_BENCH_HOLD_USER"
	holdKeyEnv  = "TSADMIN_BENCH_HOLD_KEY"
)

// holder is a child process that holds idle interactive sessions on one
// server: each number written to it is the total to hold, and it answers
// with how many it holds; closing its input closes them all and ends it.
type holder struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startHolder starts a holder for s; the bench's cleanup ends it by its
// PID if the run is interrupted.
func (b *bench) startHolder(s *server) (*holder, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), holdAddrEnv+"="+s.addr, holdUserEnv+"="+s.user, holdKeyEnv+"="+b.keyFile)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.holders = append(b.holders, cmd)
	b.mu.Unlock()
	return &holder{cmd: cmd, in: in, out: bufio.NewScanner(out)}, nil
}

// hold asks for n sessions in all and returns how many are held.
func (h *holder) hold(n int) int {
	fmt.Fprintln(h.in, n)
	if !h.out.Scan() {
		return 0
	}
	held, _ := strconv.Atoi(strings.TrimSpace(h.out.Text()))
	return held
}

// stop closes the sessions and waits for the holder to end.
func (h *holder) stop() {
	h.in.Close()
	h.cmd.Wait()
}

// runHolder is the holder's side; it returns false when the process is
// not a holder.
func runHolder() bool {
	addr := os.Getenv(holdAddrEnv)
	if addr == "" {
		return false
	}
	raw, err := os.ReadFile(os.Getenv(holdKeyEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench holder:", err)
		os.Exit(1)
	}
	signer, err := ssh.ParsePrivateKey(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench holder:", err)
		os.Exit(1)
	}
	cfg := &ssh.ClientConfig{
		User: os.Getenv(holdUserEnv), Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second,
	}
	var clients []*ssh.Client
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		n, _ := strconv.Atoi(strings.TrimSpace(in.Text()))
		clients = append(clients, openMany(addr, cfg, n-len(clients))...)
		fmt.Println(len(clients))
	}
	for _, c := range clients {
		c.Close()
	}
	return true
}
