package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// node is one server of a test fleet, before and after it starts.
type node struct {
	name    string
	dir     string
	hostKey Key // also the key it relays with
	addr    string
	*Server
}

// freeAddr returns a loopback address where nothing listens, for a peer
// that is configured but down.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startFederation starts servers named names, each listing all the others
// as peers. admins maps a server name to its admins: block; roles are
// operator (*) and viewer (none). The servers in down are configured as
// peers but not started. Each server first starts on a port of its own
// choosing; then every config gets the peers' addresses and a SIGHUP, so
// that no port is reserved ahead and lost to a race.
func startFederation(t *testing.T, names []string, admins map[string]string, down map[string]bool) map[string]*node {
	t.Helper()
	nodes := map[string]*node{}
	config := func(n, servers string) string {
		return fmt.Sprintf("name: %s\nroles:\n  operator: { logoff: [\"*\"] }\n  viewer: { logoff: [] }\nadmins:\n%s\n%s", n, admins[n], servers)
	}
	for _, n := range names {
		dir := t.TempDir()
		me := &node{name: n, dir: dir, hostKey: newKey(t, dir, "ssh_host_ed25519_key")}
		nodes[n] = me
		if down[n] {
			me.addr = freeAddr(t)
			continue
		}
		me.Server = startServer(t, dir, config(n, ""))
		me.addr = me.Server.Addr
	}
	for _, n := range names {
		if down[n] {
			continue
		}
		var peers strings.Builder
		peers.WriteString("servers:\n")
		for _, p := range names {
			if p != n {
				fmt.Fprintf(&peers, "  %s:\n    address: %s\n    host_key: %q\n", p, nodes[p].addr, pubOnly(nodes[p].hostKey.Public))
			}
		}
		me := nodes[n]
		me.rewriteConfig(t, "listen: 127.0.0.1:0\n"+config(n, peers.String()))
		me.Signal(sighup)
	}
	for _, n := range names {
		if !down[n] && !nodes[n].waitLog("configuration reloaded", 5*time.Second) {
			t.Fatalf("%s did not take its peers: %s", n, nodes[n].Log())
		}
	}
	return nodes
}

// pubOnly drops the comment of an authorized_keys line.
func pubOnly(line string) string {
	f := strings.Fields(line)
	return f[0] + " " + f[1]
}

type fedKeys struct{ alice, carol, dave Key }

func fedAdmins(t *testing.T) (fedKeys, map[string]string) {
	dir := t.TempDir()
	k := fedKeys{alice: newKey(t, dir, "alice"), carol: newKey(t, dir, "carol"), dave: newKey(t, dir, "dave")}
	entry := func(name, role string, key Key) string {
		return fmt.Sprintf("  - { name: %s, role: %s, keys: [%q] }\n", name, role, key.Public)
	}
	// alice is an operator everywhere; carol is an operator on A but a
	// viewer on B and C; dave exists only on A.
	a := entry("alice", "operator", k.alice) + entry("carol", "operator", k.carol) + entry("dave", "operator", k.dave)
	bc := entry("alice", "operator", k.alice) + entry("carol", "viewer", k.carol)
	return k, map[string]string{"A": a, "B": bc, "C": bc}
}

