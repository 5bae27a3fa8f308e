package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"

func TestStrictDecodingStopsWithFileLineAndReason(t *testing.T) {
	cases := []struct {
		name, yaml, reason string
		line               bool // the message must carry a line number
	}{
		{"unknown key", "nmae: WF12\n", "field nmae not found", true},
		{"unknown nested key", "limits:\n  login_grac: 5s\n", "field login_grac not found", true},
		{"wrong type", "listen: [1, 2]\n", "cannot unmarshal", true},
		{"wrong type for a number", "limits: { max_auth_tries: many }\n", "cannot unmarshal", true},
		{"bad duration", "sessions: { logoff_grace: soon }\n", "not a duration", true},
		{"negative duration", "sessions: { logoff_grace: -5s }\n", "not a duration", true},
		{"duplicate admin", "roles: { r: { logoff: [] } }\nadmins:\n  - { name: alice, role: r, keys: [\"" + key + "\"] }\n  - { name: ALICE, role: r, keys: [\"" + key + "\"] }\n", "duplicate admin", true},
		{"unknown role", "admins:\n  - { name: alice, role: boss, keys: [\"" + key + "\"] }\n", `role "boss" does not exist`, true},
		{"no keys", "roles: { r: { logoff: [] } }\nadmins:\n  - { name: alice, role: r }\n", "give keys or keys_file", true},
		{"bad admin name", "roles: { r: { logoff: [] } }\nadmins:\n  - { name: \"al ice\", role: r, keys: [\"" + key + "\"] }\n", "a name uses", true},
		{"bad selector", "roles: { r: { logoff: [\"host:x\"] } }\n", "use *, user:GLOB", true},
		{"bad glob", "roles: { r: { logoff: [\"user:[a\"] } }\n", "bad pattern", true},
		{"empty glob", "roles: { r: { logoff: [\"user:\"] } }\n", "pattern is empty", true},
		{"bad listen", "listen: nowhere\n", "listen", false},
		{"unknown source", "sessions: { sources: [shell, wtmp] }\n", "unknown source", false},
		{"doubled source", "sessions: { sources: [host, host] }\n", "listed twice", false},
		{"zero limit", "limits: { max_sessions_per_connection: -1 }\n", "at least 1", false},
		{"second document", "name: A\n---\nname: B\n", "one YAML document", true},
		{"peer without key", "servers: { B: { address: 127.0.0.1:1 } }\n", "host_key is required", false},
		{"peer named like me", "name: A\nservers: { a: { address: 127.0.0.1:1, host_key: \"" + key + "\" } }\n", "own name", false},
		{"syntax", "name: [unclosed\n", "line", true},
		{"policy: unknown key", "sessions:\n  policy:\n    - { match: [\"*\"], idle_logof: 2h }\n", "field idle_logof not found", true},
		{"policy: bad duration", "sessions:\n  policy:\n    - { match: [\"*\"], idle_logoff: 2 hours }\n", "not a duration", true},
		{"policy: negative duration", "sessions:\n  policy:\n    - { match: [\"*\"], disconnected_logoff: -1m }\n", "not a duration", true},
		{"policy: warning too late", "sessions:\n  policy:\n    - { match: [\"*\"], idle_logoff: 5m, warn_before: 5m }\n", "warn_before 5m0s must be shorter than idle_logoff 5m0s", true},
		{"policy: warning after the disconnected limit", "sessions:\n  policy:\n    - { match: [\"*\"], idle_logoff: 2h, disconnected_logoff: 1m, warn_before: 5m }\n", "shorter than disconnected_logoff", true},
		{"policy: empty match", "sessions:\n  policy:\n    - { match: [], idle_logoff: 2h }\n", "line 3: sessions.policy[0]: match is empty", true},
		{"policy: no match", "sessions:\n  policy:\n    - { idle_logoff: 2h }\n", "match is empty", true},
		{"policy: no limit", "sessions:\n  policy:\n    - { match: [\"user:a*\"], dry_run: true }\n", "give idle_logoff, disconnected_logoff or both", true},
		{"policy: bad selector", "sessions:\n  policy:\n    - match:\n        - \"user:[a\"\n      idle_logoff: 2h\n", "line 4: sessions.policy[0]: selector", true},
		{"policy: a map, not a list", "sessions:\n  policy: { match: [\"*\"] }\n", "cannot unmarshal", true},
		{"policy: a bad bool", "sessions:\n  policy:\n    - { match: [\"*\"], idle_logoff: 2h, dry_run: maybe }\n", "cannot unmarshal", true},
		{"policy: interval too short", "sessions: { policy_interval: 10ms }\n", "shorter than 1s", false},
		{"idle_after: bad", "sessions: { idle_after: later }\n", "not a duration", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "/etc/tsadmin/config.yaml")
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "/etc/tsadmin/config.yaml: ") {
				t.Errorf("no file name: %q", msg)
			}
			if !strings.Contains(msg, c.reason) {
				t.Errorf("reason %q lacks %q", msg, c.reason)
			}
			if c.line && !regexp.MustCompile(`line \d+`).MatchString(msg) {
				t.Errorf("no line number: %q", msg)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(""), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:2222" || c.HostKey != "ssh_host_ed25519_key" || c.Name == "" {
		t.Errorf("defaults: %+v", c)
	}
	if strings.Join(c.Sessions.Sources, ",") != "shell,host" || c.Sessions.LogoffGrace.Duration != 10*time.Second {
		t.Errorf("session defaults: %+v", c.Sessions)
	}
	l := c.Limits
	if l.LoginGrace.Duration != 20*time.Second || l.MaxAuthTries != 6 || l.IdleTimeout.Duration != 15*time.Minute ||
		l.MaxSessionsPerConnection != 4 || l.RelayConnectTimeout.Duration != 5*time.Second {
		t.Errorf("limit defaults: %+v", l)
	}
	// shell is always on, even when not listed.
	c, _ = Parse([]byte("sessions: { sources: [host] }\n"), "c.yaml")
	if c.Sessions.Sources[0] != "shell" {
		t.Errorf("shell is not always on: %v", c.Sessions.Sources)
	}
}

