package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/federation"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/server"
	"github.com/tsadmin-dev/tsadmin/sessions"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// Issue 13: a fleet of 1,000 peers on a host CA. The peers are real
// tsadmin servers (server.New with federation's receiving side, each with
// its own host key, host certificate and 127.0.0.1 port), all in this
// test's process, since 1,000 tsadmin processes would need ~10 GB; the hub
// is the built binary, whose RSS is measured. TSADMIN_FLEET_PEERS sets the
// size (default 1000), TSADMIN_FLEET_CONCURRENT the hub's
// limits.relay_max_concurrent:
//
//	TSADMIN_MEASURE=1 go test ./e2e -run MeasureFleet -v
func TestMeasureFleet(t *testing.T) {
	measuring(t)
	n := 1000
	if v := os.Getenv("TSADMIN_FLEET_PEERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 4 || n > 5000 {
			t.Fatalf("TSADMIN_FLEET_PEERS=%q: want a number from 4 to 5000", v)
		}
	}
	dir := t.TempDir()
	alice, bob := newKey(t, dir, "alice"), newKey(t, dir, "bob")
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caKey)
	caLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.PublicKey())))
	common := fmt.Sprintf("trusted_host_ca_keys: [%q]\nroles:\n  operator: { logoff: [\"*\"] }\nadmins:\n"+
		"  - { name: alice, role: operator, keys: [%q] }\n  - { name: bob, role: operator, keys: [%q] }\n",
		caLine, alice.Public, bob.Public)

	// The peers' listeners first, for their addresses; then the hub, for
	// its own; then the one fleet file with every address.
	listeners := make([]net.Listener, n)
	for i := range listeners {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners[i] = l
	}
	hubDir := t.TempDir()
	hubKey := newKey(t, hubDir, "ssh_host_ed25519_key")
	writeHostCert(t, ca, hubKey.Signer, "hub", filepath.Join(hubDir, "ssh_host_ed25519_key-cert.pub"))
	hubConfig := "name: HUB\nhost_certificate: ssh_host_ed25519_key-cert.pub\n" + common
	if v := os.Getenv("TSADMIN_FLEET_CONCURRENT"); v != "" {
		hubConfig += "limits: { relay_max_concurrent: " + v + " }\n"
	}
	hub := startServer(t, hubDir, hubConfig)
	fleet := filepath.Join(dir, "fleet")
	var b strings.Builder
	fmt.Fprintf(&b, "HUB %s\n", hub.Addr)
	for i, l := range listeners {
		fmt.Fprintf(&b, "%s %s\n", peerName(i), l.Addr())
	}
	if err := os.WriteFile(fleet, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	peers := startPeers(t, dir, common+"servers_file: "+fleet+"\n", ca, listeners)
	t.Logf("%d peers started in %s", n, time.Since(start))
	hub.rewriteConfig(t, "listen: "+hub.Addr+"\n"+hubConfig+"servers_file: "+fleet+"\n")
	hub.Signal(sighup)
	if !hub.waitLog("configuration reloaded", 10*time.Second) {
		t.Fatalf("the hub did not take the fleet file: %s", hub.Log())
	}

	// bob is logged in on three peers.
	where := []int{n / 7, n / 2, n - 1}
	for _, i := range where {
		(&Server{t: t, Addr: listeners[i].Addr().String()}).ptyShell(t, bob)
	}

	c := hub.client(t, alice)
	rssBefore := rssKiB(t, hub)
	all := func() (time.Duration, string) {
		start := time.Now()
		out, errOut, status := runStatus(t, c, "query session /server:* /fo:json")
		took := time.Since(start)
		if status != 0 || errOut != "" {
			t.Fatalf("query session /server:*: status %d: %.500s", status, errOut)
		}
		return took, out
	}
	hubCPU, peersCPU := cpuOf(t, hub), selfCPU()
	cold, out := all()
	hubCPU, peersCPU = cpuOf(t, hub)-hubCPU, selfCPU()-peersCPU
	var list []session
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	servers := map[string]bool{}
	for _, s := range list {
		servers[s.Server] = true
	}
	// Every peer answered (status 0, nothing on stderr); the rows are
	// the hub's (alice's own session) and bob's three.
	if len(servers) != 1+len(where) || !servers["HUB"] {
		t.Fatalf("rows from %d servers, want %d: %v", len(servers), 1+len(where), servers)
	}
	var warm []time.Duration
	for i := 0; i < 5; i++ {
		d, _ := all()
		warm = append(warm, d)
	}
	rssAfter := rssKiB(t, hub)

	start = time.Now()
	out, errOut, status := runStatus(t, c, "query user bob /server:* /fo:json")
	userTook := time.Since(start)
	if status != 0 || errOut != "" {
		t.Fatalf("query user bob /server:*: %d %q", status, errOut)
	}
	list = nil
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, s := range list {
		found[s.Server] = true
	}
	for _, i := range where {
		if !found[peerName(i)] {
			t.Errorf("bob's session on %s is not listed: %s", peerName(i), out)
		}
	}
	if len(list) != len(where) {
		t.Errorf("query user bob /server:*: %d rows, want %d", len(list), len(where))
	}

	// A partial answer: ten peers stop; the others' rows stand, the ten
	// are named, status 7.
	stopped := 10
	for i := 0; i < stopped; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		peers[i].Shutdown(ctx)
		cancel()
	}
	start = time.Now()
	out, errOut, status = runStatus(t, c, "query session /server:*")
	partialTook := time.Since(start)
	if status != 7 || strings.Count(errOut, "\n") != stopped || !strings.Contains(errOut, "server "+peerName(0)+": ") {
		t.Errorf("ten peers down: status %d, stderr %q", status, errOut)
	}
	if !strings.Contains(out, peerName(n-1)) {
		t.Errorf("ten peers down: the others' rows are missing")
	}

	perPeer := float64(rssAfter-rssBefore) / float64(n)
	fmt.Printf("MEASURE fleet of %d peers on a host CA (2 cores, loopback):\n", n)
	fmt.Printf("MEASURE   query session /server:*  cold %s, warm median %s (runs: %v)\n", cold.Round(time.Millisecond), median(warm).Round(time.Millisecond), warm)
	fmt.Printf("MEASURE   cold CPU: hub %s, peers %s (all on the same 2 cores)\n", hubCPU, peersCPU)
	fmt.Printf("MEASURE   query user bob /server:* %s, %d rows\n", userTook.Round(time.Millisecond), len(list))
	fmt.Printf("MEASURE   %d peers down: %s, status %d\n", stopped, partialTook.Round(time.Millisecond), status)
	fmt.Printf("MEASURE   hub RSS %d KiB before, %d KiB with %d pooled peers: %.1f KiB per pooled peer\n", rssBefore, rssAfter, n, perPeer)
}

