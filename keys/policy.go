// Package keys decides who a connection is and what it may do. At
// authentication a verified key (or a certificate signed by a trusted user
// CA) becomes an Identity with a role; afterwards every "may this identity
// log off that session" goes through the one Allow decision. It also loads
// and creates the server's host key.
package keys

import (
	"bytes"
	"fmt"
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
	// Peer is set, instead of Name, when the connection is a peer server
	// authenticating with its host key to relay commands.
	Peer string
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
}

type keyEntry struct {
	admin string
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
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ca.Value))
		if err != nil {
			return nil, fmt.Errorf("%s: line %d: trusted_user_ca_keys: %v", c.Path, ca.Line, err)
		}
		if _, isCert := k.(*ssh.Certificate); isCert {
			return nil, fmt.Errorf("%s: line %d: trusted_user_ca_keys: a CA must be a plain public key, not a certificate", c.Path, ca.Line)
		}
		p.cas = append(p.cas, k)
	}
	var err error
	if p.hosts, err = newHostTrust(c); err != nil {
		return nil, err
	}
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
	p.byKey[k] = &keyEntry{admin: admin, opts: e.opts}
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

// addRunningUsersKeys is the first-run default.
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
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' {
				continue
			}
			// Options in the user's own authorized_keys are OpenSSH's
			// business; take the key alone, and skip what does not parse.
			k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
			if err != nil {
				continue
			}
			if _, isCert := k.(*ssh.Certificate); isCert {
				continue
			}
			p.byKey[string(k.Marshal())] = &keyEntry{admin: admin}
			added = true
		}
		if added {
			p.DefaultKeyFiles = append(p.DefaultKeyFiles, f)
		}
	}
	return nil
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

// RoleOf returns the role of the admin, and whether the admin exists.
func (p *Policy) RoleOf(admin string) (string, bool) {
	r, ok := p.Admins[admin]
	return r, ok
}

// KeyCount is the number of distinct keys trusted.
func (p *Policy) KeyCount() int { return len(p.byKey) }