func TestRelayedListingAndLogoff(t *testing.T) {
	k, admins := fedAdmins(t)
	nodes := startFederation(t, []string{"A", "B"}, admins, nil)
	a, b := nodes["A"], nodes["B"]
	victim := b.Open(k.carol) // carol's interactive session on B

	r := a.Run(k.alice, "", "query", "session", "/server:b", "/fo:json")
	if r.Status != 0 {
		t.Fatalf("relayed listing: %d %s", r.Status, r.Stderr)
	}
	var list []session
	if err := json.Unmarshal([]byte(r.Stdout), &list); err != nil {
		t.Fatalf("%v: %s", err, r.Stdout)
	}
	var target *session
	for i := range list {
		if list[i].User == "carol" {
			target = &list[i]
		}
		if list[i].Server != "B" {
			t.Errorf("a row of B's listing says server %q", list[i].Server)
		}
	}
	if target == nil {
		t.Fatalf("carol's session on B is not in the relayed listing: %s", r.Stdout)
	}

	r = a.Run(k.alice, "", "logoff", fmt.Sprint(target.ID), "/server:B", "/v")
	if r.Status != 0 {
		t.Fatalf("relayed logoff: %d %s", r.Status, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "on server B") {
		t.Errorf("the /v report does not come from B: %q", r.Stdout)
	}
	if !victim.Exited(5 * time.Second) {
		t.Fatal("the target on B is still connected after a relayed logoff")
	}
	// Both sides audit.
	if !hasAudit(a.Audit(), func(m map[string]any) bool {
		return m["msg"] == "command" && m["admin"] == "alice" && m["status"] == 0.0 &&
			strings.Contains(fmt.Sprint(m["words"]), "/server:B")
	}) {
		t.Error("A did not audit the relay")
	}
	if !hasAudit(b.Audit(), func(m map[string]any) bool {
		return m["msg"] == "logoff.outcome" && m["via"] == "A" && m["admin"] == "alice" && m["result"] == "ok"
	}) {
		t.Error("B did not audit the relayed logoff with the relay and the original identity")
	}
}

func hasAudit(recs []map[string]any, match func(map[string]any) bool) bool {
	for _, r := range recs {
		if match(r) {
			return true
		}
	}
	return false
}

func TestPeerDecidesWithItsOwnRolesAndAdmins(t *testing.T) {
	k, admins := fedAdmins(t)
	nodes := startFederation(t, []string{"A", "B"}, admins, nil)
	a, b := nodes["A"], nodes["B"]
	victim := b.Open(k.alice)
	var id int
	for _, s := range b.List(k.alice) {
		if s.User == "alice" && !s.Current {
			id = s.ID
		}
	}
	// carol is an operator on A, but a viewer on B: B refuses.
	r := a.Run(k.carol, "", "logoff", fmt.Sprint(id), "/server:B")
	if r.Status != 5 || !strings.Contains(r.Stderr, "access denied") {
		t.Fatalf("viewer on B: want 5, got %d %q", r.Status, r.Stderr)
	}
	// dave is unknown on B.
	r = a.Run(k.dave, "", "query", "user", "/server:B")
	if r.Status != 5 || !strings.Contains(r.Stderr, "not known") {
		t.Fatalf("unknown on B: want 5, got %d %q", r.Status, r.Stderr)
	}
	if victim.Exited(300 * time.Millisecond) {
		t.Fatal("the target was disconnected by a refused relayed logoff")
	}
}

func TestUnreachableUnknownAndMispinnedServers(t *testing.T) {
	k, admins := fedAdmins(t)
	nodes := startFederation(t, []string{"A", "B", "C"}, admins, map[string]bool{"C": true})
	a := nodes["A"]
	for _, c := range []struct{ server, want string }{
		{"C", "unreachable"},
		{"WF99", "unknown server"},
	} {
		start := time.Now()
		r := a.Run(k.alice, "", "query", "user", "/server:"+c.server)
		took := time.Since(start)
		if r.Status != 7 || !strings.Contains(r.Stderr, c.want) || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
			t.Errorf("/server:%s: want 7 and one line with %q, got %d %q", c.server, c.want, r.Status, r.Stderr)
		}
		if took > 8*time.Second {
			t.Errorf("/server:%s took %s", c.server, took)
		}
	}

	// A wrong pinned host key: A pins a key that is not B's.
	dir := t.TempDir()
	wrong := newKey(t, dir, "wrong")
	cfg := mustRead(t, a.Config)
	cfg = strings.Replace(cfg, pubOnly(nodes["B"].hostKey.Public), pubOnly(wrong.Public), 1)
	a.rewriteConfig(t, cfg)
	a.Signal(sighup)
	if !a.waitLog("configuration reloaded", 5*time.Second) {
		t.Fatalf("no reload: %s", a.Log())
	}
	r := a.Run(k.alice, "", "query", "user", "/server:B")
	if r.Status != 7 || !strings.Contains(r.Stderr, "host key does not match") {
		t.Fatalf("wrong pinned key: want 7, got %d %q", r.Status, r.Stderr)
	}
}

