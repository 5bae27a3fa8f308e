package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// A fleet trusted by a host CA, as issue 13 sets it up: one CA made with
// ssh-keygen, each server's host key signed with `ssh-keygen -s ca -h -n
// NAME`, one fleet file (NAME ADDRESS) shared by every server, and no
// pinned key anywhere.

// hostCA is a host CA on disk, made by the real ssh-keygen.
type hostCA struct {
	dir    string
	key    string // private key file
	public string // its public key line
}

func newHostCA(t *testing.T) hostCA {
	t.Helper()
	dir := t.TempDir()
	ca := hostCA{dir: dir, key: filepath.Join(dir, "host_ca")}
	sshKeygen(t, dir, "-q", "-t", "ed25519", "-N", "", "-C", "fleet host CA", "-f", ca.key)
	ca.public = strings.TrimSpace(mustRead(t, ca.key+".pub"))
	return ca
}

// sign certifies the host key in dir (ssh_host_ed25519_key) for the
// principals, with ssh-keygen's own flags (-V and such) in extra; the
// certificate is written beside it as ssh_host_ed25519_key-cert.pub.
func (ca hostCA) sign(t *testing.T, dir, principals string, extra ...string) string {
	t.Helper()
	args := append([]string{"-q", "-s", ca.key, "-h", "-n", principals, "-I", principals}, extra...)
	sshKeygen(t, dir, append(args, "ssh_host_ed25519_key.pub")...)
	return filepath.Join(dir, "ssh_host_ed25519_key-cert.pub")
}

