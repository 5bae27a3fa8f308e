package keys

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/config"
)

// A certificate's extensions and a key's options become the same grants,
// decided at authentication: a certificate without permit-pty gets no
// terminal (it did, because the PTY check only looked up plain keys).
func TestGrantsAreDecidedAtAuthentication(t *testing.T) {
	ca, holder, plain, restricted := newSigner(t), newSigner(t), newSigner(t), newSigner(t)
	p := policy(t, fmt.Sprintf(`roles: { v: { logoff: [] } }
admins:
  - { name: erin, role: v, keys: [%q, %q] }
trusted_user_ca_keys: [%q]
`, authorized(plain), "restrict "+authorized(restricted), authorized(ca)))
	now := time.Now()
	withPTY := cert(t, ca, holder, []string{"nobody", "erin"}, now.Add(-time.Hour), now.Add(time.Hour), nil, ssh.UserCert)
	withPTY.Extensions = map[string]string{"permit-pty": ""}
	if err := withPTY.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	noPTY := cert(t, ca, holder, []string{"erin"}, now.Add(-time.Hour), now.Add(time.Hour), nil, ssh.UserCert)
	for _, c := range []struct {
		name string
		key  ssh.PublicKey
		pty  bool
	}{
		{"plain key", plain.PublicKey(), true},
		{"restrict", restricted.PublicKey(), false},
		{"certificate with permit-pty", withPTY, true},
		{"certificate without permit-pty", noPTY, false},
	} {
		id, err := p.Authenticate(addr, c.key, now)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if id.Grants.PTY != c.pty {
			t.Errorf("%s: PTY granted %v, want %v", c.name, id.Grants.PTY, c.pty)
		}
	}
	id, _ := p.Authenticate(addr, withPTY, now)
	if id.CA != ssh.FingerprintSHA256(ca.PublicKey()) || id.Principal != "erin" {
		t.Errorf("certificate identity: CA %q principal %q", id.CA, id.Principal)
	}
}

// A CA's signature on a certificate is held to the rules of a user's
// signature: no ssh-rsa (SHA-1); and no ssh-dss CA at all.
func TestCASignatureAlgorithms(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCA, _ := ssh.NewSignerFromKey(rsaKey)
	holder := newSigner(t)
	p := policy(t, fmt.Sprintf("roles: { v: { logoff: [] } }\nadmins:\n  - { name: erin, role: v, keys: [%q] }\ntrusted_user_ca_keys: [%q]\n",
		authorized(newSigner(t)), authorized(rsaCA)))
	now := time.Now()
	for _, c := range []struct {
		alg string
		ok  bool
	}{{ssh.KeyAlgoRSA, false}, {ssh.KeyAlgoRSASHA256, true}, {ssh.KeyAlgoRSASHA512, true}} {
		signer, err := ssh.NewSignerWithAlgorithms(rsaCA.(ssh.AlgorithmSigner), []string{c.alg})
		if err != nil {
			t.Fatal(err)
		}
		crt := cert(t, signer, holder, []string{"erin"}, now.Add(-time.Hour), now.Add(time.Hour), nil, ssh.UserCert)
		if crt.Signature.Format != c.alg {
			t.Fatalf("signed with %s, want %s", crt.Signature.Format, c.alg)
		}
		_, err = p.Authenticate(addr, crt, now)
		if (err == nil) != c.ok {
			t.Errorf("CA signature %s: %v, want accepted=%v", c.alg, err, c.ok)
		}
	}

	c := mustParse(t, fmt.Sprintf("roles: { v: { logoff: [] } }\nadmins:\n  - { name: erin, role: v, keys: [%q] }\ntrusted_user_ca_keys: [%q]\n",
		authorized(newSigner(t)), dssKey))
	if _, err := NewPolicy(c); err == nil || !strings.Contains(err.Error(), "ssh-dss") {
		t.Errorf("an ssh-dss CA: %v", err)
	}
}