// relayAs connects to a server with the given key as a relaying peer
// would, and sends a relay request.
func relayAs(t *testing.T, s *Server, key Key, req map[string]any) (string, int) {
	t.Helper()
	c, err := s.dial(t, "tsadmin-relay", ssh.PublicKeys(key.Signer))
	if err != nil {
		return err.Error(), 255
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	payload, _ := json.Marshal(req)
	out, err := sess.CombinedOutput(string(payload))
	if e, ok := err.(*ssh.ExitError); ok {
		return string(out), e.ExitStatus()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func TestOnlyPeersRelayAndNeverFurther(t *testing.T) {
	k, admins := fedAdmins(t)
	nodes := startFederation(t, []string{"A", "B", "C"}, admins, nil)
	a, b := nodes["A"], nodes["B"]
	// A relay names the key its admin used; B holds alice's key too.
	fp := ssh.FingerprintSHA256(k.alice.Signer.PublicKey())
	req := map[string]any{"tsadmin_relay": 1, "admin": "alice", "method": "key", "fingerprint": fp, "via": "A", "line": "query user"}

	// The genuine peer A may relay.
	if out, status := relayAs(t, b.Server, a.hostKey, req); status != 0 || !strings.Contains(out, "USERNAME") {
		t.Fatalf("A's relay refused: %d %q", status, out)
	}
	// An admin key cannot pose as a relay: the request is not a command.
	if out, status := relayAs(t, b.Server, k.carol, req); status != 2 {
		t.Errorf("carol posing as a relay: %d %q", status, out)
	}
	// A key that is nobody's is refused at authentication.
	stranger := newKey(t, t.TempDir(), "stranger")
	if _, status := relayAs(t, b.Server, stranger, req); status != 255 {
		t.Errorf("a stranger's relay got status %d", status)
	}
	// A peer that names another peer as the relay is refused.
	spoof := map[string]any{"tsadmin_relay": 1, "admin": "alice", "method": "key", "fingerprint": fp, "via": "C", "line": "query user"}
	if out, status := relayAs(t, b.Server, a.hostKey, spoof); status != 5 {
		t.Errorf("A claiming to be C: %d %q", status, out)
	}
	// A relayed command may not be relayed again: B refuses to pass
	// A's command on to C.
	chain := map[string]any{"tsadmin_relay": 1, "admin": "alice", "method": "key", "fingerprint": fp, "via": "A", "line": "query user /server:C"}
	out, status := relayAs(t, b.Server, a.hostKey, chain)
	if status != 7 || !strings.Contains(out, "cannot be relayed again") {
		t.Errorf("a chained relay: %d %q", status, out)
	}
	// The peer connection has no shell.
	c, err := b.dial(t, "tsadmin-relay", ssh.PublicKeys(a.hostKey.Signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, _ := c.NewSession()
	if err := sess.Shell(); err == nil {
		t.Error("a peer got a shell")
	}
}

func TestQueryAllServersWithOneDown(t *testing.T) {
	k, admins := fedAdmins(t)
	nodes := startFederation(t, []string{"A", "B", "C", "D"}, admins, map[string]bool{"D": true})
	held := nodes["C"].Open(k.carol)
	defer held.Close()
	start := time.Now()
	r := nodes["A"].Run(k.alice, "", "query", "session", "/server:*")
	if r.Status != 7 {
		t.Errorf("one server down: want status 7, got %d", r.Status)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if !strings.HasPrefix(strings.TrimSpace(lines[0]), "SERVER") {
		t.Fatalf("no SERVER column: %q", r.Stdout)
	}
	servers := map[string]bool{}
	for _, l := range lines[1:] {
		servers[strings.Fields(strings.TrimPrefix(l, ">"))[0]] = true
	}
	if !servers["A"] || !servers["C"] {
		t.Errorf("rows of A and C are missing: %q", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "carol") {
		t.Errorf("carol's session on C is not listed: %q", r.Stdout)
	}
	if !strings.Contains(r.Stderr, "server D") || !strings.Contains(r.Stderr, "unreachable") {
		t.Errorf("the server that is down is not named: %q", r.Stderr)
	}
	t.Logf("query session /server:* over 3 peers (one down): %s", time.Since(start))
	// logoff never takes *.
	if r := nodes["A"].Run(k.alice, "", "logoff", "1", "/server:*"); r.Status != 2 {
		t.Errorf("logoff /server:*: status %d", r.Status)
	}
}

var sighup = syscall.SIGHUP

// A burst of relayed commands on a cold pool: every one succeeds, however
// many dial the peer at once.
func TestConcurrentRelaysShareThePool(t *testing.T) {
	k, admins := fedAdmins(t)
	nodes := startFederation(t, []string{"A", "B"}, admins, nil)
	a := nodes["A"]
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := a.dial(t, "admin", ssh.PublicKeys(k.alice.Signer))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer c.Close()
			if out, err := runOn(t, c, "query user /server:B"); err != nil || !strings.Contains(out, "USERNAME") {
				errs <- fmt.Sprintf("%v %q", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error("a relayed command failed:", e)
	}
}
