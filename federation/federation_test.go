package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// A peer that accepts TCP and then says nothing is exit 7 within the
// connect timeout, not a hang.
func TestSilentPeerTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // accept, never answer
		}
	}()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	pin := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	cfg, err := config.Parse([]byte("name: A\nservers:\n  B:\n    address: "+l.Addr().String()+"\n    host_key: "+pin+"\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, err := audit.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	r := New(Options{Self: "A", Signer: signer, Servers: func() *config.Config { return cfg },
		ConnectTimeout: 500 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer r.Close()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	cmd, _ := shell.Parse("query user /server:B")
	err = r.Relay(context.Background(), "b", shell.Caller{Identity: keys.Identity{Name: "alice"}}, cmd, &stdout, &stderr)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("a silent peer held the command for %s", took)
	}
	if shell.ExitStatus(err) != shell.StatusServer || !strings.Contains(err.Error(), "server B") {
		t.Fatalf("want 7 naming server B, got %d %v", shell.ExitStatus(err), err)
	}
}

func TestParseRequestRefusesAnythingElse(t *testing.T) {
	for _, payload := range []string{
		"query session",
		`{"tsadmin_relay":2,"admin":"a","via":"B","line":"x"}`,
		`{"tsadmin_relay":1,"admin":"","via":"B","line":"x"}`,
		`{"tsadmin_relay":1,"admin":"a","via":"B","line":"x","extra":1}`,
		`{"tsadmin_relay":1,"admin":"a","via":"B","line":"x"}{"line":"logoff 1"}`,
		`{"tsadmin_relay":1,"admin":"a","via":"B","line":"x"} trailing`,
	} {
		if _, err := ParseRequest(payload); err == nil {
			t.Errorf("accepted %q", payload)
		}
	}
	r, err := ParseRequest(`{"tsadmin_relay":1,"admin":"a","fingerprint":"f","via":"B","line":"query user"}`)
	if err != nil || r.Admin != "a" || r.Line != "query user" {
		t.Errorf("a good request: %+v %v", r, err)
	}
}
