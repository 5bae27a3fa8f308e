package keys

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/config"
)

// HostTrust decides which servers of the fleet are who they say, by their
// OpenSSH host certificates (trusted_host_ca_keys), as @cert-authority
// lines in known_hosts do for OpenSSH: a certificate of type host, signed
// by a trusted host CA with a signature a user's would need (no ssh-rsa
// SHA-1, no ssh-dss), within its validity window, whose principals name
// the server. Server names compare case-insensitively, as /server:NAME
// does. One rule is stricter than OpenSSH's: a certificate with no
// principals is refused, where OpenSSH takes it for any host name: in a
// fleet it would let any server be any other.
type HostTrust struct {
	cas   []ssh.PublicKey
	names map[string]string // upper-cased fleet name -> the name as configured
	// Revoked, when set, is asked about the certificate, its key and its
	// CA; an error refuses the certificate. NewPolicy sets it to the
	// revoked_keys check.
	Revoked func(ssh.PublicKey) error
	// checked remembers the certificates whose signature CheckCert
	// accepted, so that one peer connection verifies its certificate's
	// signature once, not at the offer, after signing and at every
	// session. Nil for none.
	checked *certCache
}

// certCache is a bounded set of certificates (with the principal they
// were checked for) whose CA signature and critical options were found
// good: those depend on nothing but the certificate's bytes. The CA's
// trust, the validity window and revocation are checked every time.
type certCache struct {
	mu sync.Mutex
	m  map[string]struct{}
}

// maxCheckedCerts bounds the cache: a fleet's peers, with room.
const maxCheckedCerts = 4096

func (c *certCache) has(key string) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[key]
	return ok
}

func (c *certCache) add(key string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCheckedCerts {
		c.m = make(map[string]struct{})
	}
	c.m[key] = struct{}{}
}

// newHostTrust reads trusted_host_ca_keys and the fleet's names (servers:
// and servers_file).
func newHostTrust(c *config.Config) (*HostTrust, error) {
	h := &HostTrust{names: make(map[string]string), checked: new(certCache)}
	for _, ca := range c.TrustedHostCAKeys {
		// An @cert-authority line from known_hosts is accepted as it is,
		// with its marker and host pattern; the pattern is not used:
		// the fleet's names are.
		line := strings.TrimSpace(ca.Value)
		if rest, ok := strings.CutPrefix(line, "@cert-authority"); ok {
			if f := strings.Fields(rest); len(f) > 1 {
				line = strings.Join(f[1:], " ")
			}
		}
		k, err := parseCAKey(c, "trusted_host_ca_keys", ca, line)
		if err != nil {
			return nil, err
		}
		h.cas = append(h.cas, k)
	}
	for name, srv := range c.Servers {
		// A peer pinned by its host key is that key and nothing else: a
		// certificate naming it must not take its name over.
		if srv.HostKey.Value == "" {
			h.names[strings.ToUpper(name)] = name
		}
	}
	return h, nil
}

// Hosts is the host-certificate trust of this policy.
func (p *Policy) Hosts() *HostTrust { return p.hosts }

// Enabled reports whether any host CA is trusted.
func (h *HostTrust) Enabled() bool { return h != nil && len(h.cas) > 0 }

// Fingerprints names the trusted host CAs, for telling a changed trust.
func (h *HostTrust) Fingerprints() string {
	fps := make([]string, len(h.cas))
	for i, ca := range h.cas {
		fps[i] = ssh.FingerprintSHA256(ca)
	}
	return strings.Join(fps, ",")
}

// CheckPeer is the relaying side's check of a peer's host key: the peer
// dialled as name must present a host certificate that names it.
func (h *HostTrust) CheckPeer(name string, key ssh.PublicKey, now time.Time) error {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return errors.New("the peer presented no host certificate (only a plain host key)")
	}
	principal := ""
	for _, pr := range cert.ValidPrincipals {
		if strings.EqualFold(pr, name) {
			principal = pr
			break
		}
	}
	err := h.check(cert, principal, now)
	if errors.Is(err, errNoPrincipal) {
		return fmt.Errorf("the host certificate is for %s, not %s", strings.Join(cert.ValidPrincipals, ", "), name)
	}
	return err
}

// errNoPrincipal is a certificate none of whose principals names the
// server; each side says so in its own words.
var errNoPrincipal = errors.New("no principal names the server")

// peer is the receiving side's check of a relaying server's host
// certificate: its first principal that names a server of the fleet is
// who it is.
func (h *HostTrust) peer(cert *ssh.Certificate, now time.Time) (string, error) {
	principal, name := "", ""
	for _, pr := range cert.ValidPrincipals {
		if n, ok := h.names[strings.ToUpper(pr)]; ok {
			principal, name = pr, n
			break
		}
	}
	if err := h.check(cert, principal, now); err != nil {
		return "", err
	}
	return name, nil
}

