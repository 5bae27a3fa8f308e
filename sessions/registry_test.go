package sessions

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// fakeSource is a test double for a host source: a list the test controls.
type fakeSource struct {
	mu   sync.Mutex
	name string
	list []Session
	err  error
}

func (f *fakeSource) Name() string { return f.name }
func (f *fakeSource) List(context.Context) ([]Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Session(nil), f.list...), f.err
}
func (f *fakeSource) Logoff(context.Context, Session, LogoffRequest) error { return nil }
func (f *fakeSource) set(keys ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = nil
	for _, k := range keys {
		f.list = append(f.list, Session{Key: k, Name: "pts/" + k, User: "u" + k})
	}
}

func ids(list []Session) map[string]int {
	m := map[string]int{}
	for _, s := range list {
		m[s.Key] = s.ID
	}
	return m
}

func TestIDsAreStableAndNeverReused(t *testing.T) {
	r := NewRegistry()
	src := &fakeSource{name: "host"}
	r.AddSource(src)
	ctx := context.Background()

	src.set("a", "b")
	first, _ := r.List(ctx)
	again, _ := r.List(ctx)
	if ids(first)["a"] != ids(again)["a"] || ids(first)["b"] != ids(again)["b"] {
		t.Fatalf("IDs changed between listings: %v %v", ids(first), ids(again))
	}
	// b ends, c starts: c gets a new ID, never b's.
	src.set("a", "c")
	third, _ := r.List(ctx)
	if ids(third)["c"] == ids(first)["b"] || ids(third)["c"] == ids(first)["a"] {
		t.Fatalf("an ID was reused: %v after %v", ids(third), ids(first))
	}
	// b comes back with the same key after being forgotten: a new ID too.
	src.set("a", "b", "c")
	fourth, _ := r.List(ctx)
	if ids(fourth)["b"] == ids(first)["b"] {
		t.Fatalf("an ended session's ID came back: %v", ids(fourth))
	}
	// The map forgets what has gone.
	src.set()
	r.List(ctx)
	if n := len(r.ids["host"]); n != 0 {
		t.Errorf("%d gone sessions are still remembered", n)
	}
}

func TestAFailingSourceKeepsItsIDs(t *testing.T) {
	r := NewRegistry()
	src := &fakeSource{name: "host"}
	r.AddSource(src)
	ctx := context.Background()
	src.set("a")
	before, _ := r.List(ctx)
	src.err = errors.New("utmp unreadable")
	_, errs := r.List(ctx)
	if len(errs) != 1 {
		t.Fatalf("want the source's error, got %v", errs)
	}
	src.err = nil
	after, _ := r.List(ctx)
	if ids(before)["a"] != ids(after)["a"] {
		t.Errorf("a source that failed once lost its IDs: %v -> %v", ids(before), ids(after))
	}
}

func TestFindNeverGuesses(t *testing.T) {
	list := []Session{{ID: 3, Name: "pts/1"}, {ID: 4, Name: "PTS/2"}, {ID: 5, Name: "pts/2"}}
	if s, err := Find(list, "3"); err != nil || s.Name != "pts/1" {
		t.Errorf("by ID: %v %v", s, err)
	}
	if s, err := Find(list, "PTS/1"); err != nil || s.ID != 3 {
		t.Errorf("by name, case-insensitive: %v %v", s, err)
	}
	if _, err := Find(list, "pts/2"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("an ambiguous name: %v", err)
	}
	if _, err := Find(list, "9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a missing ID: %v", err)
	}
	if _, err := Find(list, "tty9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a missing name: %v", err)
	}
}

type nopControl struct{}

func (nopControl) Kick(string)   {}
func (nopControl) Notify(string) {}

// Shell sessions added while listings run keep the ID they were given.
func TestShellSessionIDsSurviveConcurrentListings(t *testing.T) {
	r := NewRegistry()
	shells := NewShellSource(r)
	r.AddSource(shells)
	ctx := context.Background()
	stop := repeat(func() { r.List(ctx) })
	var added []*ShellSession
	for i := 0; i < 500; i++ {
		added = append(added, shells.Add("alice", "127.0.0.1", nopControl{}))
	}
	stop()
	list, _ := r.List(ctx)
	got := map[int]string{}
	for _, s := range list {
		got[s.ID] = s.Name
	}
	for _, s := range added {
		if got[s.ID()] != s.Name() {
			t.Fatalf("session %s is listed under ID %d as %q", s.Name(), s.ID(), got[s.ID()])
		}
	}
}

