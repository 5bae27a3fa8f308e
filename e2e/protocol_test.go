package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// dial connects with the Go SSH client and the given auth methods.
func (s *Server) dial(t *testing.T, user string, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", s.Addr, &ssh.ClientConfig{
		User: user, Auth: auth,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
}

// client dials with key and closes the connection when the test ends.
func (s *Server) client(t *testing.T, key Key) *ssh.Client {
	t.Helper()
	c, err := s.dial(t, "admin", ssh.PublicKeys(key.Signer))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func runOn(t *testing.T, c *ssh.Client, cmd string) (string, error) {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	var out bytes.Buffer
	sess.Stdout = &out
	err = sess.Run(cmd)
	return out.String(), err
}

// The CVE-2024-45337 regression: carol (a viewer) offers alice's public key
// (alice is an operator), which the server accepts as an offer, but carol
// cannot sign for it; she then authenticates with her own key. She must be
// carol. OpenSSH does exactly this when an identity file has only its .pub
// half: it offers the key, and on "Server accepts key" fails to load the
// private half and moves on to the next identity.
func TestOfferedKeyDoesNotBecomeTheIdentity(t *testing.T) {
	f := newFleet(t, "")
	dir := t.TempDir()
	pubOnly := filepath.Join(dir, "alice-public-only")
	if err := os.WriteFile(pubOnly+".pub", []byte(f.alice.Public+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// ssh wants the private half's path to exist; it holds no key.
	if err := os.WriteFile(pubOnly, []byte("not a private key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(f.sshArgs(f.alice), "-v", "-i", pubOnly, "-i", f.carol.Path, "admin@127.0.0.1", "query", "session")
	// sshArgs starts with -i alice: replace it, alice's private key must
	// not be available.
	for i := range args {
		if args[i] == f.alice.Path {
			args[i] = pubOnly
		}
	}
	out, err := exec.Command("ssh", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Server accepts key: "+pubOnly) {
		t.Fatalf("the test did not exercise the offer: the server never accepted alice's offered key\n%s", out)
	}
	var me string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, ">") {
			me = l
		}
	}
	if !strings.Contains(me, "carol") || strings.Contains(me, "alice") {
		t.Fatalf("the connection is not carol's: current row %q\n%s", me, out)
	}
	// And carol has carol's permissions: a viewer cannot log off alice.
	alice := f.Open(f.alice)
	for _, s := range f.List(f.carol) {
		if s.User == "alice" && s.CanLogoff {
			t.Errorf("carol may log off alice's session: %+v", s)
		}
	}
	alice.Close()
}

// With no key at all ("none" authentication) nobody gets in: x/crypto
// lets such a client in when NoClientAuth is set (gliderlabs, which
// server/ used before, set it whenever no auth handler was).
func TestNoneAuthenticationIsRefused(t *testing.T) {
	f := newFleet(t, "")
	if c, err := f.dial(t, "admin"); err == nil {
		c.Close()
		t.Fatal("a client with no credentials was let in")
	}
	if c, err := f.dial(t, "admin", ssh.Password("admin")); err == nil {
		c.Close()
		t.Fatal("password authentication was accepted")
	}
}

func TestRefusedRequestsAndLimits(t *testing.T) {
	f := newFleet(t, "")
	c := f.client(t, f.alice)

	// Agent forwarding, X11 and subsystems are refused on a session.
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []struct {
		name    string
		payload []byte
	}{
		{"auth-agent-req@openssh.com", nil},
		{"x11-req", ssh.Marshal(struct {
			Single bool
			Proto  string
			Cookie string
			Screen uint32
		}{false, "MIT-MAGIC-COOKIE-1", "00", 0})},
		{"subsystem", ssh.Marshal(struct{ Name string }{"sftp"})},
		{"env", ssh.Marshal(struct{ K, V string }{"LD_PRELOAD", "/tmp/x.so"})},
	} {
		ok, err := sess.SendRequest(req.name, true, req.payload)
		if err != nil {
			t.Fatalf("%s: %v", req.name, err)
		}
		if ok {
			t.Errorf("%s was accepted", req.name)
		}
	}
	// Env requests beyond the cap close the session.
	closed := false
	for i := 0; i < 100; i++ {
		if _, err := sess.SendRequest("env", true, ssh.Marshal(struct{ K, V string }{"LC_X", "y"})); err != nil {
			closed = true
			break
		}
	}
	if !closed {
		t.Error("100 env requests were taken without closing the session")
	}

	// Red team (transport round): each subsystem request was one audit
	// record, without a cap; 20,000 on one channel wrote 2 MB. A
	// channel's first is audited; another closes the channel.
	sub, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for ; sent < 100; sent++ {
		if _, err := sub.SendRequest("subsystem", true, ssh.Marshal(struct{ Name string }{"sftp"})); err != nil {
			break
		}
	}
	if sent == 100 {
		t.Error("100 subsystem requests were taken without closing the session")
	}
	refused := 0
	for _, r := range f.Audit() {
		if r["msg"] == "refused" && r["what"] == "subsystem" {
			refused++
		}
	}
	if refused != 2 { // this session's and the first session's
		t.Errorf("%d subsystem refusals audited for two sessions, want 2", refused)
	}

	// Port forwarding channels are refused.
	if _, err := c.Dial("tcp", f.Addr); err == nil {
		t.Error("a direct-tcpip channel was opened")
	}
	if l, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
		t.Error("a remote forward was accepted")
	}
	var open *ssh.OpenChannelError
	if _, _, err := c.OpenChannel("x11", nil); !errors.As(err, &open) {
		t.Errorf("an x11 channel: %v", err)
	}
}

func TestSessionsPerConnectionAreCapped(t *testing.T) {
	f := newFleet(t, "limits: { max_sessions_per_connection: 2 }\n")
	c := f.client(t, f.alice)
	var held []*ssh.Session
	for i := 0; i < 2; i++ {
		s, err := c.NewSession()
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		held = append(held, s)
	}
	if s, err := c.NewSession(); err == nil {
		s.Close()
		t.Fatal("a third session was opened on one connection with a cap of 2")
	}
	for _, s := range held {
		s.Close()
	}
}

// An unauthenticated connection is closed after the login grace.
func TestLoginGraceClosesSilentConnections(t *testing.T) {
	f := newFleet(t, "limits: { login_grace: 1s }\n")
	conn, err := net.Dial("tcp", f.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			break
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a silent connection was held for %s with a 1s login grace", d)
	}
}

// Repeated failed authentication ends the connection: with max_auth_tries
// 3, a client offering four unknown keys before the right one never gets
// to the right one.
func TestMaxAuthTries(t *testing.T) {
	f := newFleet(t, "limits: { max_auth_tries: 3 }\n")
	var signers []ssh.Signer
	for i := 0; i < 4; i++ {
		signers = append(signers, newKey(t, t.TempDir(), fmt.Sprintf("wrong%d", i)).Signer)
	}
	if c, err := f.dial(t, "alice", ssh.PublicKeys(append(signers, f.alice.Signer)...)); err == nil {
		c.Close()
		t.Fatal("the fifth key was tried after three failures")
	}
	// Two wrong keys, then the right one: within the limit.
	c, err := f.dial(t, "alice", ssh.PublicKeys(signers[0], signers[1], f.alice.Signer))
	if err != nil {
		t.Fatalf("two failures then the right key: %v", err)
	}
	c.Close()
}