// A relayed admin maps to this server's admin only for a credential this
// server holds for that admin: a viewer carol elsewhere, with another key,
// is not this server's operator carol.
func TestRelayedMapsOnlyHeldCredentials(t *testing.T) {
	k1, k2, ca, otherCA, fenced := newSigner(t), newSigner(t), newSigner(t), newSigner(t), newSigner(t)
	p := policy(t, fmt.Sprintf(`roles: { operator: { logoff: ["*"] } }
admins:
  - { name: carol, role: operator, keys: [%q] }
  - { name: dan, role: operator, keys: [%q, %q] }
trusted_user_ca_keys: [%q]
`, authorized(k2), authorized(k1), `from="10.0.0.0/8" `+authorized(fenced), authorized(ca)))
	fp := ssh.FingerprintSHA256
	now := time.Now()
	holder := newSigner(t)
	good := cert(t, ca, holder, []string{"carol"}, now.Add(-time.Hour), now.Add(time.Hour), nil, ssh.UserCert)
	foreign := cert(t, otherCA, holder, []string{"carol"}, now.Add(-time.Hour), now.Add(time.Hour), nil, ssh.UserCert)
	expired := cert(t, ca, holder, []string{"carol"}, now.Add(-2*time.Hour), now.Add(-time.Hour), nil, ssh.UserCert)
	fencedCert := cert(t, ca, holder, []string{"carol"}, now.Add(-time.Hour), now.Add(time.Hour), map[string]string{"source-address": "10.0.0.0/8"}, ssh.UserCert)
	cases := []struct {
		name string
		v    Vouched
		ok   bool
	}{
		{"carol's key here", Vouched{Admin: "carol", Method: "key", Fingerprint: fp(k2.PublicKey())}, true},
		{"another key of carol's name", Vouched{Admin: "carol", Method: "key", Fingerprint: fp(k1.PublicKey())}, false},
		{"a key no one holds", Vouched{Admin: "carol", Method: "key", Fingerprint: fp(newSigner(t).PublicKey())}, false},
		{"name alone", Vouched{Admin: "carol", Fingerprint: fp(k2.PublicKey())}, false},
		{"key limited by from=", Vouched{Admin: "dan", Method: "key", Fingerprint: fp(fenced.PublicKey())}, false},
		{"certificate from a CA trusted here", certVouched(good, "carol"), true},
		{"a claim of a certificate, without it", func() Vouched { v := certVouched(good, "carol"); v.Certificate = ""; return v }(), false},
		{"certificate from another CA", certVouched(foreign, "carol"), false},
		{"certificate naming someone else", certVouched(good, "dan"), false},
		{"expired certificate", certVouched(expired, "carol"), false},
		// A relayed command cannot meet source-address: refused, as
		// a key's from= is.
		{"certificate limited by source-address", certVouched(fencedCert, "carol"), false},
		{"unknown admin", Vouched{Admin: "mallory", Method: "key", Fingerprint: fp(k2.PublicKey())}, false},
	}
	for _, c := range cases {
		id, err := p.Relayed(c.v, now)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, want mapped=%v", c.name, err, c.ok)
			continue
		}
		if c.ok && (id.Name != c.v.Admin || id.Grants.PTY) {
			t.Errorf("%s: identity %+v", c.name, id)
		}
	}
}

// The first-run default honours every option as a configured key does: a
// backup key restricted to one address and one command is not an operator.
func TestFirstRunDefaultHonoursKeyOptions(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("USER", "opal")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	plain, backup, fenced, expired, nopty := newSigner(t), newSigner(t), newSigner(t), newSigner(t), newSigner(t)
	lines := []string{
		authorized(plain),
		`from="192.0.2.7",command="/usr/local/bin/backup" ` + authorized(backup),
		`from="192.0.2.7" ` + authorized(fenced),
		`expiry-time="20200101" ` + authorized(expired),
		`no-pty ` + authorized(nopty),
	}
	os.WriteFile(filepath.Join(home, ".ssh", "authorized_keys"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	p := policy(t, "")
	for _, c := range []struct {
		name string
		key  ssh.Signer
		ok   bool
	}{{"plain", plain, true}, {"command=", backup, false}, {"from=", fenced, false}, {"expired", expired, false}, {"no-pty", nopty, true}} {
		id, err := p.Authenticate(addr, c.key.PublicKey(), time.Now())
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, want trusted=%v", c.name, err, c.ok)
		}
		if c.name == "no-pty" && id != nil && id.Grants.PTY {
			t.Error("no-pty in the default's authorized_keys still grants a PTY")
		}
	}
	if len(p.DefaultSkipped) != 1 || !strings.Contains(p.DefaultSkipped[0], "line 2") || !strings.Contains(p.DefaultSkipped[0], "command") {
		t.Errorf("skipped: %q", p.DefaultSkipped)
	}
}

func TestCheckDefaultListener(t *testing.T) {
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:2222", true}, {"[::1]:2222", true}, {"127.0.0.2:22", true},
		{"0.0.0.0:2222", false}, {"[::]:2222", false}, {"192.0.2.1:22", false}, {":2222", false}, {"localhost:2222", false},
	} {
		if err := CheckDefaultListener(c.addr); (err == nil) != c.ok {
			t.Errorf("%s: %v, want allowed=%v", c.addr, err, c.ok)
		}
	}
}

func mustParse(t testing.TB, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(yaml), filepath.Join(t.TempDir(), "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// certVouched is what a relay says of an admin who used crt, naming
// principal.
func certVouched(crt *ssh.Certificate, principal string) Vouched {
	return Vouched{Admin: "carol", Method: "cert", Fingerprint: ssh.FingerprintSHA256(crt.Key),
		CA: ssh.FingerprintSHA256(crt.SignatureKey), Principal: principal,
		Certificate: base64.StdEncoding.EncodeToString(crt.Marshal())}
}
