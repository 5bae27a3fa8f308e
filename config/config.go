// Package config reads config.yaml strictly: an unknown key, a wrong type,
// a duplicate admin, a key that does not parse or a role that does not exist
// stops the start with the file, the line and the reason. It only decodes
// and checks; keys/ turns the result into identities and the policy.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is config.yaml after defaults have been applied.
type Config struct {
	// Path is the file the config was read from; relative paths in it are
	// relative to its directory.
	Path string `yaml:"-"`

	Name              string          `yaml:"name"`
	Listen            string          `yaml:"listen"`
	HostKey           string          `yaml:"host_key"`
	Sessions          Sessions        `yaml:"sessions"`
	Roles             map[string]Role `yaml:"roles"`
	Admins            []Admin         `yaml:"admins"`
	TrustedUserCAKeys []Line          `yaml:"trusted_user_ca_keys"`
	// RevokedKeys is a file of revoked keys, certificates and CAs (a key
	// list or an OpenSSH KRL), relative to the config file.
	RevokedKeys string            `yaml:"revoked_keys"`
	Limits      Limits            `yaml:"limits"`
	Audit       Audit             `yaml:"audit"`
	Servers     map[string]Server `yaml:"servers"`
	// ServersFile is the fleet file (servers_file:): NAME ADDRESS lines,
	// the same file on every server; its peers join Servers.
	ServersFile string `yaml:"servers_file"`
	// TrustedHostCAKeys are the host CAs whose host certificates make a
	// peer trusted without a pinned key, as @cert-authority in known_hosts.
	TrustedHostCAKeys []Line `yaml:"trusted_host_ca_keys"`
	// HostCertificate is this server's OpenSSH host certificate (the
	// -cert.pub that ssh-keygen -s CA -h wrote), presented to clients and
	// to peers.
	HostCertificate string `yaml:"host_certificate"`
}

// Sessions is the sessions: block.
type Sessions struct {
	Sources     []string `yaml:"sources"`
	LogoffGrace Duration `yaml:"logoff_grace"`
	// IdleAfter is how long without input makes a session idle in a
	// listing (idle: true in JSON); STATE stays Active or Disc.
	IdleAfter Duration `yaml:"idle_after"`
	// Policy is the time limits the server enforces itself; the first
	// rule that matches a session applies to it.
	Policy []PolicyRule `yaml:"policy"`
	// PolicyInterval is how often the policy loop looks at the sessions.
	PolicyInterval Duration `yaml:"policy_interval"`
}

// PolicyRule is one entry of sessions.policy: which sessions, and the time
// limits that apply to them.
type PolicyRule struct {
	Match              []Line   `yaml:"match"`
	IdleLogoff         Duration `yaml:"idle_logoff"`
	DisconnectedLogoff Duration `yaml:"disconnected_logoff"`
	WarnBefore         Duration `yaml:"warn_before"`
	DryRun             bool     `yaml:"dry_run"`
	// Line is where the rule starts, for errors and the audit log.
	Line int `yaml:"-"`
	// Selectors is Match compiled; set by Parse.
	Selectors []Selector `yaml:"-"`
}

// Role is one entry of roles:.
type Role struct {
	Logoff []Line `yaml:"logoff"`
}

// Admin is one entry of admins:.
type Admin struct {
	Name     string `yaml:"name"`
	Role     string `yaml:"role"`
	Keys     []Line `yaml:"keys"`
	KeysFile string `yaml:"keys_file"`
	Line     int    `yaml:"-"`
}

// Limits is the limits: block.
type Limits struct {
	LoginGrace               Duration `yaml:"login_grace"`
	MaxAuthTries             int      `yaml:"max_auth_tries"`
	IdleTimeout              Duration `yaml:"idle_timeout"`
	MaxSessionsPerConnection int      `yaml:"max_sessions_per_connection"`
	MaxStartups              int      `yaml:"max_startups"`
	MaxStartupsPerSource     int      `yaml:"max_startups_per_source"`
	KeepaliveInterval        Duration `yaml:"keepalive_interval"`
	KeepaliveCountMax        int      `yaml:"keepalive_count_max"`
	RelayConnectTimeout      Duration `yaml:"relay_connect_timeout"`
	RelayCommandTimeout      Duration `yaml:"relay_command_timeout"`
	// RelayMaxConcurrent bounds the peers /server:* asks at once.
	RelayMaxConcurrent int `yaml:"relay_max_concurrent"`
}

