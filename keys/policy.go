// Package keys decides who a connection is and what it may do. At
// authentication a verified key (or a certificate signed by a trusted user
// CA) becomes an Identity with a role; afterwards every "may this identity
// log off that session" goes through the one Allow decision. It also loads
// and creates the server's host key.
package keys

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/config"
)

// Identity is an authenticated admin. It is made only from a key that
// signed, never from a key that was only offered, nor from the SSH user name.
type Identity struct {
	Name        string // the admin's name from the config
	Role        string // the admin's role
	Fingerprint string // SHA256 fingerprint of the key that authenticated
	Method      string // "key", "cert", "peer", or "relayed"
	// CA is the SHA256 fingerprint of the CA that signed the certificate,
	// and Principal the certificate's principal that names the admin;
	// both empty for a plain key.
	CA, Principal string
	// Certificate is the certificate itself (base64 of its wire form),
	// for a peer to check when the admin's command is relayed.
	Certificate string
	// Grants is what the connection may do beyond running commands,
	// decided once at authentication.
	Grants Grants
	// Peer is set, instead of Name, when the connection is a peer server
	// authenticating with its host key to relay commands.
	Peer string
}

// Grants are the permissions an identity carries from authentication on,
// decided once, the same way for a key's options and a certificate's
// extensions, as OpenSSH's sshauthopt: never looked up again.
type Grants struct {
	// PTY: a plain key unless no-pty or restrict (without pty); a
	// certificate only with the permit-pty extension; never a peer.
	PTY bool
}

// Policy is the compiled config: identities by key, roles, trusted CAs. It
// is immutable; a reload builds a new one.
type Policy struct {
	byKey map[string]*keyEntry // ssh wire format of the public key -> entry
	roles map[string][]selector
	// noMatch is each role's "no selector matches" rule text, made once.
	noMatch map[string]string
	cas     []ssh.PublicKey
	peers   map[string]string // ssh wire format of a peer's host key -> peer name
	hosts   *HostTrust        // peers by host certificate (hostca.go)
	// Admins lists the admin names, for the first log lines and reloads.
	Admins map[string]string // name -> role
	// Default reports that no admins were configured and the running user's
	// own keys were trusted as operators.
	Default bool
	// DefaultKeyFiles are the files the default keys were read from.
	DefaultKeyFiles []string
	// DefaultSkipped are the keys of those files that the default does
	// not trust, each "FILE: line N: reason" (command=, a bad option, ...).
	DefaultSkipped []string

	byFingerprint map[string]*keyEntry // SHA256 fingerprint -> entry, for relayed admins
	revoked       *Revocations         // revoked_keys; nil when not configured
}

type keyEntry struct {
	admin string
	key   ssh.PublicKey
	opts  keyOptions
}

// FirstRunRole is the role given to the running user's keys when no admins
// are configured.
const FirstRunRole = "operator"

