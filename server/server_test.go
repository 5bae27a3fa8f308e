package server

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/sessions"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// panickySource is a session source with bugs: listing it panics when
// listPanics is set, and logging off one of its sessions always panics.
type panickySource struct{ listPanics bool }

func (p panickySource) Name() string { return "host" }
func (p panickySource) List(context.Context) ([]sessions.Session, error) {
	if p.listPanics {
		panic("a bug in a session source")
	}
	return []sessions.Session{{Name: "pts/9", User: "bob", Type: "sshd", Key: "k", State: sessions.Active}}, nil
}
func (panickySource) Logoff(context.Context, sessions.Session, sessions.LogoffRequest) error {
	panic("a bug in logoff")
}

// startInProcess runs a server in this process with one operator, alice.
func startInProcess(t testing.TB, extra sessions.Source) (addr string, alice gossh.Signer) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	return startWithKey(t, extra, priv)
}

// startWithKey is startInProcess with alice's private key given.
func startWithKey(t testing.TB, extra sessions.Source, priv ed25519.PrivateKey) (addr string, alice gossh.Signer) {
	t.Helper()
	_, addr, alice = startServer(t, extra, priv, "")
	return addr, alice
}

// startServer is startWithKey with more configuration (YAML lines added
// to the config), and it also returns the server.
func startServer(t testing.TB, extra sessions.Source, priv ed25519.PrivateKey, more string) (srv *Server, addr string, alice gossh.Signer) {
	t.Helper()
	alice, _ = gossh.NewSignerFromKey(priv)
	dir := t.TempDir()
	cfgText := fmt.Sprintf("name: T\nroles: { operator: { logoff: [\"*\"] } }\nadmins:\n  - { name: alice, role: operator, keys: [%q] }\n",
		strings.TrimSpace(string(gossh.MarshalAuthorizedKey(alice.PublicKey())))) + more
	cfg, err := config.Parse([]byte(cfgText), filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := keys.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _, err := keys.LoadOrCreateHostKey(filepath.Join(dir, "hk"))
	if err != nil {
		t.Fatal(err)
	}
	auditLog, err := audit.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	reg := sessions.NewRegistry()
	shells := sessions.NewShellSource(reg)
	reg.AddSource(shells)
	if extra != nil {
		reg.AddSource(extra)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	env := &shell.Env{Server: cfg.Name, Registry: reg, Shells: shells, Audit: auditLog, Log: log,
		Policy: func() *keys.Policy { return srv.Policy() },
		Idle:   func() time.Duration { return srv.Config().Limits.IdleTimeout.Duration }}
	srv = New(Options{Config: cfg, Policy: policy, HostKey: hostKey, Audit: auditLog, Log: log, Env: env})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		auditLog.Close()
	})
	return srv, l.Addr().String(), alice
}

