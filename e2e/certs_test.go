package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sign makes an OpenSSH user certificate for key with ssh-keygen -s.
func sign(t *testing.T, ca, key Key, principals string, opts ...string) {
	t.Helper()
	os.Remove(key.Path + "-cert.pub")
	args := append([]string{"-q", "-s", ca.Path, "-I", "test-" + principals, "-n", principals}, opts...)
	args = append(args, key.Path+".pub")
	if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -s: %v\n%s", err, out)
	}
}

func TestOpenSSHCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := newKey(t, dir, "ca")
	otherCA := newKey(t, dir, "other-ca")
	holder := newKey(t, dir, "holder") // its plain key is nobody's
	s := startServer(t, dir, fmt.Sprintf(`roles: { operator: { logoff: ["*"] }, viewer: { logoff: [] } }
admins:
  - { name: erin, role: viewer, keys: [%q] }
trusted_user_ca_keys:
  - %s
`, newKey(t, dir, "erin-plain").Public, ca.Public))

	cases := []struct {
		name  string
		ca    Key
		princ string
		opts  []string
		ok    bool
	}{
		{"valid", ca, "erin", []string{"-V", "-5m:+1h"}, true},
		{"second principal names the admin", ca, "nobody,erin", []string{"-V", "-5m:+1h"}, true},
		{"expired", ca, "erin", []string{"-V", "20200101:20200102"}, false},
		{"not yet valid", ca, "erin", []string{"-V", "+1d:+2d"}, false},
		{"wrong CA", otherCA, "erin", []string{"-V", "-5m:+1h"}, false},
		{"unknown principal", ca, "mallory", []string{"-V", "-5m:+1h"}, false},
		{"source-address elsewhere", ca, "erin", []string{"-V", "-5m:+1h", "-O", "source-address=192.0.2.0/24"}, false},
		{"source-address here", ca, "erin", []string{"-V", "-5m:+1h", "-O", "source-address=127.0.0.0/8"}, true},
		{"force-command", ca, "erin", []string{"-V", "-5m:+1h", "-O", "force-command=/bin/sh"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sign(t, c.ca, holder, c.princ, c.opts...)
			r := s.Run(holder, "", "query", "session")
			if c.ok {
				if r.Status != 0 || !strings.Contains(r.Stdout, "erin") {
					t.Fatalf("want erin in, got %d %q %q", r.Status, r.Stdout, r.Stderr)
				}
				return
			}
			if r.Status != 255 {
				t.Fatalf("want refused at authentication (255), got %d %q", r.Status, r.Stdout)
			}
		})
	}
	if !hasAudit(s.Audit(), func(m map[string]any) bool {
		return m["msg"] == "auth" && m["admin"] == "erin" && m["reason"] == "cert"
	}) {
		t.Error("certificate logins are not audited as such")
	}
}

func TestAuthorizedKeysOptions(t *testing.T) {
	dir := t.TempDir()
	here := newKey(t, dir, "here")
	away := newKey(t, dir, "away")
	expired := newKey(t, dir, "expired")
	future := newKey(t, dir, "future")
	nopty := newKey(t, dir, "nopty")
	lines := []string{
		`from="127.0.0.1,!10.0.0.1" ` + here.Public,
		`from="192.0.2.*" ` + away.Public,
		`expiry-time="20200101" ` + expired.Public,
		`expiry-time="` + time.Now().AddDate(1, 0, 0).Format("20060102") + `" ` + future.Public,
		`restrict ` + nopty.Public,
	}
	if err := os.WriteFile(filepath.Join(dir, "frank.keys"), []byte("# frank's keys\n"+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, dir, `roles: { viewer: { logoff: [] } }
admins:
  - { name: frank, role: viewer, keys_file: frank.keys }
`)
	for _, c := range []struct {
		key Key
		ok  bool
	}{{here, true}, {away, false}, {expired, false}, {future, true}, {nopty, true}} {
		r := s.Run(c.key, "", "query", "user")
		if (r.Status == 0) != c.ok {
			t.Errorf("%s: status %d, want allowed=%v (%q)", filepath.Base(c.key.Path), r.Status, c.ok, r.Stderr)
		}
	}
	// restrict: no PTY, so no interactive shell for that key.
	args := append(s.sshArgs(nopty, "-tt"), "admin@127.0.0.1", "query", "user")
	out, _ := exec.Command("ssh", args...).CombinedOutput()
	if !strings.Contains(string(out), "PTY allocation request failed") {
		t.Errorf("a restrict key got a PTY: %q", out)
	}

	// An unknown option stops the start with the file and line.
	bad := filepath.Join(dir, "bad")
	os.MkdirAll(bad, 0o700)
	os.WriteFile(filepath.Join(bad, "k"), []byte("\n"+`command="/bin/sh" `+here.Public+"\n"), 0o600)
	os.WriteFile(filepath.Join(bad, "config.yaml"), []byte("roles: { viewer: { logoff: [] } }\nadmins:\n  - { name: x, role: viewer, keys_file: k }\n"), 0o600)
	out, err := exec.Command(binary, "-config", filepath.Join(bad, "config.yaml"), "-check").CombinedOutput()
	if err == nil || !strings.Contains(string(out), filepath.Join(bad, "k")+": line 2") || !strings.Contains(string(out), "command") {
		t.Errorf("command= in a keys file: %v %q", err, out)
	}
}
