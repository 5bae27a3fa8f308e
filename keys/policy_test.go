package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func authorized(s ssh.Signer) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
}

func policy(t testing.TB, yaml string) *Policy {
	t.Helper()
	p, err := NewPolicy(mustParse(t, yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dssKey is an ssh-dss public key, which tsadmin refuses everywhere.
const dssKey = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpEy9nXzrith1yrv8iIDGZ3RSAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuXmUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRbqN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKLZl6Ae1UlZAFMO/7PSSoAAACBAPU6hqJdU/V6d7kaMnJAnwPu+1yDcmj9hZrWeEJGMQ7KYmWJsnq8R0kzD8EIfoXsDpyfgaOKHm2SKhxn9ZzsVjsbNnqCAJmLJoFpQ4lW0zDmQ2k0BJ0m3RKuZRPrFvUrpBKlP0/shgsHaazRGQdjc4cc+z7IUmRIaHOEpTlVprIU"

var addr = &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5000}

func TestAllowIsTheOneDecision(t *testing.T) {
	a, h, v := newSigner(t), newSigner(t), newSigner(t)
	p := policy(t, fmt.Sprintf(`roles:
  operator: { logoff: ["*"] }
  helpdesk: { logoff: ["user:student*", "name:pts/9*", "type:login"] }
  viewer:   { logoff: [] }
  hostops:  { logoff: ["type:host"] }
admins:
  - { name: alice, role: operator, keys: [%q] }
  - { name: helen, role: helpdesk, keys: [%q] }
  - { name: vic, role: viewer, keys: [%q] }
  - { name: tina, role: hostops, keys: [%q] }
`, authorized(a), authorized(h), authorized(v), authorized(newSigner(t))))
	helen := Identity{Name: "helen"}
	vic := Identity{Name: "vic"}
	cases := []struct {
		who     Identity
		s       sessions.Session
		allowed bool
		rule    string
	}{
		{Identity{Name: "alice"}, sessions.Session{User: "root", Name: "tty1", Type: "login"}, true, "role operator: *"},
		{helen, sessions.Session{User: "student12", Name: "pts/3", Type: "sshd"}, true, "role helpdesk: user:student*"},
		{helen, sessions.Session{User: "staff", Name: "pts/91", Type: "sshd"}, true, "role helpdesk: name:pts/9*"},
		{helen, sessions.Session{User: "staff", Name: "tty2", Type: "login"}, true, "role helpdesk: type:login"},
		{helen, sessions.Session{User: "staff", Name: "pts/3", Type: "sshd"}, false, "role helpdesk: no selector matches"},
		{helen, sessions.Session{User: "Student12", Name: "pts/3", Type: "sshd"}, false, "role helpdesk: no selector matches"},
		{vic, sessions.Session{User: "vic", Name: "ssh#4", Type: "tsadmin", Admin: "vic"}, true, "own session"},
		{vic, sessions.Session{User: "alice", Name: "ssh#5", Type: "tsadmin", Admin: "alice"}, false, "role viewer: no selector matches"},
		// A host login of a Unix user named like the admin is not "own".
		{vic, sessions.Session{User: "vic", Name: "pts/1", Type: "sshd"}, false, "role viewer: no selector matches"},
		{Identity{Name: "mallory"}, sessions.Session{User: "x"}, false, "identity no longer configured"},
		// type: matches the source too.
		{Identity{Name: "tina"}, sessions.Session{User: "x", Name: "pts/1", Type: "sshd", Source: "host"}, true, "role hostops: type:host"},
		{Identity{Name: "tina"}, sessions.Session{User: "x", Name: "ssh#3", Type: "tsadmin", Source: "shell"}, false, "role hostops: no selector matches"},
		{Identity{Peer: "WF13"}, sessions.Session{User: "x"}, false, "identity no longer configured"},
	}
	for _, c := range cases {
		d := p.Allow(c.who, c.s)
		if d.Allowed != c.allowed || d.Rule != c.rule {
			t.Errorf("%s on %+v: got %+v, want %v %q", c.who.Name, c.s, d, c.allowed, c.rule)
		}
	}
}

func TestKeyOptions(t *testing.T) {
	k := authorized(newSigner(t))
	future := time.Now().AddDate(1, 0, 0).Format("20060102")
	cases := []struct {
		line    string
		from    string
		ok      bool // accepted at load
		allowed bool // and authenticates from `from`
	}{
		{`from="127.0.0.1" ` + k, "127.0.0.1", true, true},
		{`from="127.0.0.*,!127.0.0.1" ` + k, "127.0.0.1", true, false},
		{`from="10.0.0.0/8" ` + k, "127.0.0.1", true, false},
		{`from="10.0.0.0/8" ` + k, "10.1.2.3", true, true},
		{`expiry-time="20200101" ` + k, "127.0.0.1", true, false},
		{`expiry-time="` + future + `Z" ` + k, "127.0.0.1", true, true},
		{`restrict ` + k, "127.0.0.1", true, true},
		{`no-port-forwarding,no-agent-forwarding ` + k, "127.0.0.1", true, true},
		{`command="/bin/sh" ` + k, "", false, false},
		{`environment="A=b" ` + k, "", false, false},
		{`cert-authority ` + k, "", false, false},
		{`from=127.0.0.1 ` + k, "", false, false},
		{`expiry-time="tomorrow" ` + k, "", false, false},
		{dssKey + " x", "", false, false},
	}
	for _, c := range cases {
		pk, err := parseKeyLine(c.line)
		if (err == nil) != c.ok {
			t.Errorf("%.40q...: load error %v, want ok=%v", c.line, err, c.ok)
			continue
		}
		if err != nil {
			continue
		}
		from := &net.TCPAddr{IP: net.ParseIP(c.from), Port: 1}
		if got := pk.opts.check(from, time.Now()) == nil; got != c.allowed {
			t.Errorf("%.60q from %s: allowed %v, want %v", c.line, c.from, got, c.allowed)
		}
	}
	r, _ := parseKeyLine("restrict " + k)
	if !r.opts.noPTY {
		t.Error("restrict must take the PTY away")
	}
	r, _ = parseKeyLine("restrict,pty " + k)
	if r.opts.noPTY {
		t.Error("pty after restrict gives the PTY back")
	}
}

func TestKeysFileErrorsNameTheFileAndLine(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "carol.pub"), []byte("# carol\n\n"+authorized(newSigner(t))+"\nnot a key\n"), 0o600)
	c, err := config.Parse([]byte("roles: { v: { logoff: [] } }\nadmins:\n  - { name: carol, role: v, keys_file: carol.pub }\n"), filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewPolicy(c)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "carol.pub")+": line 4") {
		t.Fatalf("want the file and line 4, got %v", err)
	}
}

