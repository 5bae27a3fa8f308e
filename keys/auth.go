package keys

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// User key algorithms accepted for authentication: no ssh-rsa (SHA-1), no
// ssh-dss. Certificates are accepted when their signature key is one of
// these.
var userKeyTypes = []string{
	ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256,
	ssh.KeyAlgoRSA,
}

func checkKeyType(t string) error {
	for _, ok := range userKeyTypes {
		if t == ok {
			return nil
		}
	}
	return fmt.Errorf("key type %s is not accepted (use ed25519, ecdsa or rsa)", t)
}

// ErrUnknownKey is returned for a key that maps to no admin.
var ErrUnknownKey = errors.New("the key belongs to no admin")

// Authenticate maps a public key or certificate presented from addr to an
// identity, enforcing key options and certificate rules. It has no side
// effects: it is safe to call for keys that are only offered, and it must be
// called again once the key has signed.
func (p *Policy) Authenticate(addr net.Addr, key ssh.PublicKey, now time.Time) (*Identity, error) {
	if cert, ok := key.(*ssh.Certificate); ok && cert.CertType == ssh.HostCert {
		return p.authenticatePeerCert(cert, now)
	}
	if cert, ok := key.(*ssh.Certificate); ok {
		return p.authenticateCert(addr, cert, now)
	}
	e := p.byKey[string(key.Marshal())]
	if e == nil {
		if peer, ok := p.peers[string(key.Marshal())]; ok {
			return &Identity{Peer: peer, Method: "peer", Fingerprint: ssh.FingerprintSHA256(key)}, nil
		}
		return nil, ErrUnknownKey
	}
	if err := e.opts.check(addr, now); err != nil {
		return nil, err
	}
	return &Identity{
		Name: e.admin, Role: p.Admins[e.admin], Method: "key",
		Fingerprint: ssh.FingerprintSHA256(key),
	}, nil
}

// Relayed maps an identity relayed by a peer to this server's own admin of
// that name: the peer vouches for who authenticated, this server decides
// what they may do. An admin this server does not know is refused.
func (p *Policy) Relayed(admin, fingerprint string) (*Identity, error) {
	role, ok := p.Admins[admin]
	if !ok {
		return nil, fmt.Errorf("admin %q is not known on this server", admin)
	}
	return &Identity{Name: admin, Role: role, Fingerprint: fingerprint, Method: "relayed"}, nil
}

// NoPTY reports whether the key's options forbid a PTY (no-pty, restrict).
func (p *Policy) NoPTY(key ssh.PublicKey) bool {
	e := p.byKey[string(key.Marshal())]
	return e != nil && e.opts.noPTY
}

func (p *Policy) authenticateCert(addr net.Addr, cert *ssh.Certificate, now time.Time) (*Identity, error) {
	if !p.trustedCA(cert.SignatureKey) {
		return nil, errors.New("the certificate is not signed by a trusted user CA")
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
		if !matchCIDRs(sa, addr) {
			return nil, fmt.Errorf("the certificate is not allowed from %s (source-address)", addr)
		}
	}
	return &Identity{
		Name: admin, Role: p.Admins[admin], Method: "cert",
		Fingerprint: ssh.FingerprintSHA256(cert.Key),
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

// matchCIDRs matches addr against a certificate's source-address list:
// comma-separated addresses or CIDR blocks. An empty list matches nothing.
func matchCIDRs(list string, addr net.Addr) bool {
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			if a := net.ParseIP(s); a != nil && a.Equal(ip) {
				return true
			}
			continue
		}
		if _, n, err := net.ParseCIDR(s); err == nil && n.Contains(ip) {
			return true
		}
	}
	return false
}
