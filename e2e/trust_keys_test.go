package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// reloads waits until the server has logged n reloads.
func (s *Server) reloads(n int) bool {
	return waitUntil(5*time.Second, func() bool { return strings.Count(s.Log(), "configuration reloaded") >= n })
}

// ptyRefused runs `ssh -tt ... query user` and reports whether the client
// was refused a PTY (ssh -tt then gives up); a run that fails otherwise
// ends the test.
func (s *Server) ptyRefused(t *testing.T, key Key) bool {
	t.Helper()
	args := append(s.sshArgs(key, "-tt"), "admin@127.0.0.1", "query", "user")
	out, err := exec.Command("ssh", args...).CombinedOutput()
	if strings.Contains(string(out), "PTY allocation request failed") {
		return true
	}
	if err != nil || !strings.Contains(string(out), "USERNAME") {
		t.Fatalf("ssh -tt: %v %q", err, out)
	}
	return false
}

// A certificate without permit-pty gets no terminal: the grant is decided
// from its extensions at authentication, as no-pty is for a plain key.
func TestCertificateTerminalNeedsPermitPTY(t *testing.T) {
	dir := t.TempDir()
	ca, holder := newKey(t, dir, "ca"), newKey(t, dir, "holder")
	s := startServer(t, dir, fmt.Sprintf("roles: { viewer: { logoff: [] } }\nadmins:\n  - { name: erin, role: viewer, keys: [%q] }\ntrusted_user_ca_keys:\n  - %s\n",
		newKey(t, dir, "erin").Public, ca.Public))
	sign(t, ca, holder, "erin", "-V", "-5m:+1h", "-O", "no-pty")
	if !s.ptyRefused(t, holder) {
		t.Error("a certificate without permit-pty got a terminal")
	}
	sign(t, ca, holder, "erin", "-V", "-5m:+1h")
	if s.ptyRefused(t, holder) {
		t.Error("a certificate with permit-pty was refused a terminal")
	}
}

