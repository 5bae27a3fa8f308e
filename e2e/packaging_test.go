package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// scripts/install lays out a working installation, and systemd accepts
// the unit.
func TestInstallAndSystemdUnit(t *testing.T) {
	root := t.TempDir()
	cmd := exec.Command("../scripts/install")
	cmd.Env = append(os.Environ(), "DESTDIR="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/install: %v\n%s", err, out)
	}
	bin := filepath.Join(root, "usr/local/bin/tsadmin")
	cfg := filepath.Join(root, "etc/tsadmin/config.yaml")
	out, err := exec.Command(bin, "-config", cfg, "-check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": ok:") {
		t.Fatalf("the installed config does not check: %v %s", err, out)
	}
	if !strings.Contains(mustRead(t, cfg), "file: /var/log/tsadmin/audit.log") {
		t.Error("the installed config does not write the audit log to /var/log/tsadmin")
	}
	if st, err := os.Stat(filepath.Dir(cfg)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("/etc/tsadmin: %v %v", st.Mode(), err)
	}
	help, _ := exec.Command(bin, "-help").CombinedOutput()
	for _, want := range []string{"-config FILE", "SIGHUP", "ssh_host_ed25519_key", "audit"} {
		if !strings.Contains(string(help), want) {
			t.Errorf("tsadmin -help does not cover %q", want)
		}
	}

	unit := mustRead(t, filepath.Join(root, "etc/systemd/system/tsadmin.service"))
	for _, want := range []string{"CAP_KILL", "ProtectSystem=strict", "NoNewPrivileges=yes", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	for _, never := range []string{"\nProtectProc=invisible", "\nPrivatePIDs=yes", "\nPrivateUsers=yes"} {
		if strings.Contains(unit, never) {
			t.Errorf("the unit has %q, which hides the host sessions tsadmin must end", never)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze is not installed; the unit was checked by its text only")
		return
	}
	// Point the unit at the installed binary and man page, and verify it.
	unit = strings.ReplaceAll(unit, "/usr/local/bin/tsadmin", bin)
	unit = strings.ReplaceAll(unit, "man:tsadmin(8)", "file://"+filepath.Join(root, "usr/local/share/man/man8/tsadmin.8"))
	path := filepath.Join(t.TempDir(), "tsadmin.service")
	os.WriteFile(path, []byte(unit), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