func run(t *testing.T, addr string, key gossh.Signer, cmd string) (string, error) {
	t.Helper()
	c, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{
		User: "x", Auth: []gossh.AuthMethod{gossh.PublicKeys(key)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}

// A panic in one session ends that session with a non-zero status, and
// the server goes on serving.
func TestPanicInASessionDoesNotStopTheServer(t *testing.T) {
	addr, alice := startInProcess(t, panickySource{})
	_, err := run(t, addr, alice, "logoff pts/9")
	var exit *gossh.ExitError
	if err == nil || !asExit(err, &exit) || exit.ExitStatus() != shell.StatusInternal {
		t.Fatalf("a panicking command must end with the internal-fault status %d, got %v", shell.StatusInternal, err)
	}
	// The server is still there, and other commands work.
	out, err := run(t, addr, alice, "help logoff")
	if err != nil || !strings.Contains(out, "LOGOFF") {
		t.Fatalf("the server stopped serving after a panic: %v %q", err, out)
	}
}

// A source whose listing panics is reported as a warning; the other
// sources are still listed.
func TestPanicInASourceIsAWarning(t *testing.T) {
	addr, alice := startInProcess(t, panickySource{listPanics: true})
	out, err := run(t, addr, alice, "query session")
	if err != nil {
		t.Fatalf("query session: %v", err)
	}
	if !strings.Contains(out, "warning: host sessions: internal error") || !strings.Contains(out, ">ssh#") {
		t.Fatalf("want a warning and the shell sessions, got %q", out)
	}
}

func asExit(err error, target **gossh.ExitError) bool {
	e, ok := err.(*gossh.ExitError)
	if ok {
		*target = e
	}
	return ok
}

// The negotiated algorithm lists are exactly the configured ones: a
// misspelled name would be dropped silently by x/crypto.
func TestNegotiatedAlgorithms(t *testing.T) {
	addr, alice := startInProcess(t, nil)
	kex, ciphersList, macList := keys.KeyExchanges, keys.Ciphers, keys.MACs
	for _, k := range kex {
		for _, c := range ciphersList {
			for _, m := range macList {
				if c == gossh.CipherChaCha20Poly1305 || strings.Contains(c, "gcm") {
					// AEAD ciphers ignore the MAC; one MAC is enough.
					if m != macList[0] {
						continue
					}
				}
				cfg := &gossh.ClientConfig{
					User: "x", Auth: []gossh.AuthMethod{gossh.PublicKeys(alice)},
					HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
					Config: gossh.Config{KeyExchanges: []string{k}, Ciphers: []string{c}, MACs: []string{m}},
				}
				c2, err := gossh.Dial("tcp", addr, cfg)
				if err != nil {
					t.Errorf("kex %s cipher %s mac %s: %v", k, c, m, err)
					continue
				}
				c2.Close()
			}
		}
	}
	// And what must not be negotiated is refused.
	for _, bad := range []gossh.Config{
		{KeyExchanges: []string{"diffie-hellman-group14-sha1"}},
		{KeyExchanges: []string{gossh.KeyExchangeECDHP256}},
		{Ciphers: []string{gossh.CipherAES128CTR}, MACs: []string{gossh.HMACSHA1}},
		{Ciphers: []string{gossh.CipherAES256CTR}, MACs: []string{gossh.HMACSHA256}},
	} {
		cfg := &gossh.ClientConfig{
			User: "x", Auth: []gossh.AuthMethod{gossh.PublicKeys(alice)},
			HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second, Config: bad,
		}
		if c, err := gossh.Dial("tcp", addr, cfg); err == nil {
			c.Close()
			t.Errorf("negotiated with %+v", bad)
		}
	}
	// ssh-rsa (SHA-1) host key and user signatures are not offered.
	cfg := &gossh.ClientConfig{
		User: "x", Auth: []gossh.AuthMethod{gossh.PublicKeys(alice)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
		HostKeyAlgorithms: []string{gossh.KeyAlgoRSA, gossh.KeyAlgoECDSA256},
	}
	if c, err := gossh.Dial("tcp", addr, cfg); err == nil {
		c.Close()
		t.Error("a non-ed25519 host key algorithm was negotiated")
	}
}

// hostileSource reports a host session whose user, name and device carry
// escape sequences and line breaks, as a crafted utmp record could.
type hostileSource struct{}

func (hostileSource) Name() string { return "host" }
func (hostileSource) List(context.Context) ([]sessions.Session, error) {
	return []sessions.Session{{
		Key: "x", Name: "pts/\x1b[2J9", User: "\x1b]0;pwned\x07mallory\u202e", Type: "sshd\x9b31m",
		Device: "evil\r\nFAKE ROW", State: sessions.Active,
	}}, nil
}
func (hostileSource) Logoff(_ context.Context, _ sessions.Session, req sessions.LogoffRequest) error {
	// What /v says comes from the host too: a process may name itself
	// anything (prctl PR_SET_NAME).
	req.Report.Report("1 process: 4242 (%s)", "\x1b]0;PWNED\x07\x1b[2J")
	return nil
}

// Text from outside never reaches the admin's terminal raw: not in the
// table, not in JSON, not in error messages.
func TestHostileNamesAreNeutralised(t *testing.T) {
	addr, alice := startInProcess(t, hostileSource{})
	for _, cmd := range []string{"query session", "quser", "query session /fo:json", "logoff 2 /v", "query session mallory"} {
		out, _ := run(t, addr, alice, cmd)
		for _, bad := range []string{"\x1b", "\x07", "\r", "\u202e", "\x9b", "\u009b"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s: the output carries a raw %q: %q", cmd, bad, out)
			}
		}
		if cmd == "logoff 2 /v" && !strings.Contains(out, `4242 (\x1b]0;PWNED\x07\x1b[2J)`) {
			t.Errorf("/v does not show the escaped process name: %q", out)
		}
		if strings.Contains(out, "\nFAKE ROW") {
			t.Errorf("%s: a device name started a row of its own: %q", cmd, out)
		}
	}
	out, _ := run(t, addr, alice, "query session")
	// The user name is cut to its 20 columns, after escaping.
	if !strings.Contains(out, `\x1b]0;pwned\x07mal~`) || !strings.Contains(out, `evil\x0d\x0aFAKE ROW`) {
		t.Errorf("the escaped forms are not shown: %q", out)
	}
}

// serverKexInit reads the algorithm lists a server advertises in its
// first (unencrypted) KEXINIT packet.
func serverKexInit(t *testing.T, addr string) [][]string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // the server's version line
		t.Fatal(err)
	}
	io.WriteString(conn, "SSH-2.0-probe\r\n")
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	length := binary.BigEndian.Uint32(hdr[:4])
	body := make([]byte, length-1)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	payload := body[:len(body)-int(hdr[4])]
	if payload[0] != 20 { // SSH_MSG_KEXINIT
		t.Fatalf("first packet is %d, not KEXINIT", payload[0])
	}
	p := payload[17:] // type and cookie
	var lists [][]string
	for i := 0; i < 10; i++ {
		n := binary.BigEndian.Uint32(p)
		lists = append(lists, strings.Split(string(p[4:4+n]), ","))
		p = p[4+n:]
	}
	return lists
}

