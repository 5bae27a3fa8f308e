package keys

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/config"
)

// keygen runs the real ssh-keygen in dir.
func keygen(t testing.TB, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("ssh-keygen", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newKeyFile makes an ed25519 key pair name, name.pub in dir.
func newKeyFile(t testing.TB, dir, name string) ssh.PublicKey {
	t.Helper()
	keygen(t, dir, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", name)
	return readPub(t, filepath.Join(dir, name+".pub"))
}

func readPub(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signFile certifies name.pub with ca; it returns the certificate.
func signFile(t testing.TB, dir, ca, name, id string, serial int) *ssh.Certificate {
	t.Helper()
	keygen(t, dir, "-q", "-s", ca, "-I", id, "-n", "erin", "-z", fmt.Sprint(serial), "-V", "-5m:+1h", name+".pub")
	return readPub(t, filepath.Join(dir, name+"-cert.pub")).(*ssh.Certificate)
}

// krlFixture is a KRL made by the real ssh-keygen -k, and what it should
// and should not revoke.
type krlFixture struct {
	krl              []byte
	revoked, allowed map[string]ssh.PublicKey
}

func makeKRL(t testing.TB) krlFixture {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen is not installed (scripts/install-deps)")
	}
	dir := t.TempDir()
	for _, ca := range []string{"ca", "ca2", "ca3"} {
		newKeyFile(t, dir, ca)
	}
	for _, u := range []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "p1", "p2", "p3", "p4"} {
		newKeyFile(t, dir, u)
	}
	f := krlFixture{revoked: map[string]ssh.PublicKey{}, allowed: map[string]ssh.PublicKey{}}
	f.revoked["serial in a list"] = signFile(t, dir, "ca", "u1", "u1", 5)
	f.revoked["serial in a range"] = signFile(t, dir, "ca", "u2", "u2", 12)
	f.revoked["serial in a bitmap"] = signFile(t, dir, "ca", "u3", "u3", 204)
	f.revoked["key ID under the CA"] = signFile(t, dir, "ca", "u4", "lost-laptop", 300)
	f.allowed["the same key ID from another CA"] = signFile(t, dir, "ca2", "u5", "lost-laptop", 301)
	f.revoked["signed by a revoked CA"] = signFile(t, dir, "ca3", "u6", "u6", 302)
	f.allowed["another serial"] = signFile(t, dir, "ca", "u7", "u7", 13000)
	f.allowed["the same serial from another CA"] = signFile(t, dir, "ca2", "u8", "u8", 5)
	f.revoked["explicit key"] = readPub(t, filepath.Join(dir, "p1.pub"))
	f.revoked["SHA256 fingerprint"] = readPub(t, filepath.Join(dir, "p2.pub"))
	f.revoked["SHA1 hash"] = readPub(t, filepath.Join(dir, "p4.pub"))
	f.allowed["plain key"] = readPub(t, filepath.Join(dir, "p3.pub"))
	f.allowed["a CA"] = readPub(t, filepath.Join(dir, "ca.pub"))
	// Serials 200..230 in steps of 2: dense enough that ssh-keygen writes
	// a bitmap.
	var spec strings.Builder
	spec.WriteString("serial: 5\nserial: 10-15\nid: lost-laptop\n")
	for s := 200; s <= 230; s += 2 {
		fmt.Fprintf(&spec, "serial: %d\n", s)
	}
	os.WriteFile(filepath.Join(dir, "spec1"), []byte(spec.String()), 0o600)
	keygen(t, dir, "-k", "-f", "krl", "-s", "ca.pub", "spec1")
	fp := ssh.FingerprintSHA256(f.revoked["SHA256 fingerprint"])
	os.WriteFile(filepath.Join(dir, "spec2"), []byte("key: "+string(ssh.MarshalAuthorizedKey(f.revoked["explicit key"]))+"hash: "+fp+"\nsha1: "+string(ssh.MarshalAuthorizedKey(f.revoked["SHA1 hash"]))+"key: "+string(ssh.MarshalAuthorizedKey(readPub(t, filepath.Join(dir, "ca3.pub"))))), 0o600)
	keygen(t, dir, "-k", "-u", "-f", "krl", "spec2")
	var err error
	if f.krl, err = os.ReadFile(filepath.Join(dir, "krl")); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestKRLFromSSHKeygen(t *testing.T) {
	f := makeKRL(t)
	rv, err := ParseRevocations(f.krl)
	if err != nil {
		t.Fatal(err)
	}
	bitmaps := 0
	for _, c := range rv.certs {
		bitmaps += len(c.bitmaps)
	}
	if bitmaps == 0 || len(rv.sha1) == 0 {
		t.Errorf("ssh-keygen wrote %d serial bitmaps and %d SHA1 hashes: a case is not exercised", bitmaps, len(rv.sha1))
	}
	for name, k := range f.revoked {
		if err := rv.Check(k); err == nil {
			t.Errorf("%s: not revoked", name)
		}
	}
	for name, k := range f.allowed {
		if err := rv.Check(k); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestRevokedKeyList(t *testing.T) {
	dir := t.TempDir()
	revoked, kept := newKeyFile(t, dir, "revoked"), newKeyFile(t, dir, "kept")
	newKeyFile(t, dir, "ca")
	cert := signFile(t, dir, "ca", "revoked", "r", 1)
	rv, err := ParseRevocations([]byte("# lost\n" + string(ssh.MarshalAuthorizedKey(revoked))))
	if err != nil {
		t.Fatal(err)
	}
	if rv.Check(revoked) == nil || rv.Check(cert) == nil || rv.Check(kept) != nil {
		t.Errorf("key list: revoked %v, its certificate %v, kept %v", rv.Check(revoked), rv.Check(cert), rv.Check(kept))
	}
	// A CA listed revokes what it signed.
	rv, _ = ParseRevocations(ssh.MarshalAuthorizedKey(cert.SignatureKey))
	if rv.Check(cert) == nil {
		t.Error("a certificate of a revoked CA is accepted")
	}
	if _, err := ParseRevocations([]byte("ssh-ed25519 AAAA\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a bad line: %v", err)
	}
}

func TestKRLRefusesWhatItCannotRead(t *testing.T) {
	header := []byte(krlMagic + "\x00\x00\x00\x01" + strings.Repeat("\x00", 24) + "\x00\x00\x00\x00\x00\x00\x00\x00")
	cases := map[string][]byte{
		"unknown section":    append(bytes.Clone(header), 9, 0, 0, 0, 0),
		"critical extension": append(bytes.Clone(header), 255, 0, 0, 0, 10, 0, 0, 0, 1, 'x', 1, 0, 0, 0, 0),
		"truncated":          append(bytes.Clone(header), 2, 0, 0, 0, 9),
		"version 2":          []byte(krlMagic + "\x00\x00\x00\x02"),
	}
	for name, data := range cases {
		if _, err := ParseRevocations(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A certificate section with no CA key applies to every CA (ssh-keygen
	// 9.2 cannot write one; OpenSSH reads it).
	ca, holder := newSigner(t), newSigner(t)
	crt := &ssh.Certificate{Key: holder.PublicKey(), KeyId: "stolen", CertType: ssh.UserCert}
	if err := crt.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	ids := ssh.Marshal(struct{ ID string }{"stolen"})
	sub := append([]byte{krlCertKeyID}, ssh.Marshal(struct{ B []byte }{ids})...)
	sec := append(ssh.Marshal(struct{ CA, Reserved []byte }{nil, nil}), sub...)
	anyCA := append(append(bytes.Clone(header), krlCertificates), ssh.Marshal(struct{ B []byte }{sec})...)
	rv, err := ParseRevocations(anyCA)
	if err != nil {
		t.Fatal(err)
	}
	if rv.Check(crt) == nil {
		t.Error("a key ID revoked for any CA is accepted")
	}
	// A non-critical extension is skipped.
	ok := append(bytes.Clone(header), 255, 0, 0, 0, 10, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 0)
	if _, err := ParseRevocations(ok); err != nil {
		t.Errorf("a non-critical extension: %v", err)
	}
}

// The revoked_keys file is named in the config, relative to it, and an
// unreadable one stops the load with the file and the reason.
func TestRevokedKeysInConfig(t *testing.T) {
	dir := t.TempDir()
	k := newKeyFile(t, dir, "k")
	os.WriteFile(filepath.Join(dir, "revoked"), ssh.MarshalAuthorizedKey(k), 0o600)
	yaml := fmt.Sprintf("roles: { v: { logoff: [] } }\nadmins:\n  - { name: erin, role: v, keys: [%q] }\nrevoked_keys: revoked\n",
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
	c, err := config.Parse([]byte(yaml), filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPolicy(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Authenticate(addr, k, time.Now()); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a revoked admin key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "revoked"), []byte(krlMagic+"\x00\x00\x00\x01"+strings.Repeat("\x00", 32)+"\x07"), 0o600)
	if _, err := NewPolicy(c); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "revoked")) {
		t.Errorf("a broken KRL: %v", err)
	}
}

func FuzzParseRevocations(f *testing.F) {
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		f.Add(makeKRL(f).krl)
	}
	f.Add([]byte(krlMagic))
	f.Add([]byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1 x\n"))
	ca, holder := newSigner(f), newSigner(f)
	crt := &ssh.Certificate{Key: holder.PublicKey(), Serial: 204, KeyId: "stolen", CertType: ssh.UserCert}
	if err := crt.SignCert(rand.Reader, ca); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rv, err := ParseRevocations(data)
		if err != nil {
			return
		}
		rv.Check(holder.PublicKey())
		rv.Check(crt)
		rv.CheckFingerprint(ssh.FingerprintSHA256(holder.PublicKey()))
	})
}