func TestPolicyRulesCompileWithTheirLines(t *testing.T) {
	c, err := Parse([]byte(`sessions:
  policy:
    - match: ["user:student*"]
      idle_logoff: 2h
      warn_before: 5m
    - { match: ["type:logind", "name:tty*"], disconnected_logoff: 30m, dry_run: true }
`), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Sessions.Policy
	if len(p) != 2 || p[0].Line != 3 || p[1].Line != 6 {
		t.Fatalf("rules or lines: %+v", p)
	}
	if p[0].IdleLogoff.Duration != 2*time.Hour || p[0].WarnBefore.Duration != 5*time.Minute || p[0].DryRun {
		t.Errorf("rule 0: %+v", p[0])
	}
	if len(p[1].Selectors) != 2 || !p[1].DryRun || p[1].DisconnectedLogoff.Duration != 30*time.Minute {
		t.Errorf("rule 1: %+v", p[1])
	}
	if !p[0].Selectors[0].Match("student4", "pts/1", "sshd", "host") || p[0].Selectors[0].Match("staff", "pts/1", "sshd", "host") {
		t.Error("user:student* matches the wrong users")
	}
	if c.Sessions.IdleAfter.Duration != 5*time.Minute || c.Sessions.PolicyInterval.Duration != 30*time.Second {
		t.Errorf("defaults: %+v", c.Sessions)
	}
}

func TestTheShippedConfigLoads(t *testing.T) {
	c, err := Load("../config.yaml")
	if err != nil {
		t.Fatalf("the repository's config.yaml: %v", err)
	}
	if len(c.Admins) != 0 || c.Listen != "127.0.0.1:2222" {
		t.Errorf("the sample must have no admins (first-run default) and listen on loopback: %+v", c)
	}
}

func TestRelativePathsAndSizeBound(t *testing.T) {
	dir := t.TempDir()
	c := &Config{Path: filepath.Join(dir, "config.yaml")}
	if got := c.Resolve("carol.pub"); got != filepath.Join(dir, "carol.pub") {
		t.Errorf("relative: %s", got)
	}
	if got := c.Resolve("/etc/x"); got != "/etc/x" {
		t.Errorf("absolute: %s", got)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600)
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("an over-large config: %v", err)
	}
}