// The listing is sorted by ID across sources, whether a source lists in
// ID order (the shell source, which is merged without a sort, also after
// closed sessions were compacted away) or not (the host source's order).
func TestListIsSortedByIDAcrossSources(t *testing.T) {
	r, host, shells := hostAndShells()
	var open []*ShellSession
	for round := range 5 {
		for range 7 {
			open = append(open, shells.Add("alice", "127.0.0.1", nopControl{}))
		}
		// Close most of them, oldest first, so that order is compacted.
		for len(open) > 3 {
			open[0].Close()
			open = open[1:]
		}
		keys := []string{"z", "b", "m"}
		host.set(fmt.Sprint("k", round), keys[round%3], keys[(round+1)%3]) // a new one first
		list, errs := r.List(context.Background())
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		if len(list) != len(open)+3 {
			t.Fatalf("round %d: %d sessions listed, want %d", round, len(list), len(open)+3)
		}
		for i := 1; i < len(list); i++ {
			if list[i-1].ID >= list[i].ID {
				t.Fatalf("round %d: not sorted by ID at %d: %d then %d", round, i, list[i-1].ID, list[i].ID)
			}
		}
		listed := map[int]bool{}
		for _, s := range list {
			listed[s.ID] = true
		}
		for _, s := range open {
			if !listed[s.ID()] {
				t.Fatalf("round %d: open session %d not listed", round, s.ID())
			}
		}
	}
}

// The shell source hands out its own IDs: the registry keeps nothing per
// shell session (so a listing has nothing to look up or forget), and an
// ID is still never handed out twice, across sources too.
func TestShellIDsAreNeverReusedAndNotRemembered(t *testing.T) {
	r, host, shells := hostAndShells()
	ctx := context.Background()
	seen := map[int]string{}
	for round := range 50 {
		s := shells.Add("alice", "127.0.0.1", nopControl{})
		host.set(fmt.Sprint("k", round))
		list, _ := r.List(ctx)
		for _, l := range list {
			who := l.Source + "/" + l.Key
			if prev, ok := seen[l.ID]; ok && prev != who {
				t.Fatalf("ID %d named %s, then %s", l.ID, prev, who)
			}
			seen[l.ID] = who
		}
		s.Close()
	}
	if n := len(r.ids["shell"]); n != 0 {
		t.Errorf("the registry remembers %d shell sessions", n)
	}
}

// Listings that run while shell sessions come and go (and the closed ones
// are compacted away) list every session that was open throughout, once,
// in ID order, and never one that had closed before the listing began.
func TestShellListingsWhileSessionsComeAndGo(t *testing.T) {
	r := NewRegistry()
	shells := NewShellSource(r)
	r.AddSource(shells)
	ctx := context.Background()
	var steady []*ShellSession
	for range 20 {
		steady = append(steady, shells.Add("alice", "127.0.0.1", nopControl{}))
	}
	// Churn: many adds and closes, so that order is compacted often.
	stop := repeat(func() { shells.Add("bob", "127.0.0.1", nopControl{}).Close() })
	for range 300 {
		gone := shells.Add("carol", "127.0.0.1", nopControl{})
		gone.Close()
		list, _ := r.List(ctx)
		listed := map[int]int{}
		for i, s := range list {
			listed[s.ID]++
			if i > 0 && list[i-1].ID >= s.ID {
				t.Fatalf("not in ID order: %d then %d", list[i-1].ID, s.ID)
			}
		}
		for _, s := range steady {
			if listed[s.ID()] != 1 {
				t.Fatalf("open session %d listed %d times", s.ID(), listed[s.ID()])
			}
		}
		if listed[gone.ID()] != 0 {
			t.Fatalf("session %d, closed before the listing, is listed", gone.ID())
		}
	}
	stop()
}

// hostAndShells is a registry with a host source the test controls, then
// the shell source.
func hostAndShells() (*Registry, *fakeSource, *ShellSource) {
	r := NewRegistry()
	host := &fakeSource{name: "host"}
	shells := NewShellSource(r)
	r.AddSource(host)
	r.AddSource(shells)
	return r, host, shells
}

// repeat runs f over and over on another goroutine until the returned
// stop is called, which returns once f has stopped.
func repeat(f func()) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
				f()
			}
		}
	}()
	return func() { close(quit); <-done }
}

// ListOthers lists every source but the one skipped, and says whether it
// was one of the registry's: a shell source that is not registered is
// not listed by the caller either.
func TestListOthers(t *testing.T) {
	r, host, shells := hostAndShells()
	host.set("1", "2")
	defer shells.Add("alice", "192.0.2.7", nopControl{}).Close()
	ctx := context.Background()
	list, errs, skipped := r.ListOthers(ctx, nil, shells)
	if len(errs) > 0 || !skipped || len(list) != 2 || list[0].Source != "host" || list[1].Source != "host" {
		t.Fatalf("without the shell source: %+v, %v, skipped %v", list, errs, skipped)
	}
	unregistered := NewShellSource(r)
	list, _, skipped = r.ListOthers(ctx, nil, unregistered)
	if skipped || len(list) != 3 {
		t.Fatalf("skipping a source the registry lacks: %d sessions, skipped %v; want 3, false", len(list), skipped)
	}
}