func TestOneKeyOneAdmin(t *testing.T) {
	k := authorized(newSigner(t))
	c, _ := config.Parse([]byte(fmt.Sprintf("roles: { v: { logoff: [] } }\nadmins:\n  - { name: a, role: v, keys: [%q] }\n  - { name: b, role: v, keys: [%q] }\n", k, k)), "c.yaml")
	if _, err := NewPolicy(c); err == nil || !strings.Contains(err.Error(), "already belongs to admin a") {
		t.Fatalf("a key shared by two admins: %v", err)
	}
}

func cert(t *testing.T, ca ssh.Signer, holder ssh.Signer, principals []string, after, before time.Time, crit map[string]string, typ uint32) *ssh.Certificate {
	t.Helper()
	c := &ssh.Certificate{
		Key: holder.PublicKey(), CertType: typ, KeyId: "test", ValidPrincipals: principals,
		ValidAfter: uint64(after.Unix()), ValidBefore: uint64(before.Unix()),
		Permissions: ssh.Permissions{CriticalOptions: crit},
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertificates(t *testing.T) {
	ca, other, holder := newSigner(t), newSigner(t), newSigner(t)
	p := policy(t, fmt.Sprintf(`roles: { v: { logoff: [] } }
admins:
  - { name: erin, role: v, keys: [%q] }
trusted_user_ca_keys: [%q]
`, authorized(newSigner(t)), authorized(ca)))
	now := time.Now()
	hour := time.Hour
	cases := []struct {
		name string
		c    *ssh.Certificate
		from string
		ok   bool
	}{
		{"valid", cert(t, ca, holder, []string{"erin"}, now.Add(-hour), now.Add(hour), nil, ssh.UserCert), "127.0.0.1", true},
		{"expired", cert(t, ca, holder, []string{"erin"}, now.Add(-2*hour), now.Add(-hour), nil, ssh.UserCert), "127.0.0.1", false},
		{"not yet valid", cert(t, ca, holder, []string{"erin"}, now.Add(hour), now.Add(2*hour), nil, ssh.UserCert), "127.0.0.1", false},
		{"wrong CA", cert(t, other, holder, []string{"erin"}, now.Add(-hour), now.Add(hour), nil, ssh.UserCert), "127.0.0.1", false},
		{"unknown principal", cert(t, ca, holder, []string{"mallory"}, now.Add(-hour), now.Add(hour), nil, ssh.UserCert), "127.0.0.1", false},
		{"source-address match", cert(t, ca, holder, []string{"erin"}, now.Add(-hour), now.Add(hour), map[string]string{"source-address": "127.0.0.0/8"}, ssh.UserCert), "127.0.0.1", true},
		{"source-address mismatch", cert(t, ca, holder, []string{"erin"}, now.Add(-hour), now.Add(hour), map[string]string{"source-address": "192.0.2.0/24"}, ssh.UserCert), "127.0.0.1", false},
		{"force-command", cert(t, ca, holder, []string{"erin"}, now.Add(-hour), now.Add(hour), map[string]string{"force-command": "/bin/sh"}, ssh.UserCert), "127.0.0.1", false},
		{"host certificate", cert(t, ca, holder, []string{"erin"}, now.Add(-hour), now.Add(hour), nil, ssh.HostCert), "127.0.0.1", false},
	}
	for _, c := range cases {
		id, err := p.Authenticate(&net.TCPAddr{IP: net.ParseIP(c.from), Port: 1}, c.c, now)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if c.ok && (id.Name != "erin" || id.Method != "cert" || id.Fingerprint != ssh.FingerprintSHA256(holder.PublicKey())) {
			t.Errorf("%s: identity %+v", c.name, id)
		}
	}
}

func TestHostKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hk")
	s1, created, err := LoadOrCreateHostKey(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 || s1.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("mode %v, type %s", st.Mode(), s1.PublicKey().Type())
	}
	s2, created, err := LoadOrCreateHostKey(path)
	if err != nil || created || string(s2.PublicKey().Marshal()) != string(s1.PublicKey().Marshal()) {
		t.Fatalf("reload gave another key: %v %v", created, err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadOrCreateHostKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable host key: %v", err)
	}
}

func TestFirstRunDefaultTrustsTheRunningUsersKeys(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("USER", "opal")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	a, b := newSigner(t), newSigner(t)
	os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519.pub"), []byte(authorized(a)+" me\n"), 0o644)
	os.WriteFile(filepath.Join(home, ".ssh", "authorized_keys"), []byte("# x\nno-pty "+authorized(b)+"\ngarbage\n"), 0o600)
	p := policy(t, "")
	if !p.Default || p.KeyCount() != 2 {
		t.Fatalf("default %v, %d keys", p.Default, p.KeyCount())
	}
	for _, k := range []ssh.Signer{a, b} {
		id, err := p.Authenticate(addr, k.PublicKey(), time.Now())
		if err != nil || id.Name != "opal" || id.Role != FirstRunRole {
			t.Errorf("%v %+v", err, id)
		}
		if !p.Allow(*id, sessions.Session{User: "anyone"}).Allowed {
			t.Error("the first-run operator may not log off others")
		}
	}
	// With admins configured, the running user's keys mean nothing.
	p = policy(t, fmt.Sprintf("roles: { v: { logoff: [] } }\nadmins:\n  - { name: x, role: v, keys: [%q] }\n", authorized(newSigner(t))))
	if _, err := p.Authenticate(addr, a.PublicKey(), time.Now()); err == nil || p.Default {
		t.Error("the running user's key is trusted although admins are configured")
	}
}

// Authenticate names a plain key by the fingerprint OpenSSH and x/crypto
// give it, whatever its type, though it computes it from the key's wire
// form itself.
func TestAuthenticateFingerprintsAsSSH(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, raw := range []any{ecKey, rsaKey, newSigner(t)} {
		s, ok := raw.(ssh.Signer)
		if !ok {
			var err error
			if s, err = ssh.NewSignerFromKey(raw); err != nil {
				t.Fatal(err)
			}
		}
		p := policy(t, fmt.Sprintf("roles: { v: { logoff: [] } }\nadmins:\n  - { name: erin, role: v, keys: [%q] }\n", authorized(s)))
		id, err := p.Authenticate(addr, s.PublicKey(), time.Now())
		if err != nil {
			t.Fatalf("%s: %v", s.PublicKey().Type(), err)
		}
		if want := ssh.FingerprintSHA256(s.PublicKey()); id.Fingerprint != want {
			t.Errorf("%s: fingerprint %s, want %s", s.PublicKey().Type(), id.Fingerprint, want)
		}
	}
}
