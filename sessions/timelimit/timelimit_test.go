package timelimit

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// scripted is a source whose sessions' idle times the test sets between
// listings: the one way to put input exactly between the tick's listing
// and the re-check before a logoff. The e2e tests drive real logins.
type scripted struct {
	mu       sync.Mutex
	idle     []time.Duration // idle time per listing; the last repeats
	lists    int
	messages []string
	logoffs  int
	state    sessions.State
	source   string
}

func (s *scripted) Name() string { return s.source }

func (s *scripted) List(context.Context) ([]sessions.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idle := s.idle[min(s.lists, len(s.idle)-1)]
	s.lists++
	return []sessions.Session{{Name: "pts/1", User: "student1", State: s.state, Type: "sshd", IdleTime: idle, Key: "k"}}, nil
}

func (s *scripted) Logoff(context.Context, sessions.Session, sessions.LogoffRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logoffs++
	return nil
}

func (s *scripted) Message(_ context.Context, _ sessions.Session, text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, text)
	return nil
}

func newLoop(t *testing.T, src *scripted, rule string) (*Loop, Settings, string) {
	t.Helper()
	c, err := config.Parse([]byte("sessions:\n  policy:\n    - "+rule+"\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	reg := sessions.NewRegistry()
	reg.AddSource(src)
	l := &Loop{opts: Options{Server: "WF12", Registry: reg, Audit: log, Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		state: map[string]*tracked{}}
	return l, FromConfig(c), path
}

func auditText(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestInputBetweenTheTickAndTheLogoffSavesTheSession(t *testing.T) {
	// Listings: tick 1 (warned at 9s), tick 2 (17s, over the limit), then
	// the re-check finds input (1s).
	src := &scripted{idle: []time.Duration{9 * time.Second, 17 * time.Second, time.Second}, state: sessions.Active, source: "host"}
	l, set, path := newLoop(t, src, `{ match: ["user:student*"], idle_logoff: 16s, warn_before: 8s }`)
	ctx := context.Background()
	l.tick(ctx, set)
	if len(src.messages) != 1 || !strings.Contains(src.messages[0], "logged off in 8s") {
		t.Fatalf("warning: %q", src.messages)
	}
	l.state[key(sessions.Session{Source: "host", Key: "k"})].warnedAt = time.Now().Add(-9 * time.Second)
	l.tick(ctx, set)
	if src.lists != 3 {
		t.Fatalf("the logoff did not re-list: %d listings", src.lists)
	}
	if src.logoffs != 0 || strings.Contains(auditText(t, path), "logoff.intent") {
		t.Fatalf("a session with input after the tick's listing was logged off")
	}
	// Idle again past the limit: warned again first, never logged off
	// on the old warning.
	src.idle = []time.Duration{17 * time.Second}
	l.tick(ctx, set)
	if src.logoffs != 0 || len(src.messages) != 2 {
		t.Fatalf("after new input: %d logoffs, %d warnings", src.logoffs, len(src.messages))
	}
}

func TestWarnedThenLoggedOffOnceAsThePolicy(t *testing.T) {
	src := &scripted{idle: []time.Duration{10 * time.Second, 20 * time.Second}, state: sessions.Active, source: "host"}
	l, set, path := newLoop(t, src, `{ match: ["user:student*"], idle_logoff: 16s, warn_before: 8s }`)
	ctx := context.Background()
	l.tick(ctx, set)
	l.tick(ctx, set) // warned just now: warn_before has not passed
	if src.logoffs != 0 {
		t.Fatal("logged off before warn_before had passed since the warning")
	}
	l.state[key(sessions.Session{Source: "host", Key: "k"})].warnedAt = time.Now().Add(-9 * time.Second)
	l.tick(ctx, set)
	if src.logoffs != 1 || len(src.messages) != 1 {
		t.Fatalf("%d logoffs, %d warnings; want one each", src.logoffs, len(src.messages))
	}
	a := auditText(t, path)
	if !strings.Contains(a, `"msg":"logoff.intent","admin":"tsadmin:policy"`) ||
		!strings.Contains(a, `"rule":"sessions.policy[0] (line 3) user:student*: idle 20s, idle_logoff 16s"`) {
		t.Errorf("audit:\n%s", a)
	}
}

func TestDisconnectedTimeCountsFromTheFirstTickThatSawItDisc(t *testing.T) {
	// Disc with no idle time from its source: the loop's own clock.
	src := &scripted{idle: []time.Duration{0}, state: sessions.Disc, source: "host"}
	l, set, path := newLoop(t, src, `{ match: ["*"], disconnected_logoff: 10s, dry_run: true }`)
	ctx := context.Background()
	l.tick(ctx, set)
	if strings.Contains(auditText(t, path), "policy.dry_run") {
		t.Fatal("reported as disconnected too long at first sight")
	}
	l.state[key(sessions.Session{Source: "host", Key: "k"})].discSince = time.Now().Add(-11 * time.Second)
	l.tick(ctx, set)
	l.tick(ctx, set)
	a := auditText(t, path)
	if strings.Count(a, "policy.dry_run") != 1 || !strings.Contains(a, "disconnected 11s, disconnected_logoff 10s") {
		t.Errorf("a dry run is reported once, with the disconnected time:\n%s", a)
	}
	if src.logoffs != 0 || len(src.messages) != 0 {
		t.Error("a dry run touched the session")
	}
}

func TestAdminSessionsOnlyByExplicitType(t *testing.T) {
	rules := func(sel ...string) []config.PolicyRule {
		r := config.PolicyRule{}
		for _, s := range sel {
			c, err := config.ParseSelector(s)
			if err != nil {
				t.Fatal(err)
			}
			r.Selectors = append(r.Selectors, c)
		}
		return []config.PolicyRule{r}
	}
	admin := sessions.Session{Source: "shell", Type: "tsadmin", User: "alice", Name: "ssh#1"}
	hostS := sessions.Session{Source: "host", Type: "sshd", User: "alice", Name: "pts/1"}
	for _, sel := range []string{"*", "user:alice", "name:ssh*", "type:*", "type:ts*"} {
		if match(admin, rules(sel)) >= 0 {
			t.Errorf("%s matches tsadmin's own session", sel)
		}
	}
	for _, sel := range []string{"type:tsadmin", "type:shell"} {
		if match(admin, rules(sel)) != 0 {
			t.Errorf("%s does not match tsadmin's own session", sel)
		}
	}
	if match(hostS, rules("user:alice")) != 0 || match(hostS, rules("type:tsadmin")) >= 0 {
		t.Error("host sessions are matched wrongly")
	}
}

func TestStopEndsTheLoop(t *testing.T) {
	src := &scripted{idle: []time.Duration{0}, state: sessions.Active, source: "host"}
	_, set, _ := newLoop(t, src, `{ match: ["*"], idle_logoff: 1h }`)
	set.Every = 10 * time.Millisecond
	reg := sessions.NewRegistry()
	reg.AddSource(src)
	l := Start(Options{Registry: reg, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, set)
	deadline := time.Now().Add(5 * time.Second)
	for func() int { src.mu.Lock(); defer src.mu.Unlock(); return src.lists }() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	l.Stop()
	src.mu.Lock()
	n := src.lists
	src.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	src.mu.Lock()
	defer src.mu.Unlock()
	if n < 2 || src.lists != n {
		t.Errorf("listings: %d before Stop, %d after", n, src.lists)
	}
}