// Audit is the audit: block.
type Audit struct {
	File string `yaml:"file"`
}

// Server is one peer under servers:.
type Server struct {
	Address string `yaml:"address"`
	HostKey Line   `yaml:"host_key"`
	// FromFile is set for a peer read from servers_file.
	FromFile bool `yaml:"-"`
}

// Line is a string that remembers the line it was written on, so that a
// key or selector that does not parse can be reported where it stands.
type Line struct {
	Value string
	Line  int
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *Line) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int") {
		return fmt.Errorf("line %d: expected a string", n.Line)
	}
	l.Value, l.Line = n.Value, n.Line
	return nil
}

// Duration is a time.Duration written as "10s", "15m".
type Duration struct{ time.Duration }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected a duration such as 10s or 15m", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration such as 10s or 15m", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

// Defaults, documented in the README and the sample config.yaml.
const (
	DefaultListen      = "127.0.0.1:2222"
	DefaultHostKey     = "ssh_host_ed25519_key"
	DefaultLogoffGrace = 10 * time.Second
	DefaultLoginGrace  = 20 * time.Second
	DefaultAuthTries   = 6
	DefaultIdleTimeout = 15 * time.Minute
	DefaultMaxSessions = 4
	DefaultMaxStartups = 100
	DefaultPerSource   = 20
	DefaultKeepalive   = 30 * time.Second
	DefaultKeepaliveN  = 3
	DefaultRelayTime   = 5 * time.Second
	DefaultIdleAfter   = 5 * time.Minute
	DefaultPolicyEvery = 30 * time.Second
	// MinPolicyEvery bounds how often the policy loop may list the
	// sessions (each listing reads /proc).
	MinPolicyEvery  = time.Second
	DefaultRelayMax = 64
	// MaxFileSize bounds config.yaml and keys files.
	MaxFileSize = 1 << 20
)

// KnownSources are the session sources a config may name.
var KnownSources = []string{"shell", "host", "logind"}

