package shell

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// testEnv is an Env with one operator, alice, and tsadmin's own sessions.
func testEnv(t testing.TB) (*Env, keys.Identity) {
	t.Helper()
	cfg, err := config.Parse([]byte("name: WF12\nroles: { operator: { logoff: [\"*\"] } }\nadmins:\n  - { name: alice, role: operator, keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice\"] }\n"),
		filepath.Join(t.TempDir(), "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := keys.NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(filepath.Join(t.TempDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	reg := sessions.NewRegistry()
	shells := sessions.NewShellSource(reg)
	reg.AddSource(shells)
	env := &Env{
		Server: "WF12", Registry: reg, Shells: shells, Audit: log,
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Policy: func() *keys.Policy { return policy },
		Idle:   func() time.Duration { return time.Minute },
	}
	return env, keys.Identity{Name: "alice", Role: "operator"}
}

// The words that crashed the server, and runes whose case forms differ in
// length: İ (2 bytes, lowers to 3), K (Kelvin sign, 3 bytes, lowers to 1),
// ſ (long s, 2 bytes, uppers to 1), ẞ, ﬀ.
var caseFormRunes = []string{"exİt", "İ", "qİ", "logoff K", "ſ", "query ſ", "QUERY SESSİON /S", "logoff /ſERVER:", "ẞ", "ﬀ", "hİ", "LOGOFF /V /İ"}

func TestCompletionNeverPanicsOnCaseFormsOfDifferentLength(t *testing.T) {
	env, id := testEnv(t)
	var out bytes.Buffer
	m := &completer{env: env, id: id, out: &out}
	for _, line := range caseFormRunes {
		for pos := 0; pos <= len(line)+1; pos++ {
			for range 2 { // a second Tab lists the choices
				newLine, newPos, ok := m.complete(line, pos, '\t')
				if ok && (newPos < 0 || newPos > len(newLine) || !utf8.ValidString(newLine)) {
					t.Errorf("complete(%q, %d) = %q, %d", line, pos, newLine, newPos)
				}
			}
		}
	}
}

func TestCompletionMatchesIgnoringCase(t *testing.T) {
	env, id := testEnv(t)
	m := &completer{env: env, id: id, out: io.Discard}
	cases := []struct{ line, want string }{
		{"LOGO", "LOGOff "},
		{"query SE", "query SEssion "},
		{"quser /fo:J", "quser /fo:Json "},
		{"exİt", ""}, // İ folds to no ASCII letter: no completion, no crash
		{"logoff /SERVER:wf", "logoff /SERVER:wf12 "},
		{"query PR", "query PRocess "},
		{"query process /I", "query process /Id:"},
		{"logoff 3 /n", "logoff 3 /now "},
		{"logoff /us", "logoff /user:"},
	}
	for _, c := range cases {
		got, _, ok := m.complete(c.line, len(c.line), '\t')
		if !ok {
			got = ""
		}
		if got != c.want {
			t.Errorf("complete(%q) = %q, want %q", c.line, got, c.want)
		}
	}
}

func FuzzComplete(f *testing.F) {
	for _, s := range caseFormRunes {
		f.Add(s, len(s))
	}
	f.Add("logoff ", 7)
	f.Add("query session /server:", 22)
	env, id := testEnv(f)
	f.Fuzz(func(t *testing.T, line string, pos int) {
		m := &completer{env: env, id: id, out: io.Discard}
		for range 2 {
			newLine, newPos, ok := m.complete(line, pos, '\t')
			if ok && (newPos < 0 || newPos > len(newLine)) {
				t.Fatalf("complete(%q, %d) = %q, %d", line, pos, newLine, newPos)
			}
		}
	})
}

// fuzzChannel is a Channel whose input is the fuzzer's bytes and whose
// output goes nowhere.
type fuzzChannel struct {
	in     io.Reader
	mu     sync.Mutex
	status int
}

func (c *fuzzChannel) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *fuzzChannel) Write(p []byte) (int, error) { return len(p), nil }
func (c *fuzzChannel) Stderr() io.Writer           { return io.Discard }
func (c *fuzzChannel) Hangup()                     {}
func (c *fuzzChannel) Exit(status int) {
	c.mu.Lock()
	c.status = status
	c.mu.Unlock()
}

// FuzzEditorKeys types arbitrary bytes (keys, escape sequences, pastes,
// Tab, Ctrl-C, Unicode) into the real interactive session: x/term's line
// editor behind the input guard, with completion. A panic that unwound
// through x/term would kill the fuzzing process outright; the session must
// instead end by itself, with a status of the table.
func FuzzEditorKeys(f *testing.F) {
	for _, s := range caseFormRunes {
		f.Add([]byte(s + "\t\t\x03"))
	}
	f.Add([]byte("\x1b[200~logoff 1\rlogoff 2\r\x1b[201~"))
	f.Add([]byte("\x1b" + strings.Repeat("[", 300) + "A"))
	f.Add([]byte("help\r\x1b[A\x1b[A\r\x04"))
	f.Add([]byte("logoff \t\t\x7f\x7f\t\r"))
	env, id := testEnv(f)
	f.Fuzz(func(t *testing.T, keys []byte) {
		if len(keys) > 8192 {
			return
		}
		ch := &fuzzChannel{in: bytes.NewReader(keys)}
		s := env.NewSession(ch, id, "127.0.0.1", &PTY{Term: "xterm", Width: 80, Height: 24})
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.Run(context.Background(), false, "")
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the session did not end on its input's EOF: %q", keys)
		}
		ch.mu.Lock()
		defer ch.mu.Unlock()
		switch ch.status {
		case StatusOK, StatusUsage:
		default:
			t.Fatalf("status %d for keys %q", ch.status, fmt.Sprint(keys))
		}
	})
}
