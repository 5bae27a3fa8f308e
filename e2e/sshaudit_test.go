package e2e

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// newerThanTheAuditor are algorithms ssh-audit 2.5 does not know yet, so it
// warns "unknown algorithm" about them; every other warning or failure is a
// finding.
var newerThanTheAuditor = map[string]bool{
	"mlkem768x25519-sha256":        true,
	"kex-strict-s-v00@openssh.com": true,
}

// TestSSHAuditFindsNothing runs the real ssh-audit (Debian's package)
// against the server: no fail, and no warn but for algorithms newer than
// the auditor.
func TestSSHAuditFindsNothing(t *testing.T) {
	if _, err := exec.LookPath("ssh-audit"); err != nil {
		t.Fatal("ssh-audit is not installed: run scripts/install-deps")
	}
	f := newFleet(t, "")
	out, _ := exec.Command("ssh-audit", "-n", "-p", f.Port, "127.0.0.1").CombinedOutput()
	text := string(out)
	if !strings.Contains(text, "(key) ssh-ed25519") {
		t.Fatalf("ssh-audit did not audit the server:\n%s", text)
	}
	algo := regexp.MustCompile(`^\((kex|key|enc|mac)\) (\S+)`)
	current := ""
	findings := 0
	var ciphers []string
	for _, line := range strings.Split(text, "\n") {
		if m := algo.FindStringSubmatch(line); m != nil {
			current = m[2]
			if m[1] == "enc" {
				ciphers = append(ciphers, current)
			}
		}
		if !strings.Contains(line, "[fail]") && !strings.Contains(line, "[warn]") {
			continue
		}
		if strings.Contains(line, "[warn] unknown algorithm") && newerThanTheAuditor[current] {
			continue
		}
		findings++
		t.Errorf("ssh-audit: %s: %s", current, strings.TrimSpace(line))
	}
	// The audit covered the CTR ciphers offered for older clients
	// (Paramiko 2.x) as well as the AEAD ones.
	want := "aes256-gcm@openssh.com aes128-gcm@openssh.com chacha20-poly1305@openssh.com aes256-ctr aes128-ctr"
	if got := strings.Join(ciphers, " "); got != want {
		t.Errorf("ssh-audit audited the ciphers %s, want %s", got, want)
	}
	t.Logf("ssh-audit findings: %d\n%s", findings, text)
}