func peerName(i int) string { return fmt.Sprintf("P%04d", i) }

// runStatus runs a command on an open connection and returns its output
// and exit status.
func runStatus(t *testing.T, c *ssh.Client, cmd string) (string, string, int) {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var stdout, stderr strings.Builder
	sess.Stdout, sess.Stderr = &stdout, &stderr
	err = sess.Run(cmd)
	if e, ok := err.(*ssh.ExitError); ok {
		return stdout.String(), stderr.String(), e.ExitStatus()
	} else if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return stdout.String(), stderr.String(), 0
}

// writeHostCert certifies key as host name, the way ssh-keygen -s CA -h
// -n NAME does, and writes the -cert.pub file.
func writeHostCert(t *testing.T, ca ssh.Signer, key ssh.Signer, name, path string) *ssh.Certificate {
	t.Helper()
	cert := &ssh.Certificate{
		Key: key.PublicKey(), CertType: ssh.HostCert, KeyId: name, ValidPrincipals: []string{name},
		ValidAfter: uint64(time.Now().Add(-time.Hour).Unix()), ValidBefore: uint64(time.Now().Add(24 * time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	if path != "" {
		if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cert
}

// startPeers starts one real tsadmin server on each listener, in this
// process: its own name, host key and certificate, sessions and audited
// receiving side; one config text and policy for all.
func startPeers(t *testing.T, dir, cfgText string, ca ssh.Signer, listeners []net.Listener) []*server.Server {
	t.Helper()
	cfg, err := config.Parse([]byte("name: "+peerName(0)+"\n"+cfgText), filepath.Join(dir, "peer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := keys.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	auditLog, err := audit.Open(filepath.Join(dir, "peers-audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auditLog.Close() })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	peers := make([]*server.Server, len(listeners))
	for i, l := range listeners {
		mine := *cfg
		mine.Name = peerName(i)
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		hostKey, _ := ssh.NewSignerFromKey(priv)
		certSigner, err := ssh.NewCertSigner(writeHostCert(t, ca, hostKey, strings.ToLower(mine.Name), ""), hostKey)
		if err != nil {
			t.Fatal(err)
		}
		registry := sessions.NewRegistry()
		shells := sessions.NewShellSource(registry)
		registry.AddSource(shells)
		env := &shell.Env{
			Server: mine.Name, Registry: registry, Shells: shells, Audit: auditLog, Log: quiet,
			Policy: func() *keys.Policy { return policy },
			Grace:  time.Second, Idle: func() time.Duration { return 15 * time.Minute },
		}
		srv := server.New(server.Options{
			Config: &mine, Policy: policy, HostKey: hostKey, HostCert: func() ssh.Signer { return certSigner },
			Audit: auditLog, Log: quiet, Env: env, Relayed: &federation.Receiver{Env: env},
		})
		go srv.Serve(l)
		peers[i] = srv
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			srv.Shutdown(ctx)
			cancel()
		})
	}
	return peers
}

// cpuOf is the CPU time (user and system) a running tsadmin has used.
func cpuOf(t *testing.T, s *Server) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// selfCPU is the CPU time this process (the peers) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssKiB is the resident set of a running tsadmin, from /proc.
func rssKiB(t *testing.T, s *Server) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kib
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