// NewPolicy compiles the config. With no admins configured it trusts the
// public keys of the user who runs the server (~/.ssh/authorized_keys and
// ~/.ssh/id_*.pub) as operators.
func NewPolicy(c *config.Config) (*Policy, error) {
	p := &Policy{
		byKey:   make(map[string]*keyEntry),
		roles:   make(map[string][]selector),
		noMatch: make(map[string]string),
		Admins:  make(map[string]string),
		peers:   make(map[string]string),

		byFingerprint: make(map[string]*keyEntry),
	}
	if c.RevokedKeys != "" {
		data, err := c.ReadFile(c.RevokedKeys)
		if err == nil {
			p.revoked, err = ParseRevocations(data)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: revoked_keys: %s: %v", c.Path, c.Resolve(c.RevokedKeys), err)
		}
	}
	for name, r := range c.Roles {
		p.roles[name] = []selector{}
		p.noMatch[name] = "role " + name + ": no selector matches"
		for _, sel := range r.Logoff {
			compiled, err := config.ParseSelector(sel.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: line %d: role %s: %v", c.Path, sel.Line, name, err)
			}
			p.roles[name] = append(p.roles[name], selector{Selector: compiled, rule: "role " + name + ": " + compiled.Text})
		}
	}
	for _, a := range c.Admins {
		p.Admins[a.Name] = a.Role
		for _, k := range a.Keys {
			entry, err := parseKeyLine(k.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: line %d: admin %s: %v", c.Path, k.Line, a.Name, err)
			}
			if err := p.addKey(entry, a.Name); err != nil {
				return nil, fmt.Errorf("%s: line %d: admin %s: %v", c.Path, k.Line, a.Name, err)
			}
		}
		if a.KeysFile != "" {
			if err := p.addKeysFile(c, a.KeysFile, a.Name); err != nil {
				return nil, err
			}
		}
	}
	for _, ca := range c.TrustedUserCAKeys {
		k, err := parseCAKey(c, "trusted_user_ca_keys", ca, ca.Value)
		if err != nil {
			return nil, err
		}
		p.cas = append(p.cas, k)
	}
	var err error
	if p.hosts, err = newHostTrust(c); err != nil {
		return nil, err
	}
	// A revoked host key, host certificate or host CA is refused as a
	// user's is.
	p.hosts.Revoked = p.revoked.Check
	for name, srv := range c.Servers {
		if srv.HostKey.Value == "" {
			continue // trusted by its host certificate
		}
		k, err := parsePeerKey(srv.HostKey.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: line %d: servers: %s: host_key: %v", c.Path, srv.HostKey.Line, name, err)
		}
		if owner, dup := p.byKey[string(k.Marshal())]; dup {
			return nil, fmt.Errorf("%s: line %d: servers: %s: host_key is also admin %s's key", c.Path, srv.HostKey.Line, name, owner.admin)
		}
		p.peers[string(k.Marshal())] = name
	}
	if len(c.Admins) == 0 {
		if err := p.addRunningUsersKeys(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Policy) addKey(e parsedKey, admin string) error {
	k := string(e.key.Marshal())
	if other, dup := p.byKey[k]; dup && other.admin != admin {
		return fmt.Errorf("key %s already belongs to admin %s", ssh.FingerprintSHA256(e.key), other.admin)
	}
	entry := &keyEntry{admin: admin, key: e.key, opts: e.opts}
	p.byKey[k] = entry
	p.byFingerprint[ssh.FingerprintSHA256(e.key)] = entry
	return nil
}

func (p *Policy) addKeysFile(c *config.Config, name, admin string) error {
	path := c.Resolve(name)
	data, err := c.ReadFile(name)
	if err != nil {
		return fmt.Errorf("%s: admin %s: keys_file: %v", c.Path, admin, err)
	}
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		entry, err := parseKeyLine(string(line))
		if err != nil {
			return fmt.Errorf("%s: line %d: %v", path, i+1, err)
		}
		if err := p.addKey(entry, admin); err != nil {
			return fmt.Errorf("%s: line %d: %v", path, i+1, err)
		}
	}
	return nil
}

// addRunningUsersKeys is the first-run default. Its keys go through the
// same parsing as configured keys, so their options hold (from=,
// expiry-time, no-pty, restrict); a key with an option tsadmin cannot
// honour (command=, permitopen=, ...) is not trusted, and is reported in
// DefaultSkipped.
func (p *Policy) addRunningUsersKeys() error {
	p.Default = true
	home, err := os.UserHomeDir()
	if err != nil {
		return fmt.Errorf("no admins are configured and the home directory is unknown: %v", err)
	}
	admin := "admin"
	if u := os.Getenv("USER"); config.ValidName(u) {
		admin = u
	}
	p.Admins[admin] = FirstRunRole
	p.roles[FirstRunRole] = []selector{{Selector: config.Selector{Kind: "*", Text: "*"}, rule: "role " + FirstRunRole + ": *"}}
	files, _ := filepath.Glob(filepath.Join(home, ".ssh", "id_*.pub"))
	files = append([]string{filepath.Join(home, ".ssh", "authorized_keys")}, files...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		added := false
		for i, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' {
				continue
			}
			entry, err := parseKeyLine(line)
			if err == nil {
				err = p.addKey(entry, admin)
			}
			if err != nil {
				p.DefaultSkipped = append(p.DefaultSkipped, fmt.Sprintf("%s: line %d: %v", f, i+1, err))
				continue
			}
			added = true
		}
		if added {
			p.DefaultKeyFiles = append(p.DefaultKeyFiles, f)
		}
	}
	return nil
}

// CheckDefaultListener refuses the first-run default (no admins: the
// running user's keys are operators) on a listener that is not on
// loopback. A reload that would turn the default on is checked against the
// address the server really listens on.
func CheckDefaultListener(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("no admins are configured, and the first-run default (the running user's keys as operators) is only for a listener on loopback, not %s", addr)
}

// parsePeerKey reads a peer's pinned host key: "ssh-ed25519 AAAA...".
func parsePeerKey(line string) (ssh.PublicKey, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, err
	}
	if k.Type() != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("type %s; tsadmin host keys are ed25519", k.Type())
	}
	return k, nil
}

// PeerKey returns the pinned host key of a configured peer.
func PeerKey(line string) (ssh.PublicKey, error) { return parsePeerKey(line) }

// KeyCount is the number of distinct keys trusted.
func (p *Policy) KeyCount() int { return len(p.byKey) }
