package keys

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/config"
)

func checkKeyType(t string) error {
	for _, ok := range UserKeyTypes {
		if t == ok {
			return nil
		}
	}
	return fmt.Errorf("key type %s is not accepted (use ed25519, ecdsa or rsa)", t)
}

// ErrUnknownKey is returned for a key that maps to no admin.
var ErrUnknownKey = errors.New("the key belongs to no admin")

// Authenticate maps a public key or certificate presented from addr to an
// identity with its grants, enforcing key options, certificate rules and
// revoked_keys. It has no side effects: it is safe to call for keys that
// are only offered, and it must be called again once the key has signed.
func (p *Policy) Authenticate(addr net.Addr, key ssh.PublicKey, now time.Time) (*Identity, error) {
	if cert, ok := key.(*ssh.Certificate); ok {
		if err := p.revoked.Check(key); err != nil {
			return nil, err
		}
		if cert.CertType == ssh.HostCert {
			return p.authenticatePeerCert(cert, now)
		}
		return p.authenticateCert(addr, cert, now)
	}
	// A plain key is marshalled once, not once for each look-up: the
	// server authenticates each connection's key three times (offer,
	// signature, session), and x/crypto marshals by reflection.
	blob := key.Marshal()
	if err := p.revoked.checkBlob(blob); err != nil {
		return nil, err
	}
	e := p.byKey[string(blob)]
	if e == nil {
		if peer, ok := p.peers[string(blob)]; ok {
			return &Identity{Peer: peer, Method: "peer", Fingerprint: fingerprintBlob(blob)}, nil
		}
		return nil, ErrUnknownKey
	}
	if err := e.opts.check(addr, now); err != nil {
		return nil, err
	}
	return &Identity{
		Name: e.admin, Role: p.Admins[e.admin], Method: "key",
		Fingerprint: fingerprintBlob(blob),
		Grants:      Grants{PTY: !e.opts.noPTY},
	}, nil
}