func TestCompileGlob(t *testing.T) {
	cases := []struct {
		glob, s string
		match   bool
	}{
		{"student*", "student12", true},
		{"student*", "Student12", false},
		{"pts/*", "pts/3", true},
		{"*", "pts/3", true},
		{"pts*", "pts/3", true},
		{"tty?", "tty1", true},
		{"tty?", "tty12", false},
		{"lab[0-9]", "lab7", true},
		{"lab[!0-9]", "lab7", false},
		{"lab[!0-9]", "labx", true},
		{"a.b", "axb", false},
		{"(x)", "(x)", true},
	}
	for _, c := range cases {
		re, err := CompileGlob(c.glob)
		if err != nil {
			t.Fatalf("%q: %v", c.glob, err)
		}
		if re.MatchString(c.s) != c.match {
			t.Errorf("%q ~ %q: want %v", c.glob, c.s, c.match)
		}
	}
	for _, bad := range []string{"[a", "x[]"} {
		if _, err := CompileGlob(bad); err == nil {
			t.Errorf("%q compiled", bad)
		}
	}
}

func FuzzLoadConfig(f *testing.F) {
	for _, seed := range []string{
		"", "name: WF12\n", "roles: { r: { logoff: [\"user:a*\"] } }\nadmins:\n  - { name: a, role: r, keys: [\"" + key + "\"] }\n",
		"limits: { login_grace: 5s }\n", "servers: { B: { address: \"127.0.0.1:1\", host_key: \"" + key + "\" } }\n",
		"&a [*a]", "a: !!binary x",
		"sessions:\n  idle_after: 5m\n  policy_interval: 2s\n  policy:\n    - { match: [\"user:student*\", \"type:sshd\"], idle_logoff: 2h, disconnected_logoff: 30m, warn_before: 5m, dry_run: true }\n",
		"sessions:\n  policy:\n    - { match: [], idle_logoff: 1s, warn_before: 1s }\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		c, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
				t.Fatalf("an error without the file name: %v", err)
			}
			return
		}
		// What loads is complete: defaults applied, every admin's role
		// exists, every selector compiles.
		if c.Listen == "" || c.Limits.MaxAuthTries < 1 || c.Sessions.Sources[0] != "shell" {
			t.Fatalf("defaults missing: %+v", c)
		}
		for _, a := range c.Admins {
			if _, ok := c.Roles[a.Role]; !ok {
				t.Fatalf("admin %q has a missing role %q", a.Name, a.Role)
			}
		}
		// Every policy rule that loads names sessions, has a limit, and
		// warns before it.
		for _, r := range c.Sessions.Policy {
			if len(r.Selectors) == 0 || len(r.Selectors) != len(r.Match) || r.Line == 0 {
				t.Fatalf("a rule without selectors or line: %+v", r)
			}
			if r.IdleLogoff.Duration == 0 && r.DisconnectedLogoff.Duration == 0 {
				t.Fatalf("a rule without a limit: %+v", r)
			}
			for _, d := range []time.Duration{r.IdleLogoff.Duration, r.DisconnectedLogoff.Duration} {
				if d != 0 && r.WarnBefore.Duration >= d {
					t.Fatalf("warn_before is not before the limit: %+v", r)
				}
			}
		}
		if c.Sessions.PolicyInterval.Duration < MinPolicyEvery || c.Sessions.IdleAfter.Duration == 0 {
			t.Fatalf("policy defaults missing: %+v", c.Sessions)
		}
		for _, r := range c.Roles {
			for _, s := range r.Logoff {
				if _, err := ParseSelector(s.Value); err != nil {
					t.Fatalf("selector %q passed", s.Value)
				}
			}
		}
	})
}