// check holds cert to OpenSSH's rules for a host certificate; principal
// is the one of its principals that names the server, or "" when none
// does.
func (h *HostTrust) check(cert *ssh.Certificate, principal string, now time.Time) error {
	if cert.CertType != ssh.HostCert {
		return errors.New("the certificate is not a host certificate")
	}
	if !h.trusted(cert.SignatureKey) {
		return fmt.Errorf("the host certificate is signed by %s, which is not a trusted host CA", ssh.FingerprintSHA256(cert.SignatureKey))
	}
	if err := checkCASignature(cert, "host certificate"); err != nil {
		return err
	}
	if len(cert.ValidPrincipals) == 0 {
		return errors.New("the host certificate names no principal (tsadmin requires the server's name)")
	}
	if principal == "" {
		return errNoPrincipal
	}
	unix := now.Unix()
	if unix < 0 || uint64(unix) < cert.ValidAfter {
		return fmt.Errorf("the host certificate is not valid before %s", certTime(cert.ValidAfter))
	}
	if cert.ValidBefore != ssh.CertTimeInfinity && uint64(unix) >= cert.ValidBefore {
		return fmt.Errorf("the host certificate expired at %s", certTime(cert.ValidBefore))
	}
	if h.Revoked != nil {
		for _, k := range []ssh.PublicKey{cert, cert.Key, cert.SignatureKey} {
			if err := h.Revoked(k); err != nil {
				return err
			}
		}
	}
	// CheckCert verifies the CA's signature, and refuses any critical
	// option: a host certificate has none that tsadmin knows. Its other
	// checks (principal, validity at now) were made above, so a success
	// for these bytes and this principal holds until the policy changes.
	key := string(cert.Marshal()) + "\x00" + principal
	if h.checked.has(key) {
		return nil
	}
	checker := &ssh.CertChecker{Clock: func() time.Time { return now }}
	if err := checker.CheckCert(principal, cert); err != nil {
		return fmt.Errorf("the host certificate is not valid: %v", strings.TrimPrefix(err.Error(), "ssh: "))
	}
	h.checked.add(key)
	return nil
}

func certTime(t uint64) string {
	return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
}

func (h *HostTrust) trusted(k ssh.PublicKey) bool {
	m := k.Marshal()
	return slices.ContainsFunc(h.cas, func(ca ssh.PublicKey) bool { return bytes.Equal(ca.Marshal(), m) })
}

// LoadHostCertificate reads this server's host certificate (the
// -cert.pub of ssh-keygen -s CA -h) and returns a signer that presents it
// with the host key. The certificate must be a host certificate of this
// host key that names this server (its name, case-insensitively); one
// that has expired or is not yet valid loads, with a warning, so that a
// renewal by reload is possible: peers refuse it meanwhile.
func LoadHostCertificate(c *config.Config, hostKey ssh.Signer, now time.Time) (signer ssh.Signer, warning string, err error) {
	path, name := c.Resolve(c.HostCertificate), c.Name
	data, err := c.ReadFile(c.HostCertificate)
	if err != nil {
		return nil, "", fmt.Errorf("host_certificate: %w", err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, "", fmt.Errorf("host_certificate %s: %v", path, err)
	}
	cert, ok := k.(*ssh.Certificate)
	if !ok {
		return nil, "", fmt.Errorf("host_certificate %s: a public key, not a certificate (sign it with ssh-keygen -s CA -h)", path)
	}
	if cert.CertType != ssh.HostCert {
		return nil, "", fmt.Errorf("host_certificate %s: a user certificate; sign the host key with ssh-keygen -h", path)
	}
	if !bytes.Equal(cert.Key.Marshal(), hostKey.PublicKey().Marshal()) {
		return nil, "", fmt.Errorf("host_certificate %s: certifies %s, not this server's host key %s", path,
			ssh.FingerprintSHA256(cert.Key), ssh.FingerprintSHA256(hostKey.PublicKey()))
	}
	if !slices.ContainsFunc(cert.ValidPrincipals, func(p string) bool { return strings.EqualFold(p, name) }) {
		return nil, "", fmt.Errorf("host_certificate %s: its principals (%s) do not include this server's name %s (ssh-keygen -n)",
			path, strings.Join(cert.ValidPrincipals, ", "), name)
	}
	signer, err = ssh.NewCertSigner(cert, hostKey)
	if err != nil {
		return nil, "", fmt.Errorf("host_certificate %s: %v", path, err)
	}
	unix := uint64(max(now.Unix(), 0))
	switch {
	case unix < cert.ValidAfter:
		warning = "the host certificate is not valid before " + certTime(cert.ValidAfter)
	case cert.ValidBefore != ssh.CertTimeInfinity && unix >= cert.ValidBefore:
		warning = "the host certificate expired at " + certTime(cert.ValidBefore)
	}
	return signer, warning, nil
}

// authenticatePeerCert is a relaying server that authenticates with its
// host certificate: it is the peer its certificate names.
func (p *Policy) authenticatePeerCert(cert *ssh.Certificate, now time.Time) (*Identity, error) {
	if !p.hosts.Enabled() {
		return nil, errors.New("a host certificate, but no host CA is trusted (trusted_host_ca_keys)")
	}
	name, err := p.hosts.peer(cert, now)
	if err != nil {
		if errors.Is(err, errNoPrincipal) {
			return nil, fmt.Errorf("no principal of the host certificate (%s) is a server of the fleet", strings.Join(cert.ValidPrincipals, ", "))
		}
		return nil, err
	}
	return &Identity{Peer: name, Method: "peer-cert", Fingerprint: ssh.FingerprintSHA256(cert.Key)}, nil
}
