package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// auditOnTinyFS returns where the audit log goes: on a 1 MiB tmpfs when
// the test may mount one (root), so that an unbounded log fills it, else
// in an ordinary temporary directory. The tmpfs is unmounted at cleanup,
// after the server (registered later) has stopped and closed the file.
func auditOnTinyFS(t *testing.T) string {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Logf("no 1 MiB tmpfs (%v): the audit log is on the ordinary file system", err)
		return filepath.Join(dir, "audit.log")
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return filepath.Join(dir, "audit.log")
}

// Unauthenticated clients cannot fill the disk through the logs (issue 10
// item 4): each connection sends a 200 kB user name with control
// characters and a hostile client version, and offers ten keys that belong
// to no admin. The audit log grows by a few hundred bytes per connection,
// the server's own log stays bounded, and afterwards an operator's logoff
// still works (with the audit log on a 1 MiB tmpfs, the old one-record-
// per-attempt log filled it within the first connection and logoff then
// failed closed with status 5).
func TestRefusedLoginsCannotFillTheAuditLog(t *testing.T) {
	auditPath := auditOnTinyFS(t)
	f := newFleet(t, fmt.Sprintf("audit: { file: %q }\n", auditPath))
	var signers []ssh.Signer
	for i := 0; i < 10; i++ {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s)
	}
	login := "\x1b]0;PWNED\a\x1b[2J" + strings.Repeat("A", 200_000)
	cfg := &ssh.ClientConfig{
		User:            login,
		ClientVersion:   "SSH-2.0-evil" + strings.Repeat("V", 200),
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	}
	size := func() int64 {
		st, err := os.Stat(auditPath)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	// The server's start record is there once it listens.
	before, logBefore := size(), len(f.Log())
	const conns = 8
	for i := 0; i < conns; i++ {
		c, err := ssh.Dial("tcp", f.Addr, cfg)
		if err == nil {
			c.Close()
			t.Fatal("a key that belongs to no admin was accepted")
		}
		if i == 0 {
			t.Logf("refused as it should be: %v", err)
		}
	}
	// A connection's record is written when the server sees it close.
	refusedRecords := func() []map[string]any {
		var out []map[string]any
		recs, _ := readAudit(t, auditPath)
		for _, r := range recs {
			if r["msg"] == "auth.refused" {
				out = append(out, r)
			}
		}
		return out
	}
	waitUntil(5*time.Second, func() bool { return len(refusedRecords()) >= conns })
	grown := size() - before
	perConn := grown / conns
	fmt.Printf("MEASURE refused logins: audit log grew %d bytes over %d connections (%d per connection); server log %d bytes\n",
		grown, conns, perConn, len(f.Log())-logBefore)
	if perConn > 500 {
		t.Errorf("the audit log grew by %d bytes per refused connection; want at most 500", perConn)
	}
	recs := refusedRecords()
	if len(recs) > 0 {
		t.Logf("a refused connection's record: %v", recs[0])
	}
	if len(recs) != conns {
		t.Errorf("want one auth.refused record per connection (%d), got %d", conns, len(recs))
	}
	for _, r := range recs {
		got, _ := r["login"].(string)
		if strings.ContainsAny(got, "\x1b\a") || len(got) > 100 || !strings.HasPrefix(got, `\x1b]0;PWNED\a`) {
			t.Errorf("login recorded as %q: want it cut and escaped", got)
		}
		if n, _ := r["login_len"].(float64); int(n) != len(login) {
			t.Errorf("login_len %v, want %d", r["login_len"], len(login))
		}
		// x/crypto ends the connection after max_auth_tries (6) refusals.
		if n, _ := r["attempts"].(float64); n < 1 || n > 6 {
			t.Errorf("attempts %v, want 1 to 6", r["attempts"])
		}
		if fps, _ := r["fingerprints"].([]any); len(fps) < 1 || len(fps) > 3 {
			t.Errorf("fingerprints %v, want 1 to 3", r["fingerprints"])
		}
	}
	for _, line := range strings.Split(f.Log(), "\n") {
		if len(line) > 400 || strings.Contains(line, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") {
			t.Errorf("unbounded server log line (%d bytes): %.200q", len(line), line)
		}
	}

	// An operator still logs off another admin's session, and is audited
	// one record for the accepted authentication, with fingerprint and
	// address.
	bob := f.Open(f.bob)
	targets := sessionsOf(f.List(f.alice), "bob")
	if len(targets) != 1 {
		t.Fatalf("want bob's one session, got %+v", targets)
	}
	if r := f.Run(f.alice, "", "logoff", fmt.Sprint(targets[0].ID)); r.Status != 0 {
		t.Fatalf("logoff after the flood: status %d: %s", r.Status, r.Stderr)
	}
	if !bob.Exited(10 * time.Second) {
		t.Error("bob's client is still connected after the logoff")
	}
	if n := len(refusedRecords()); n != conns {
		t.Errorf("%d auth.refused records after the admins' own logins, want still %d", n, conns)
	}
	accepted := 0
	all, bad := readAudit(t, auditPath)
	if bad > 0 {
		t.Errorf("%d audit lines are not JSON: the log was cut short", bad)
	}
	for _, r := range all {
		if r["msg"] == "auth" && r["accepted"] == true && r["admin"] == "alice" {
			accepted++
			if fp, _ := r["fingerprint"].(string); !strings.HasPrefix(fp, "SHA256:") || !strings.HasPrefix(fmt.Sprint(r["addr"]), "127.0.0.1:") {
				t.Errorf("accepted record without fingerprint or address: %v", r)
			}
		}
	}
	if accepted != 2 { // List, then logoff
		t.Errorf("want 2 accepted-auth records for alice, got %d", accepted)
	}

	// An admin whose client offers a wrong key first: the refusal is
	// recorded when she gets in, not when her connection ends.
	c, err := ssh.Dial("tcp", f.Addr, &ssh.ClientConfig{User: "alice",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signers[0], f.alice.Signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := len(refusedRecords()); n != conns+1 {
		t.Errorf("with the admin still connected, %d auth.refused records; want %d", n, conns+1)
	}
}

// readAudit parses the audit log at path; bad counts the lines that are
// not JSON (cut short by a full disk).
func readAudit(t *testing.T, path string) (recs []map[string]any, bad int) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			bad++
			continue
		}
		recs = append(recs, m)
	}
	return recs, bad
}

// Connections closed at the login grace cost the server's log one line
// per ten seconds, not one line each: twenty silent connections, each
// closed within a 1s grace, make one line.
func TestLoginGraceClosesAreLoggedInBatches(t *testing.T) {
	f := newFleet(t, "limits: { login_grace: 1s }\n")
	var conns []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", f.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	buf := make([]byte, 512)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("a silent connection outlived a 1s login grace by 9s")
				}
				break
			}
		}
	}
	// The server logs after it closes: let its lines arrive.
	lines := func() int { return strings.Count(f.Log(), "login grace time over") }
	waitUntil(3*time.Second, func() bool { return lines() >= 1 })
	time.Sleep(500 * time.Millisecond)
	if n := lines(); n != 1 {
		t.Errorf("%d log lines for 20 connections closed at the login grace; want 1:\n%s", n, f.Log())
	}
}
