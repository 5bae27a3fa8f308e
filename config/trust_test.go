package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file any local user could change is refused wherever tsadmin reads
// one (config.yaml, keys_file, revoked_keys, servers_file): the red team
// ran tsadmin on a config directory owned by an unprivileged user.
func TestFilesOthersCanChangeAreRefused(t *testing.T) {
	const nobody = 65534
	cfg := "name: T\nroles: { viewer: { logoff: [] } }\n"
	cases := []struct {
		name  string
		setup func(dir, file string) error
		want  string // "" for accepted
	}{
		{"ours, 0600", func(dir, file string) error { return nil }, ""},
		{"ours, 0644", func(dir, file string) error { return os.Chmod(file, 0o644) }, ""},
		{"world-writable file", func(dir, file string) error { return os.Chmod(file, 0o666) }, "writable by every user"},
		{"file of another user", func(dir, file string) error { return os.Chown(file, nobody, nobody) }, "belongs to uid 65534"},
		{"directory of another user", func(dir, file string) error { return os.Chown(dir, nobody, nobody) }, "belongs to uid 65534"},
		{"world-writable directory", func(dir, file string) error { return os.Chmod(dir, 0o777) }, "writable by every user"},
		{"sticky world-writable directory, as /tmp", func(dir, file string) error { return os.Chmod(dir, 0o777|os.ModeSticky) }, ""},
		{"a parent directory of another user", func(dir, file string) error { return os.Chown(filepath.Dir(dir), nobody, nobody) }, "belongs to uid 65534"},
		{"a symlink into another user's directory", func(dir, file string) error {
			// The red team's swap: the link is ours, the directory it
			// points into is theirs.
			theirs := filepath.Join(filepath.Dir(dir), "theirs")
			if err := os.Mkdir(theirs, 0o755); err != nil {
				return err
			}
			if err := os.Rename(file, filepath.Join(theirs, "config.yaml")); err != nil {
				return err
			}
			if err := os.Chown(theirs, nobody, nobody); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(theirs, "config.yaml"), file)
		}, "belongs to uid 65534"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "etc")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := c.setup(dir, file); err != nil {
				t.Fatalf("setup (the tests run as root): %v", err)
			}
			_, err := Load(file)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("want an error with %q, got %v", c.want, err)
			}
		})
	}
}
