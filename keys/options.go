package keys

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// keyOptions are the authorized_keys options of one key, parsed once, as
// OpenSSH's auth-options.c does, and enforced in one place (checkOptions).
type keyOptions struct {
	from   []string  // from="pattern-list"; empty means any address
	expiry time.Time // expiry-time="..."; zero means never
	noPTY  bool      // no-pty, or restrict without pty
}

type parsedKey struct {
	key  ssh.PublicKey
	opts keyOptions
}

// parseKeyLine reads one authorized_keys line: options, then the key.
// Options that mean nothing for tsadmin because tsadmin never grants what
// they take away (forwarding, X11, user rc) are accepted; options that would
// grant or change something tsadmin does not do (command=, environment=,
// permitopen=, tunnel=, cert-authority, ...) are refused, so that a key file
// never says more than the server will honour.
func parseKeyLine(line string) (parsedKey, error) {
	k, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return parsedKey{}, fmt.Errorf("not a public key: %v", err)
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return parsedKey{}, fmt.Errorf("one key per line")
	}
	if _, isCert := k.(*ssh.Certificate); isCert {
		return parsedKey{}, fmt.Errorf("a certificate is not an admin key: trust its CA in trusted_user_ca_keys")
	}
	if err := checkKeyType(k.Type()); err != nil {
		return parsedKey{}, err
	}
	pk := parsedKey{key: k}
	restrict, pty := false, false
	for _, o := range options {
		name, value, hasValue := strings.Cut(o, "=")
		switch strings.ToLower(name) {
		case "restrict":
			restrict = true
		case "pty":
			pty = true
		case "no-pty":
			pk.opts.noPTY = true
		case "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding", "no-user-rc":
			// tsadmin grants none of these anyway.
		case "from":
			v, err := unquote(value, hasValue, name)
			if err != nil {
				return parsedKey{}, err
			}
			pk.opts.from = strings.Split(v, ",")
			for _, pat := range pk.opts.from {
				if err := checkAddrPattern(pat); err != nil {
					return parsedKey{}, err
				}
			}
		case "expiry-time":
			v, err := unquote(value, hasValue, name)
			if err != nil {
				return parsedKey{}, err
			}
			t, err := parseExpiry(v)
			if err != nil {
				return parsedKey{}, err
			}
			pk.opts.expiry = t
		default:
			return parsedKey{}, fmt.Errorf("option %q is not supported by tsadmin (supported: from=, expiry-time=, restrict, pty, no-pty, no-*-forwarding, no-user-rc)", name)
		}
	}
	if restrict && !pty {
		pk.opts.noPTY = true
	}
	return pk, nil
}

func unquote(value string, hasValue bool, name string) (string, error) {
	if !hasValue || len(value) < 2 || value[0] != '"' || value[len(value)-1] != '"' {
		return "", fmt.Errorf("option %s needs a quoted value: %s=\"...\"", name, name)
	}
	return value[1 : len(value)-1], nil
}

// parseExpiry reads YYYYMMDD[HHMM[SS]], in local time, or UTC with a Z
// suffix, as sshd(8) does.
func parseExpiry(v string) (time.Time, error) {
	loc := time.Local
	if strings.HasSuffix(v, "Z") || strings.HasSuffix(v, "z") {
		v, loc = v[:len(v)-1], time.UTC
	}
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(v)]
	if !ok {
		return time.Time{}, fmt.Errorf("expiry-time %q: use YYYYMMDD[HHMM[SS]]", v)
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("expiry-time %q: %v", v, err)
	}
	return t, nil
}

func checkAddrPattern(pat string) error {
	p := strings.TrimPrefix(pat, "!")
	if p == "" {
		return fmt.Errorf("from=: empty pattern")
	}
	if strings.Contains(p, "/") {
		if _, _, err := net.ParseCIDR(p); err != nil {
			return fmt.Errorf("from=: %q: %v", pat, err)
		}
		return nil
	}
	if _, err := filepath.Match(p, ""); err != nil {
		return fmt.Errorf("from=: %q: bad pattern", pat)
	}
	return nil
}

// matchAddress is the one address matcher, for from= lists and for a
// certificate's source-address: the client address matches when at least
// one pattern (an address, a CIDR block or a glob) matches and no negated
// one (!pattern) does. Only addresses are compared; tsadmin does no
// reverse DNS, so host name patterns never match.
func matchAddress(patterns []string, addr net.Addr) bool {
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	matched := false
	for _, pat := range patterns {
		neg := strings.HasPrefix(pat, "!")
		p := strings.TrimPrefix(pat, "!")
		var ok bool
		if strings.Contains(p, "/") {
			_, n, err := net.ParseCIDR(p)
			ok = err == nil && ip != nil && n.Contains(ip)
		} else {
			ok, _ = filepath.Match(p, host)
		}
		if ok && neg {
			return false
		}
		if ok {
			matched = true
		}
	}
	return matched
}

// checkOptions enforces a key's options for a connection from addr at now.
func (o keyOptions) check(addr net.Addr, now time.Time) error {
	if err := o.checkExpiry(now); err != nil {
		return err
	}
	if len(o.from) > 0 && !matchAddress(o.from, addr) {
		return fmt.Errorf("the key is not allowed from %s (from=)", addr)
	}
	return nil
}

// checkExpiry enforces expiry-time alone, for a relayed admin whose address
// this server cannot see.
func (o keyOptions) checkExpiry(now time.Time) error {
	if !o.expiry.IsZero() && !now.Before(o.expiry) {
		return fmt.Errorf("the key expired at %s (expiry-time)", o.expiry.Format(time.RFC3339))
	}
	return nil
}