// namePattern is what the names of admins, roles and servers may be: the
// one pattern for all three, also used for /server:NAME and $USER.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether s may name an admin, a role or a server.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// Load reads, decodes and checks the config file at path.
func Load(path string) (*Config, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// readBounded reads a file that must not be larger than MaxFileSize.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := CheckTrusted(path, fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// ReadFile reads a file named in the config (keys_file), relative to the
// config's directory, with the same size bound as the config itself.
func (c *Config) ReadFile(name string) ([]byte, error) {
	return readBounded(c.Resolve(name))
}

// Resolve makes a path from the config relative to the config's directory.
func (c *Config) Resolve(name string) string {
	if filepath.IsAbs(name) || c.Path == "" {
		return name
	}
	return filepath.Join(filepath.Dir(c.Path), name)
}

// Parse decodes and checks a config; path is used in error messages and to
// resolve relative paths.
func Parse(data []byte, path string) (*Config, error) {
	c := &Config{Path: path}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", path, yamlReason(err))
	}
	// A second document would be silently ignored: refuse it.
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s: line %d: only one YAML document is allowed", path, extra.Line)
	}
	if err := c.lineNumbers(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.checkPolicy(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func yamlReason(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// lineNumbers records where each admin starts, for error messages.
func (c *Config) lineNumbers(data []byte) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil || len(root.Content) == 0 {
		return nil
	}
	doc := root.Content[0]
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value != "admins" {
			continue
		}
		for j, n := range doc.Content[i+1].Content {
			if j < len(c.Admins) {
				c.Admins[j].Line = n.Line
			}
		}
	}
	return nil
}

func (c *Config) check() error {
	if c.Name == "" {
		h, _ := os.Hostname()
		h, _, _ = strings.Cut(h, ".")
		c.Name = strings.ToUpper(h)
		if !ValidName(c.Name) {
			c.Name = "TSADMIN"
		}
	}
	if !ValidName(c.Name) {
		return fmt.Errorf("name %q: use letters, digits, '.', '_' and '-' (at most 64)", c.Name)
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen %q: %v", c.Listen, err)
	}
	if c.HostKey == "" {
		c.HostKey = DefaultHostKey
	}
	if len(c.Sessions.Sources) == 0 {
		c.Sessions.Sources = []string{"shell", "host"}
	}
	seen := map[string]bool{}
	for _, s := range c.Sessions.Sources {
		if !contains(KnownSources, s) {
			return fmt.Errorf("sessions.sources: unknown source %q (known: %s)", s, strings.Join(KnownSources, ", "))
		}
		if seen[s] {
			return fmt.Errorf("sessions.sources: %q is listed twice", s)
		}
		seen[s] = true
	}
	if !seen["shell"] {
		c.Sessions.Sources = append([]string{"shell"}, c.Sessions.Sources...)
	}
	setDuration(&c.Sessions.LogoffGrace, DefaultLogoffGrace)
	setDuration(&c.Limits.LoginGrace, DefaultLoginGrace)
	setDuration(&c.Limits.IdleTimeout, DefaultIdleTimeout)
	setDuration(&c.Limits.KeepaliveInterval, DefaultKeepalive)
	setDuration(&c.Limits.RelayConnectTimeout, DefaultRelayTime)
	setDuration(&c.Limits.RelayCommandTimeout, DefaultRelayTime)
	setInt(&c.Limits.MaxAuthTries, DefaultAuthTries)
	setInt(&c.Limits.MaxSessionsPerConnection, DefaultMaxSessions)
	setInt(&c.Limits.MaxStartups, DefaultMaxStartups)
	setInt(&c.Limits.MaxStartupsPerSource, DefaultPerSource)
	setInt(&c.Limits.KeepaliveCountMax, DefaultKeepaliveN)
	setInt(&c.Limits.RelayMaxConcurrent, DefaultRelayMax)
	for _, n := range []struct {
		name string
		v    int
	}{
		{"limits.max_auth_tries", c.Limits.MaxAuthTries},
		{"limits.max_sessions_per_connection", c.Limits.MaxSessionsPerConnection},
		{"limits.max_startups", c.Limits.MaxStartups},
		{"limits.max_startups_per_source", c.Limits.MaxStartupsPerSource},
		{"limits.keepalive_count_max", c.Limits.KeepaliveCountMax},
		{"limits.relay_max_concurrent", c.Limits.RelayMaxConcurrent},
	} {
		if n.v < 1 {
			return fmt.Errorf("%s: must be at least 1", n.name)
		}
	}

	for name, r := range c.Roles {
		if !ValidName(name) {
			return fmt.Errorf("role %q: use letters, digits, '.', '_' and '-'", name)
		}
		for _, sel := range r.Logoff {
			if _, err := ParseSelector(sel.Value); err != nil {
				return fmt.Errorf("line %d: role %s: %v", sel.Line, name, err)
			}
		}
	}
	names := map[string]int{}
	for _, a := range c.Admins {
		where := fmt.Sprintf("line %d: admin %q", a.Line, a.Name)
		if !ValidName(a.Name) {
			return fmt.Errorf("%s: a name uses letters, digits, '.', '_' and '-' (at most 64)", where)
		}
		if first, dup := names[strings.ToLower(a.Name)]; dup {
			return fmt.Errorf("%s: duplicate admin (first at line %d)", where, first)
		}
		names[strings.ToLower(a.Name)] = a.Line
		if _, ok := c.Roles[a.Role]; !ok {
			return fmt.Errorf("%s: role %q does not exist", where, a.Role)
		}
		if len(a.Keys) == 0 && a.KeysFile == "" {
			return fmt.Errorf("%s: give keys or keys_file", where)
		}
	}
	if err := c.loadServersFile(); err != nil {
		return err
	}
	for name, s := range c.Servers {
		if !ValidName(name) {
			return fmt.Errorf("servers: name %q: use letters, digits, '.', '_' and '-'", name)
		}
		if strings.EqualFold(name, c.Name) {
			return fmt.Errorf("servers: %q is this server's own name", name)
		}
		if _, _, err := net.SplitHostPort(s.Address); err != nil {
			return fmt.Errorf("servers: %s: address %q: %v", name, s.Address, err)
		}
		if s.HostKey.Value == "" && len(c.TrustedHostCAKeys) == 0 {
			if s.FromFile {
				return fmt.Errorf("servers_file: %s: a peer from the fleet file needs trusted_host_ca_keys (it has no pinned host_key)", name)
			}
			return fmt.Errorf("servers: %s: host_key is required (the peer's pinned public host key), or trusted_host_ca_keys", name)
		}
	}
	return nil
}

// Selector is one compiled logoff selector: *, user:GLOB, name:GLOB or
// type:GLOB.
type Selector struct {
	Kind string         // "*", "user", "name" or "type"
	Glob *regexp.Regexp // nil for "*"
	Text string         // as written
}

// ParseSelector is the one reader of the selector grammar (see
// CompileGlob for the patterns).
func ParseSelector(sel string) (Selector, error) {
	if sel == "*" {
		return Selector{Kind: "*", Text: sel}, nil
	}
	kind, glob, ok := strings.Cut(sel, ":")
	if !ok || !contains([]string{"user", "name", "type"}, kind) {
		return Selector{}, fmt.Errorf("selector %q: use *, user:GLOB, name:GLOB or type:GLOB", sel)
	}
	if glob == "" {
		return Selector{}, fmt.Errorf("selector %q: the pattern is empty", sel)
	}
	re, err := CompileGlob(glob)
	if err != nil {
		return Selector{}, fmt.Errorf("selector %q: bad pattern: %v", sel, err)
	}
	return Selector{Kind: kind, Glob: re, Text: sel}, nil
}

// checkPolicy applies the defaults of the session time limits and checks
// every sessions.policy rule, reporting a bad one at the line it starts.
func (c *Config) checkPolicy(data []byte) error {
	setDuration(&c.Sessions.IdleAfter, DefaultIdleAfter)
	setDuration(&c.Sessions.PolicyInterval, DefaultPolicyEvery)
	if c.Sessions.PolicyInterval.Duration < MinPolicyEvery {
		return fmt.Errorf("sessions.policy_interval: %s is shorter than %s", c.Sessions.PolicyInterval.Duration, MinPolicyEvery)
	}
	var root yaml.Node
	if len(c.Sessions.Policy) > 0 && yaml.Unmarshal(data, &root) == nil && len(root.Content) > 0 {
		if n := child(child(root.Content[0], "sessions"), "policy"); n != nil {
			for i, rule := range n.Content {
				if i < len(c.Sessions.Policy) {
					c.Sessions.Policy[i].Line = rule.Line
				}
			}
		}
	}
	for i := range c.Sessions.Policy {
		r := &c.Sessions.Policy[i]
		where := fmt.Sprintf("line %d: sessions.policy[%d]", r.Line, i)
		if len(r.Match) == 0 {
			return fmt.Errorf(`%s: match is empty; name the sessions (user:GLOB, name:GLOB, type:GLOB, or "*" for all)`, where)
		}
		r.Selectors = r.Selectors[:0]
		for _, sel := range r.Match {
			compiled, err := ParseSelector(sel.Value)
			if err != nil {
				return fmt.Errorf("line %d: sessions.policy[%d]: %v", sel.Line, i, err)
			}
			r.Selectors = append(r.Selectors, compiled)
		}
		if r.IdleLogoff.Duration == 0 && r.DisconnectedLogoff.Duration == 0 {
			return fmt.Errorf("%s: give idle_logoff, disconnected_logoff or both", where)
		}
		for _, limit := range []struct {
			name string
			d    time.Duration
		}{{"idle_logoff", r.IdleLogoff.Duration}, {"disconnected_logoff", r.DisconnectedLogoff.Duration}} {
			if limit.d != 0 && r.WarnBefore.Duration >= limit.d {
				return fmt.Errorf("%s: warn_before %s must be shorter than %s %s", where, r.WarnBefore.Duration, limit.name, limit.d)
			}
		}
	}
	return nil
}

// child returns the value of key in the mapping n, or nil.
func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// Match reports whether a session with these fields is one the selector
// names. type: matches the TYPE column (sshd, login, tsadmin) or the
// source the session came from (shell, host, logind): type:host is every
// host login.
func (sel Selector) Match(user, name, typ, source string) bool {
	switch sel.Kind {
	case "*":
		return true
	case "user":
		return sel.Glob.MatchString(user)
	case "name":
		return sel.Glob.MatchString(name)
	case "type":
		return source != "" && sel.Glob.MatchString(source) || sel.Glob.MatchString(typ)
	}
	return false
}

func setDuration(d *Duration, def time.Duration) {
	if d.Duration == 0 {
		d.Duration = def
	}
}

func setInt(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
