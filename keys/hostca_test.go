package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// hostCert certifies a fresh host key; edit changes the certificate
// before the CA signs it.
func hostCert(t testing.TB, ca ssh.Signer, edit func(*ssh.Certificate)) *ssh.Certificate {
	t.Helper()
	now := time.Now()
	c := &ssh.Certificate{
		Key: newSigner(t).PublicKey(), CertType: ssh.HostCert, KeyId: "wf13", ValidPrincipals: []string{"wf13"},
		ValidAfter: uint64(now.Add(-time.Hour).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
	}
	if edit != nil {
		edit(c)
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHostCertificateRules(t *testing.T) {
	ca := newSigner(t)
	p := policy(t, "name: HUB\ntrusted_host_ca_keys: [\"@cert-authority *.lab "+authorized(ca)+"\"]\n"+
		"servers: { WF13: { address: \"127.0.0.1:1\" } }\n")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaSigner, _ := ssh.NewSignerFromKey(rsaKey)
	sha1CA, _ := ssh.NewSignerWithAlgorithms(rsaSigner.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSA})
	pSHA1 := policy(t, "name: HUB\ntrusted_host_ca_keys: [\""+authorized(rsaSigner)+"\"]\nservers: { WF13: { address: \"127.0.0.1:1\" } }\n")
	now := time.Now()
	for _, c := range []struct {
		what   string
		p      *Policy
		cert   *ssh.Certificate
		reason string // "" for accepted
	}{
		{"valid, principal in another case", p, hostCert(t, ca, nil), ""},
		{"no principals", p, hostCert(t, ca, func(c *ssh.Certificate) { c.ValidPrincipals = nil }), "names no principal"},
		{"another name", p, hostCert(t, ca, func(c *ssh.Certificate) { c.ValidPrincipals = []string{"wf14"} }), "for wf14, not WF13"},
		{"a user certificate", p, hostCert(t, ca, func(c *ssh.Certificate) { c.CertType = ssh.UserCert }), "not a host certificate"},
		{"expired", p, hostCert(t, ca, func(c *ssh.Certificate) { c.ValidBefore = uint64(now.Add(-time.Minute).Unix()) }), "expired at"},
		{"not yet valid", p, hostCert(t, ca, func(c *ssh.Certificate) { c.ValidAfter = uint64(now.Add(time.Hour).Unix()) }), "not valid before"},
		{"untrusted CA", p, hostCert(t, newSigner(t), nil), "not a trusted host CA"},
		{"a critical option", p, hostCert(t, ca, func(c *ssh.Certificate) { c.CriticalOptions = map[string]string{"force-command": "x"} }), "unsupported critical option"},
		{"ssh-rsa (SHA-1) CA signature", pSHA1, hostCert(t, sha1CA, nil), `signed with "ssh-rsa"`},
		{"rsa-sha2-512 CA signature", pSHA1, hostCert(t, rsaSigner, nil), ""},
	} {
		// The relaying side, checking the peer it dialled.
		err := c.p.Hosts().CheckPeer("WF13", c.cert, now)
		// The receiving side, at authentication.
		id, authErr := c.p.Authenticate(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, c.cert, now)
		if c.reason == "" {
			if err != nil || authErr != nil || id.Peer != "WF13" || id.Name != "" {
				t.Errorf("%s: refused: %v / %v %+v", c.what, err, authErr, id)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: as a peer: want %q, got %v", c.what, c.reason, err)
		}
		if authErr == nil {
			t.Errorf("%s: accepted at authentication as %+v", c.what, id)
		}
	}
	if err := p.Hosts().CheckPeer("WF13", newSigner(t).PublicKey(), now); err == nil || !strings.Contains(err.Error(), "no host certificate") {
		t.Errorf("a plain host key: %v", err)
	}
	// No host CA: a host certificate authenticates nobody.
	none := policy(t, "name: HUB\n")
	if _, err := none.Authenticate(&net.TCPAddr{}, hostCert(t, ca, nil), now); err == nil {
		t.Error("a host certificate was accepted with no trusted host CA")
	}
}

// A peer pinned by its host key cannot be taken over by a certificate
// that names it: the red team had a host-CA certificate for "wp" log in
// as the pinned peer WP.
func TestACertificateCannotTakeAPinnedPeersName(t *testing.T) {
	ca, pinned := newSigner(t), newSigner(t)
	p := policy(t, "name: HUB\ntrusted_host_ca_keys: [\""+authorized(ca)+"\"]\n"+
		"servers:\n  WP: { address: \"127.0.0.1:1\", host_key: \""+authorized(pinned)+"\" }\n  WF13: { address: \"127.0.0.1:2\" }\n")
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5}
	now := time.Now()
	if _, err := p.Authenticate(addr, hostCert(t, ca, func(c *ssh.Certificate) { c.ValidPrincipals = []string{"wp"} }), now); err == nil {
		t.Fatal("a certificate naming the pinned peer WP was accepted as WP")
	}
	if id, err := p.Authenticate(addr, pinned.PublicKey(), now); err != nil || id.Peer != "WP" {
		t.Fatalf("the pinned key itself: %v %+v", err, id)
	}
	if id, err := p.Authenticate(addr, hostCert(t, ca, nil), now); err != nil || !strings.EqualFold(id.Peer, "WF13") {
		t.Fatalf("an unpinned peer's certificate: %v %+v", err, id)
	}
}

// A certificate whose signature was checked once is still held to its
// validity window and to revoked_keys every time after.
func TestACheckedCertificateIsStillCheckedForTimeAndRevocation(t *testing.T) {
	ca := newSigner(t)
	p := policy(t, "name: HUB\ntrusted_host_ca_keys: [\""+authorized(ca)+"\"]\nservers: { WF13: { address: \"127.0.0.1:1\" } }\n")
	cert := hostCert(t, ca, nil)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	now := time.Now()
	for range 2 { // the second is answered by the cache
		if _, err := p.Authenticate(addr, cert, now); err != nil {
			t.Fatalf("a valid certificate: %v", err)
		}
	}
	if _, err := p.Authenticate(addr, cert, now.Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("the same certificate after it expired: %v", err)
	}
	if err := p.Hosts().CheckPeer("WF13", cert, now.Add(-2*time.Hour)); err == nil || !strings.Contains(err.Error(), "not valid before") {
		t.Errorf("the same certificate before it was valid: %v", err)
	}
	p.Hosts().Revoked = func(k ssh.PublicKey) error {
		if bytes.Equal(k.Marshal(), cert.Key.Marshal()) {
			return errors.New("the key is revoked")
		}
		return nil
	}
	if _, err := p.Authenticate(addr, cert, now); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("the same certificate once its key was revoked: %v", err)
	}
	// Other bytes (a forged signature on the same fields) are checked
	// afresh.
	forged := *cert
	sig := *cert.Signature
	sig.Blob = append([]byte(nil), sig.Blob...)
	sig.Blob[0] ^= 1
	forged.Signature = &sig
	p.Hosts().Revoked = nil
	if _, err := p.Authenticate(addr, &forged, now); err == nil {
		t.Error("a certificate with a forged signature was accepted after the genuine one")
	}
}