// What the server advertises is exactly the lists below (but for the
// protocol's own markers): nothing x/crypto adds by default slips in.
func TestAdvertisedAlgorithmsAreExactlyOurs(t *testing.T) {
	addr, _ := startInProcess(t, nil)
	lists := serverKexInit(t, addr)
	var kex []string
	for _, k := range lists[0] {
		if !strings.HasPrefix(k, "ext-info-") && !strings.HasPrefix(k, "kex-strict-") {
			kex = append(kex, k)
		}
	}
	// The lists SECURITY-NOTES.md asks for, written out here rather than
	// taken from keys/, so that a change there must change this test too.
	kexWant := []string{"mlkem768x25519-sha256", "curve25519-sha256"}
	cipherWant := []string{"aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes256-ctr", "aes128-ctr"}
	macWant := []string{"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"}
	want := map[string][]string{
		"kex":        kexWant,
		"host key":   {"ssh-ed25519"},
		"cipher c2s": cipherWant, "cipher s2c": cipherWant,
		"mac c2s": macWant, "mac s2c": macWant,
		"compression c2s": {"none"}, "compression s2c": {"none"},
	}
	got := map[string][]string{
		"kex": kex, "host key": lists[1], "cipher c2s": lists[2], "cipher s2c": lists[3],
		"mac c2s": lists[4], "mac s2c": lists[5], "compression c2s": lists[6], "compression s2c": lists[7],
	}
	for name, w := range want {
		g := got[name]
		// x/crypto also advertises the libssh alias of curve25519.
		if name == "kex" {
			g = slices.DeleteFunc(slices.Clone(g), func(s string) bool { return s == "curve25519-sha256@libssh.org" })
		}
		if strings.Join(g, ",") != strings.Join(w, ",") {
			t.Errorf("%s: advertised %v, want %v", name, got[name], w)
		}
	}
}