func sshKeygen(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("ssh-keygen", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// certNode says how one server of a CA fleet is made.
type certNode struct {
	admins string // its admins: block
	// principals are what its certificate names ("" for its own name);
	// calls is the name it calls itself (config name:), "" for its name.
	principals, calls string
	noCert            bool     // no host_certificate at all
	ca                *hostCA  // another CA than the fleet's
	extra             []string // more ssh-keygen flags (-V)
}

// startCertFleet starts the servers, each trusting ca and presenting its
// own certificate, then writes the one fleet file with every address and
// gives it to each server with a SIGHUP.
func startCertFleet(t *testing.T, ca hostCA, specs map[string]certNode) (map[string]*node, string) {
	t.Helper()
	nodes := map[string]*node{}
	base := func(n string, s certNode) string {
		name := n
		if s.calls != "" {
			name = s.calls
		}
		cfg := fmt.Sprintf("name: %s\ntrusted_host_ca_keys: [%q]\nroles:\n  operator: { logoff: [\"*\"] }\n  viewer: { logoff: [] }\nadmins:\n%s\n",
			name, ca.public, s.admins)
		if !s.noCert {
			cfg += "host_certificate: ssh_host_ed25519_key-cert.pub\n"
		}
		return cfg
	}
	for n, s := range specs {
		dir := t.TempDir()
		me := &node{name: n, dir: dir, hostKey: newKey(t, dir, "ssh_host_ed25519_key")}
		if !s.noCert {
			signer := ca
			if s.ca != nil {
				signer = *s.ca
			}
			// Lower case, as OpenSSH's client compares the host name
			// it lower-cased; tsadmin's names compare in any case.
			principals := strings.ToLower(n)
			if s.principals != "" {
				principals = s.principals
			}
			signer.sign(t, dir, principals, s.extra...)
		}
		me.Server = startServer(t, dir, base(n, s))
		me.addr = me.Server.Addr
		nodes[n] = me
	}
	fleet := filepath.Join(t.TempDir(), "fleet")
	var b strings.Builder
	b.WriteString("# written by the fleet's manager\n")
	for n, me := range nodes {
		fmt.Fprintf(&b, "%s %s\n", n, me.addr)
	}
	if err := os.WriteFile(fleet, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for n, me := range nodes {
		me.rewriteConfig(t, base(n, specs[n])+"servers_file: "+fleet+"\n")
		me.Signal(sighup)
	}
	for n, me := range nodes {
		if !me.waitLog("configuration reloaded", 5*time.Second) {
			t.Fatalf("%s did not take the fleet file: %s", n, me.Log())
		}
	}
	return nodes, fleet
}

func TestHostCAFleetListingAndLogoff(t *testing.T) {
	k, admins := fedAdmins(t)
	ca := newHostCA(t)
	nodes, fleet := startCertFleet(t, ca, map[string]certNode{
		"A": {admins: admins["A"]}, "B": {admins: admins["B"]}, "C": {admins: admins["C"]},
	})
	a, b, c := nodes["A"], nodes["B"], nodes["C"]
	onB := b.Open(k.carol)
	onC := c.Open(k.carol)
	defer onC.Close()

	// Every server answers, A only once (it finds itself in the fleet
	// file and does not relay to itself).
	r := a.Run(k.alice, "", "query", "session", "/server:*", "/fo:json")
	if r.Status != 0 || r.Stderr != "" {
		t.Fatalf("query session /server:*: %d %q", r.Status, r.Stderr)
	}
	var list []session
	if err := json.Unmarshal([]byte(r.Stdout), &list); err != nil {
		t.Fatalf("%v: %s", err, r.Stdout)
	}
	carolOn := map[string]int{}
	for _, s := range list {
		if s.User == "carol" {
			carolOn[s.Server] = s.ID
		}
	}
	if len(carolOn) != 2 || carolOn["B"] == 0 || carolOn["C"] == 0 {
		t.Fatalf("carol's sessions on B and C: %v in %s", carolOn, r.Stdout)
	}
	if r := a.Run(k.alice, "", "query", "user", "carol", "/server:*"); r.Status != 0 ||
		!rowOf(r.Stdout, "B", "carol") || !rowOf(r.Stdout, "C", "carol") || rowOf(r.Stdout, "A", "carol") {
		t.Errorf("query user carol /server:*: %d %q %q", r.Status, r.Stdout, r.Stderr)
	}

	r = a.Run(k.alice, "", "logoff", fmt.Sprint(carolOn["B"]), "/server:B")
	if r.Status != 0 {
		t.Fatalf("relayed logoff: %d %s", r.Status, r.Stderr)
	}
	if !onB.Exited(5 * time.Second) {
		t.Fatal("carol's session on B is still connected after a relayed logoff")
	}
	if !hasAudit(b.Audit(), func(m map[string]any) bool {
		return m["msg"] == "auth" && m["method"] == "publickey" && m["accepted"] == true && m["reason"] == "peer-cert"
	}) {
		t.Error("B did not record A's authentication by host certificate")
	}

	// The fleet file is read again at reload: C leaves it.
	text := strings.Join(strings.FieldsFunc(mustRead(t, fleet), func(r rune) bool { return r == '\n' }), "\n")
	var kept []string
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, "C ") {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(fleet, []byte(strings.Join(kept, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(a.Log(), "configuration reloaded")
	a.Signal(sighup)
	if !waitUntil(5*time.Second, func() bool { return strings.Count(a.Log(), "configuration reloaded") > before }) {
		t.Fatalf("no reload: %s", a.Log())
	}
	if r := a.Run(k.alice, "", "query", "user", "/server:C"); r.Status != 7 || !strings.Contains(r.Stderr, "unknown server") {
		t.Errorf("C left the fleet file: want 7, got %d %q", r.Status, r.Stderr)
	}
}

// OpenSSH's own client trusts the server by the host CA alone, with an
// @cert-authority line, and strict checking.
func TestOpenSSHClientTrustsTheHostCA(t *testing.T) {
	k, admins := fedAdmins(t)
	ca := newHostCA(t)
	nodes, _ := startCertFleet(t, ca, map[string]certNode{"A": {admins: admins["A"]}})
	a := nodes["A"]
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	run := func(caLine string) Result {
		if err := os.WriteFile(knownHosts, []byte(caLine+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"-p", a.Port, "-i", k.alice.Path, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
			"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
			"-o", "HostKeyAlias=a", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "admin@127.0.0.1", "query", "user"}
		out, err := exec.Command("ssh", args...).CombinedOutput()
		status := 0
		if e, ok := err.(*exec.ExitError); ok {
			status = e.ExitCode()
		}
		return Result{Stdout: string(out), Status: status}
	}
	if r := run("@cert-authority a " + ca.public); r.Status != 0 || !strings.Contains(r.Stdout, "USERNAME") {
		t.Fatalf("ssh with @cert-authority: %d %q", r.Status, r.Stdout)
	}
	other := newHostCA(t)
	if r := run("@cert-authority a " + other.public); r.Status != 255 || !strings.Contains(r.Stdout, "verification failed") {
		t.Errorf("ssh trusting another CA connected: %d %q", r.Status, r.Stdout)
	}
}

// A peer without a certificate, with an expired one, with one for another
// name or from an untrusted CA is refused with status 7 and a one-line
// reason; /server:* names them and prints the others' rows.
func TestHostCARefusesBadPeerCertificates(t *testing.T) {
	k, admins := fedAdmins(t)
	ca := newHostCA(t)
	rogue := newHostCA(t)
	bc := admins["B"]
	nodes, _ := startCertFleet(t, ca, map[string]certNode{
		"A":       {admins: admins["A"]},
		"B":       {admins: bc},
		"NOCERT":  {admins: bc, noCert: true},
		"EXPIRED": {admins: bc, extra: []string{"-V", "20200101:20200102"}},
		"WRONG":   {admins: bc, principals: "OTHER", calls: "OTHER"},
		"ROGUE":   {admins: bc, ca: &rogue},
	})
	a := nodes["A"]
	held := nodes["B"].Open(k.carol)
	defer held.Close()
	for server, want := range map[string]string{
		"NOCERT":  "the peer presented no host certificate",
		"EXPIRED": "the host certificate expired at 2020-01-02",
		"WRONG":   "the host certificate is for OTHER, not WRONG",
		"ROGUE":   "which is not a trusted host CA",
	} {
		r := a.Run(k.alice, "", "query", "user", "/server:"+server)
		if r.Status != 7 || !strings.Contains(r.Stderr, want) || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
			t.Errorf("/server:%s: want 7 and one line with %q, got %d %q", server, want, r.Status, r.Stderr)
		}
	}
	r := a.Run(k.alice, "", "query", "session", "/server:*")
	if r.Status != 7 {
		t.Errorf("/server:* with four bad peers: status %d", r.Status)
	}
	for _, s := range []string{"NOCERT", "EXPIRED", "WRONG", "ROGUE"} {
		if !strings.Contains(r.Stderr, "server "+s+": ") {
			t.Errorf("/server:* does not name %s: %q", s, r.Stderr)
		}
	}
	if !rowOf(r.Stdout, "B", "carol") {
		t.Errorf("/server:* lacks B's rows: %q", r.Stdout)
	}
}

// The receiving side: a relaying server is accepted by its host
// certificate only when a trusted CA signed it, it is valid now, and its
// principal names a server of the fleet; else it is refused at
// authentication, with the reason in the audit log.
func TestHostCARefusesBadRelayCertificates(t *testing.T) {
	k, admins := fedAdmins(t)
	ca := newHostCA(t)
	rogue := newHostCA(t)
	nodes, _ := startCertFleet(t, ca, map[string]certNode{"A": {admins: admins["A"]}, "B": {admins: admins["B"]}})
	b := nodes["B"]
	fp := ssh.FingerprintSHA256(k.alice.Signer.PublicKey())
	req := map[string]any{"tsadmin_relay": 1, "admin": "alice", "method": "key", "fingerprint": fp, "via": "A", "line": "query user"}
	for _, c := range []struct {
		what, principals string
		ca               hostCA
		extra            []string
		reason           string
	}{
		{"valid, for A", "A", ca, nil, ""},
		{"for a name not in the fleet", "Z", ca, nil, "no principal of the host certificate (Z) is a server of the fleet"},
		{"expired", "A", ca, []string{"-V", "20200101:20200102"}, "expired at 2020-01-02"},
		{"from an untrusted CA", "A", rogue, nil, "not a trusted host CA"},
	} {
		dir := t.TempDir()
		key := newKey(t, dir, "ssh_host_ed25519_key")
		c.ca.sign(t, dir, c.principals, c.extra...)
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(mustRead(t, filepath.Join(dir, "ssh_host_ed25519_key-cert.pub"))))
		if err != nil {
			t.Fatal(err)
		}
		signer, err := ssh.NewCertSigner(pub.(*ssh.Certificate), key.Signer)
		if err != nil {
			t.Fatal(err)
		}
		out, status := relayAs(t, b.Server, Key{Signer: signer}, req)
		if c.reason == "" {
			if status != 0 || !strings.Contains(out, "USERNAME") {
				t.Errorf("%s: refused: %d %q", c.what, status, out)
			}
			continue
		}
		if status != 255 {
			t.Errorf("%s: not refused at authentication: %d %q", c.what, status, out)
		}
		// A connection's refusals are one record, written when it closes.
		if !waitUntil(5*time.Second, func() bool {
			return hasAudit(b.Audit(), func(m map[string]any) bool {
				return m["msg"] == "auth.refused" && strings.Contains(fmt.Sprint(m["reason"]), c.reason)
			})
		}) {
			t.Errorf("%s: no audit record with %q", c.what, c.reason)
		}
	}
}

// rowOf reports whether a /server:* table has a row of server for user.
func rowOf(table, server, user string) bool {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(strings.TrimPrefix(l, ">"))
		if len(f) > 2 && f[0] == server && strings.Contains(l, " "+user+" ") {
			return true
		}
	}
	return false
}

// A renewed host certificate takes effect at SIGHUP: certificates can be
// short-lived without restarts.
func TestRenewedHostCertificateAtReload(t *testing.T) {
	k, admins := fedAdmins(t)
	ca := newHostCA(t)
	nodes, _ := startCertFleet(t, ca, map[string]certNode{
		"A": {admins: admins["A"]},
		"B": {admins: admins["B"], extra: []string{"-V", "20200101:20200102"}},
	})
	a, b := nodes["A"], nodes["B"]
	if !strings.Contains(b.Log(), "the host certificate expired at 2020-01-02") {
		t.Errorf("B did not warn of its expired certificate: %s", b.Log())
	}
	if r := a.Run(k.alice, "", "query", "user", "/server:B"); r.Status != 7 || !strings.Contains(r.Stderr, "expired") {
		t.Fatalf("B's expired certificate: %d %q", r.Status, r.Stderr)
	}
	ca.sign(t, b.dir, "b", "-V", "-5m:+1h")
	before := strings.Count(b.Log(), "configuration reloaded")
	b.Signal(sighup)
	if !waitUntil(5*time.Second, func() bool { return strings.Count(b.Log(), "configuration reloaded") > before }) {
		t.Fatalf("no reload: %s", b.Log())
	}
	if r := a.Run(k.alice, "", "query", "user", "/server:B"); r.Status != 0 {
		t.Errorf("B's renewed certificate: %d %q", r.Status, r.Stderr)
	}
}