// revokeKRL writes the KRL file with the real ssh-keygen -k from spec
// lines; ca, when set, scopes the serials and key IDs.
func revokeKRL(t *testing.T, dir, file, ca string, update bool, spec ...string) {
	t.Helper()
	specPath := filepath.Join(dir, "krl.spec")
	if err := os.WriteFile(specPath, []byte(strings.Join(spec, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-k", "-f", file}
	if update {
		args = append(args, "-u")
	}
	if ca != "" {
		args = append(args, "-s", ca)
	}
	if out, err := exec.Command("ssh-keygen", append(args, specPath)...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -k: %v\n%s", err, out)
	}
}

// revoked_keys, a key list and then a KRL, refuses revoked keys,
// certificates (by serial) and everything a revoked CA signed; a SIGHUP
// re-reads it and ends the live sessions of what it now revokes.
func TestRevokedKeysAreRefused(t *testing.T) {
	dir := t.TempDir()
	ca := newKey(t, dir, "ca")
	plain, lost := newKey(t, dir, "plain"), newKey(t, dir, "lost")
	c7, c8 := newKey(t, dir, "c7"), newKey(t, dir, "c8")
	sign(t, ca, c7, "erin", "-V", "-5m:+1h", "-z", "7")
	sign(t, ca, c8, "erin", "-V", "-5m:+1h", "-z", "8")
	revoked := filepath.Join(dir, "revoked")
	if err := os.WriteFile(revoked, []byte("# a lost laptop\n"+lost.Public+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, dir, fmt.Sprintf("roles: { viewer: { logoff: [] } }\nadmins:\n  - { name: erin, role: viewer, keys: [%q, %q] }\ntrusted_user_ca_keys:\n  - %s\nrevoked_keys: revoked\n",
		plain.Public, lost.Public, ca.Public))
	expect := func(step string, want map[*Key]int) {
		t.Helper()
		for k, status := range want {
			if r := s.Run(*k, "", "query", "user"); r.Status != status {
				t.Errorf("%s: %s: status %d, want %d (%q)", step, filepath.Base(k.Path), r.Status, status, r.Stderr)
			}
		}
	}
	expect("key list", map[*Key]int{&plain: 0, &lost: 255, &c7: 0, &c8: 0})
	// A connection's refusals are one record, written when it closes.
	if !waitUntil(5*time.Second, func() bool {
		return hasAudit(s.Audit(), func(m map[string]any) bool {
			return m["msg"] == "auth.refused" && strings.Contains(fmt.Sprint(m["reason"]), "revoked")
		})
	}) {
		t.Error("the refusal of a revoked key is not audited with its reason")
	}

	// A KRL by serial, made by ssh-keygen: certificate 7 only.
	os.Remove(revoked)
	revokeKRL(t, dir, revoked, ca.Path+".pub", false, "serial: 7")
	s.Signal(sighup)
	if !s.reloads(1) {
		t.Fatalf("no reload: %s", s.Log())
	}
	expect("KRL serial 7", map[*Key]int{&plain: 0, &lost: 0, &c7: 255, &c8: 0})

	// The KRL gains the plain key and the CA: a live session of the plain
	// key ends at the reload, and every certificate of the CA is refused.
	live := s.Open(plain)
	revokeKRL(t, dir, revoked, "", true, "key: "+plain.Public, "key: "+ca.Public)
	s.Signal(sighup)
	if !s.reloads(2) {
		t.Fatalf("no second reload: %s", s.Log())
	}
	expect("KRL keys", map[*Key]int{&plain: 255, &c8: 255, &lost: 0})
	if !live.Exited(5 * time.Second) {
		t.Error("a session of a key revoked by the reload is still connected")
	}

	// A KRL that cannot be read is refused, and the old one stays.
	os.WriteFile(revoked, []byte("SSHKRL\n\x00garbage"), 0o600)
	s.Signal(sighup)
	if !s.waitLog("reload refused", 5*time.Second) || !strings.Contains(s.Log(), revoked) {
		t.Fatalf("a broken KRL was not refused with its file name: %s", s.Log())
	}
	expect("after a refused reload", map[*Key]int{&plain: 255, &lost: 0})
}

// firstRunHome makes a home directory for the running user with an
// authorized_keys file, and points HOME and USER at it for the server.
func firstRunHome(t *testing.T, lines ...string) string {
	t.Helper()
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	if err := os.WriteFile(filepath.Join(home, ".ssh", "authorized_keys"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("USER", "opal")
	return home
}

// The first-run default honours the options of the running user's keys: a
// backup key limited to one address and one command does not become an
// operator, and restrict takes the terminal away.
func TestFirstRunDefaultHonoursOptions(t *testing.T) {
	dir := t.TempDir()
	own, backup, restricted := newKey(t, dir, "own"), newKey(t, dir, "backup"), newKey(t, dir, "restricted")
	firstRunHome(t, own.Public, `from="127.0.0.1",command="/usr/local/bin/backup" `+backup.Public, "restrict "+restricted.Public)
	s := startServer(t, dir, "name: FIRST\n")
	if r := s.Run(own, "", "query", "user"); r.Status != 0 {
		t.Fatalf("the running user's own key: %d %q\n%s", r.Status, r.Stderr, s.Log())
	}
	if r := s.Run(backup, "", "logoff", "1"); r.Status != 255 {
		t.Errorf("a command= key of the running user became an operator: status %d %q", r.Status, r.Stdout)
	}
	if !s.ptyRefused(t, restricted) {
		t.Error("a restrict key of the running user got a terminal")
	}
	if !strings.Contains(s.Log(), "1 of the running user's keys are not trusted") || !strings.Contains(s.Log(), "command") {
		t.Errorf("the first log lines do not say which key was skipped:\n%s", s.Log())
	}
}

// A reload into a config with no admins turns the first-run default on
// only on loopback (the listener here): the configured admin is gone and
// the running user's key is an operator. (Off loopback the reload is
// refused: keys.TestCheckDefaultListener.)
func TestReloadIntoNoAdminsOnLoopback(t *testing.T) {
	dir := t.TempDir()
	own, alice := newKey(t, dir, "own"), newKey(t, dir, "alice")
	firstRunHome(t, own.Public)
	s := startServer(t, dir, fmt.Sprintf("roles: { operator: { logoff: [\"*\"] } }\nadmins:\n  - { name: alice, role: operator, keys: [%q] }\n", alice.Public))
	if r := s.Run(own, "", "query", "user"); r.Status != 255 {
		t.Fatalf("the running user's key is trusted although admins are configured: %d", r.Status)
	}
	s.rewriteConfig(t, "name: FIRST\n")
	s.Signal(sighup)
	if !s.reloads(1) {
		t.Fatalf("the reload into no admins on 127.0.0.1 was not applied: %s", s.Log())
	}
	if r := s.Run(own, "", "query", "user"); r.Status != 0 {
		t.Errorf("after the reload, the running user's key: %d %q", r.Status, r.Stderr)
	}
	if r := s.Run(alice, "", "query", "user"); r.Status != 255 {
		t.Errorf("after the reload, the removed admin: %d", r.Status)
	}
}

// A relayed admin is mapped by the key it used, not by its name: carol, a
// viewer on A with K1, is not B's operator carol who holds K2.
func TestRelayedAdminNeedsTheKeyHeldHere(t *testing.T) {
	dir := t.TempDir()
	k1, k2, alice := newKey(t, dir, "carol-k1"), newKey(t, dir, "carol-k2"), newKey(t, dir, "alice")
	entry := func(name, role string, key Key) string {
		return fmt.Sprintf("  - { name: %s, role: %s, keys: [%q] }\n", name, role, key.Public)
	}
	nodes := startFederation(t, []string{"A", "B"}, map[string]string{
		"A": entry("alice", "operator", alice) + entry("carol", "viewer", k1),
		"B": entry("alice", "operator", alice) + entry("carol", "operator", k2),
	}, nil)
	a, b := nodes["A"], nodes["B"]
	victim := b.Open(alice)
	var id int
	for _, s := range b.List(alice) {
		if s.User == "alice" && !s.Current {
			id = s.ID
		}
	}
	r := a.Run(k1, "", "logoff", fmt.Sprint(id), "/server:B")
	if r.Status != 5 || !strings.Contains(r.Stderr, "access denied") {
		t.Fatalf("carol with K1, B's carol holding K2: want 5, got %d %q %q", r.Status, r.Stdout, r.Stderr)
	}
	if victim.Exited(300 * time.Millisecond) {
		t.Fatal("the target on B was logged off by a carol who is not B's carol")
	}
	if !hasAudit(b.Audit(), func(m map[string]any) bool {
		return m["msg"] == "command" && m["via"] == "A" && m["admin"] == "carol" && m["status"] == float64(5) && strings.Contains(fmt.Sprint(m["reason"]), "not admin carol's key")
	}) {
		t.Errorf("B did not audit the refusal: %v", b.Audit())
	}

	// With the same key on both servers, carol maps to B's carol.
	b.rewriteConfig(t, strings.Replace(mustRead(t, b.Config), k2.Public, k1.Public, 1))
	b.Signal(sighup)
	if !b.reloads(2) {
		t.Fatalf("B did not reload: %s", b.Log())
	}
	if r := a.Run(k1, "", "logoff", fmt.Sprint(id), "/server:B"); r.Status != 0 {
		t.Fatalf("carol with K1 on both: %d %q", r.Status, r.Stderr)
	}
	if !victim.Exited(5 * time.Second) {
		t.Error("the relayed logoff by the same key did not end the session")
	}
}

// A CA's signature on a certificate is held to the rules of a user's: a
// certificate that ssh-keygen signed with ssh-rsa (SHA-1) is refused, the
// same CA's rsa-sha2-512 signature is accepted.
func TestCertificateSignedWithSHA1IsRefused(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", filepath.Join(dir, "rsa-ca")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	ca := Key{Path: filepath.Join(dir, "rsa-ca"), Public: strings.TrimSpace(mustRead(t, filepath.Join(dir, "rsa-ca.pub")))}
	holder := newKey(t, dir, "holder")
	s := startServer(t, dir, fmt.Sprintf("roles: { viewer: { logoff: [] } }\nadmins:\n  - { name: erin, role: viewer, keys: [%q] }\ntrusted_user_ca_keys:\n  - %s\n",
		newKey(t, dir, "erin").Public, ca.Public))
	for _, c := range []struct {
		alg    string
		status int
	}{{"ssh-rsa", 255}, {"rsa-sha2-512", 0}} {
		sign(t, ca, holder, "erin", "-V", "-5m:+1h", "-t", c.alg)
		if r := s.Run(holder, "", "query", "user"); r.Status != c.status {
			t.Errorf("a certificate signed with %s: status %d, want %d (%q)", c.alg, r.Status, c.status, r.Stderr)
		}
	}
}