// fingerprintBlob is ssh.FingerprintSHA256 of the key whose wire form is
// blob.
func fingerprintBlob(blob []byte) string {
	sum := sha256.Sum256(blob)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Vouched is what a relaying peer vouches for about the admin it relays:
// who they are on the peer and how they authenticated there.
type Vouched struct {
	Admin       string
	Method      string // "key" or "cert"
	Fingerprint string // SHA256 fingerprint of the key the admin used
	CA          string // for a certificate: the SHA256 fingerprint of its CA
	Principal   string // for a certificate: the principal that named the admin
	Certificate string // for a certificate: the certificate, base64 of its wire form
}

// Relayed maps an admin relayed by a peer to this server's own admin of
// that name, and only when the credential the peer vouches for is one
// this server would accept for that admin itself: the same key, or a
// certificate from a CA trusted here whose principal names the admin. A
// peer's host key vouches for how its admin authenticated there; it never
// makes a name alone worth this server's admin of that name.
func (p *Policy) Relayed(v Vouched, now time.Time) (*Identity, error) {
	role, ok := p.Admins[v.Admin]
	if !ok {
		return nil, fmt.Errorf("admin %q is not known on this server", v.Admin)
	}
	id := &Identity{Name: v.Admin, Role: role, Fingerprint: v.Fingerprint, Method: "relayed"}
	switch v.Method {
	case "key":
		e := p.byFingerprint[v.Fingerprint]
		if e == nil || e.admin != v.Admin {
			return nil, fmt.Errorf("the key %s is not admin %s's key on this server", v.Fingerprint, v.Admin)
		}
		if err := p.revoked.Check(e.key); err != nil {
			return nil, err
		}
		if err := e.opts.checkExpiry(now); err != nil {
			return nil, err
		}
		// from= names the addresses the admin may come from; a relayed
		// admin comes through the peer, from an address this server
		// cannot see.
		if len(e.opts.from) > 0 {
			return nil, fmt.Errorf("admin %s's key is limited by from= here, which a relayed command cannot meet", v.Admin)
		}
		return id, nil
	case "cert":
		// The certificate itself is checked as this server would check
		// its own admin's (trusted CA, signature, validity, principal,
		// revocation by key, serial or key ID), except for its
		// source-address, which a relayed command cannot meet.
		raw, err := base64.StdEncoding.DecodeString(v.Certificate)
		if err != nil || len(raw) == 0 {
			return nil, fmt.Errorf("the relay did not send admin %s's certificate", v.Admin)
		}
		k, err := ssh.ParsePublicKey(raw)
		cert, isCert := k.(*ssh.Certificate)
		if err != nil || !isCert {
			return nil, fmt.Errorf("the relayed certificate does not parse")
		}
		if _, limited := cert.CriticalOptions["source-address"]; limited {
			return nil, fmt.Errorf("admin %s's certificate is limited by source-address, which a relayed command cannot meet", v.Admin)
		}
		if err := p.revoked.Check(cert); err != nil {
			return nil, err
		}
		got, err := p.authenticateCert(nil, cert, now)
		if err != nil {
			return nil, err
		}
		if got.Name != v.Admin || got.Fingerprint != v.Fingerprint || got.CA != v.CA || got.Principal != v.Principal {
			return nil, fmt.Errorf("the relayed certificate is not what the relay says admin %s used", v.Admin)
		}
		id.CA, id.Principal = v.CA, v.Principal
		return id, nil
	}
	return nil, fmt.Errorf("the relay did not say which key admin %s used", v.Admin)
}

// certGrants turns a certificate's extensions into grants, as a key's
// options are: what is not granted is refused.
func certGrants(cert *ssh.Certificate) Grants {
	_, pty := cert.Extensions["permit-pty"]
	return Grants{PTY: pty}
}

func (p *Policy) authenticateCert(addr net.Addr, cert *ssh.Certificate, now time.Time) (*Identity, error) {
	if !p.trustedCA(cert.SignatureKey) {
		return nil, errors.New("the certificate is not signed by a trusted user CA")
	}
	// The CA's signature is held to the rules of a user's: no ssh-rsa
	// (SHA-1), no ssh-dss.
	if err := checkCASignature(cert, "certificate"); err != nil {
		return nil, err
	}
	if cert.CertType != ssh.UserCert {
		return nil, errors.New("not a user certificate")
	}
	// The principal that names a configured admin; the first one wins, so
	// a certificate is one identity, never a choice.
	admin := ""
	for _, pr := range cert.ValidPrincipals {
		if _, ok := p.Admins[pr]; ok {
			admin = pr
			break
		}
	}
	if admin == "" {
		return nil, fmt.Errorf("no principal of the certificate (%s) is an admin", strings.Join(cert.ValidPrincipals, ", "))
	}
	checker := &ssh.CertChecker{
		// force-command and any unknown critical option are refused:
		// tsadmin has no command to force.
		SupportedCriticalOptions: []string{"source-address"},
		Clock:                    func() time.Time { return now },
		IsUserAuthority:          p.trustedCA,
	}
	if err := checker.CheckCert(admin, cert); err != nil {
		return nil, err
	}
	if sa, ok := cert.CriticalOptions["source-address"]; ok {
		if !matchSourceAddress(sa, addr) {
			return nil, fmt.Errorf("the certificate is not allowed from %s (source-address)", addr)
		}
	}
	return &Identity{
		Name: admin, Role: p.Admins[admin], Method: "cert",
		Fingerprint: ssh.FingerprintSHA256(cert.Key),
		CA:          ssh.FingerprintSHA256(cert.SignatureKey), Principal: admin,
		Certificate: base64.StdEncoding.EncodeToString(cert.Marshal()),
		Grants:      certGrants(cert),
	}, nil
}

func (p *Policy) trustedCA(k ssh.PublicKey) bool {
	m := k.Marshal()
	for _, ca := range p.cas {
		if bytes.Equal(ca.Marshal(), m) {
			return true
		}
	}
	return false
}

// caByFingerprint returns the trusted CA with that SHA256 fingerprint.
func (p *Policy) caByFingerprint(fp string) ssh.PublicKey {
	for _, ca := range p.cas {
		if ssh.FingerprintSHA256(ca) == fp {
			return ca
		}
	}
	return nil
}

// matchSourceAddress matches addr against a certificate's source-address
// list: comma-separated addresses or CIDR blocks, nothing else (no
// negation, no patterns, as OpenSSH reads it). An empty or malformed list
// matches nothing.
func matchSourceAddress(list string, addr net.Addr) bool {
	var patterns []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if _, _, err := net.ParseCIDR(s); err != nil && net.ParseIP(s) == nil {
			return false
		}
		patterns = append(patterns, s)
	}
	return matchAddress(patterns, addr)
}

// checkCASignature holds a certificate's CA signature, user or host, to
// the rules of a user's: no ssh-rsa (SHA-1), no ssh-dss.
func checkCASignature(cert *ssh.Certificate, what string) error {
	if cert.Signature != nil && slices.Contains(UserSignatureAlgorithms, cert.Signature.Format) {
		return nil
	}
	format := ""
	if cert.Signature != nil {
		format = cert.Signature.Format
	}
	return fmt.Errorf("the %s is signed with %q, which is not accepted (no ssh-rsa SHA-1, no ssh-dss)", what, format)
}

// parseCAKey reads one CA key of the config (trusted_user_ca_keys,
// trusted_host_ca_keys): a plain public key of an accepted type.
func parseCAKey(c *config.Config, field string, ca config.Line, line string) (ssh.PublicKey, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("%s: line %d: %s: %v", c.Path, ca.Line, field, err)
	}
	if _, isCert := k.(*ssh.Certificate); isCert {
		return nil, fmt.Errorf("%s: line %d: %s: a CA must be a plain public key, not a certificate", c.Path, ca.Line, field)
	}
	if err := checkKeyType(k.Type()); err != nil {
		return nil, fmt.Errorf("%s: line %d: %s: %v", c.Path, ca.Line, field, err)
	}
	return k, nil
}
