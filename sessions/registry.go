package sessions

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Registry merges the sources and gives every session a small integer ID.
// An ID is handed out once: while the server runs it never names another
// session, even after its own session has ended.
type Registry struct {
	mu      sync.Mutex
	sources []Source
	next    int
	gen     uint64                         // listings started so far
	ids     map[string]map[string]*idEntry // source name -> key -> entry
}

type idEntry struct {
	id   int
	seen uint64 // the newest listing that saw the session
}

// NewRegistry returns an empty registry; add sources with AddSource.
func NewRegistry() *Registry {
	return &Registry{next: 1, ids: make(map[string]map[string]*idEntry)}
}

// AddSource adds a source. Sources are listed in the order they were added.
func (r *Registry) AddSource(s Source) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sources = append(r.sources, s)
}

// Sources returns the names of the configured sources.
func (r *Registry) Sources() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, len(r.sources))
	for i, s := range r.sources {
		names[i] = s.Name()
	}
	return names
}

// newID hands out the next ID, to a source that gives its sessions their
// IDs itself (see ownIDs): it is not remembered, and no later listing
// looks it up or forgets it.
func (r *Registry) newID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.next
	r.next++
	return id
}

// ownIDs is a source whose sessions come with ID and Source set, the ID
// taken from newID when the session began, and in ID order: IDs then cost a listing
// nothing per session, and a session that has gone leaves nothing to
// forget. The shell source is one.
type ownIDs interface{ ownsIDs() }

// appendLister is a source that lists into a buffer, growing it only when
// it is too small, and cannot fail: the shell source.
type appendLister interface {
	appendList(dst []Session) []Session
}

func (r *Registry) entryLocked(source, key string) *idEntry {
	bySource := r.ids[source]
	if bySource == nil {
		bySource = make(map[string]*idEntry)
		r.ids[source] = bySource
	}
	e := bySource[key]
	if e == nil {
		e = &idEntry{id: r.next}
		r.next++
		bySource[key] = e
	}
	return e
}

// SourceError is a source that could not be listed; the others still are.
type SourceError struct {
	Source string
	Err    error
}

func (e *SourceError) Error() string { return fmt.Sprintf("%s sessions: %v", e.Source, e.Err) }
func (e *SourceError) Unwrap() error { return e.Err }

// List returns every session of every source, sorted by ID. A source that
// fails is reported in errs and its sessions keep their IDs.
func (r *Registry) List(ctx context.Context) (all []Session, errs []error) {
	return r.ListInto(ctx, nil)
}

// ListInto is List, reusing buf (a listing the caller no longer needs,
// or nil) where it can: listing thousands of sessions for every command
// then allocates nothing. The listing may share buf's memory.
func (r *Registry) ListInto(ctx context.Context, buf []Session) (all []Session, errs []error) {
	all, errs, _ = r.ListOthers(ctx, buf, nil)
	return all, errs
}

// ListOthers is ListInto without the sessions of source skip, which the
// caller reads itself (the shell source's Slots); skipped reports whether
// skip is one of the registry's sources.
func (r *Registry) ListOthers(ctx context.Context, buf []Session, skip Source) (all []Session, errs []error, skipped bool) {
	r.mu.Lock()
	sources := make([]Source, 0, len(r.sources))
	for _, src := range r.sources {
		if skip != nil && src == skip {
			skipped = true
			continue
		}
		sources = append(sources, src)
	}
	firstNew := r.next
	r.gen++
	gen := r.gen
	r.mu.Unlock()

	type result struct {
		list []Session
		err  error
	}
	results := make([]result, len(sources))
	into := -1 // the source that lists into buf
	for i, src := range sources {
		if _, ok := src.(appendLister); ok {
			into = i
			break
		}
	}
	list := func(i int) {
		// A bug in one source must not take the server down: it
		// becomes that source's error.
		defer func() {
			if r := recover(); r != nil {
				results[i].list, results[i].err = nil, fmt.Errorf("internal error: %v", r)
			}
		}()
		if i == into {
			results[i].list = sources[i].(appendLister).appendList(buf[:0])
			return
		}
		results[i].list, results[i].err = sources[i].List(ctx)
	}
	// The sources that read the host (utmp and /proc, D-Bus) are read at
	// once, each but the last on a goroutine of its own; the shell
	// source, which only copies from memory, and the last are read on
	// this goroutine, which would only wait: every goroutine started is
	// one more to wake per listing, and a listing runs for every command.
	var wg sync.WaitGroup
	last := len(sources) - 1
	for last >= 0 && last == into {
		last--
	}
	for i := range sources {
		if i == into || i == last {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			list(i)
		}()
	}
	if into >= 0 {
		list(into)
	}
	if last >= 0 {
		list(last)
	}
	wg.Wait()

	n := 0
	for _, res := range results {
		n += len(res.list)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, src := range sources {
		name := src.Name()
		if results[i].err != nil {
			errs = append(errs, &SourceError{Source: name, Err: results[i].err})
			results[i].list = nil
			continue
		}
		list := results[i].list
		if _, own := src.(ownIDs); own {
			continue // sorted by ID, with nothing to look up or forget
		}
		for j := range list {
			e := r.entryLocked(name, list[j].Key)
			e.seen = max(e.seen, gen)
			list[j].ID = e.id
			list[j].Source = name
		}
		// Forget the source's sessions that have gone, so the map does
		// not grow without bound. Only entries that existed before this
		// listing started can be judged gone (one allocated meanwhile may
		// belong to a session that started after the source was read),
		// and only if no later listing has seen them since. A source
		// that failed forgets nothing.
		for key, e := range r.ids[name] {
			if e.id < firstNew && e.seen < gen {
				delete(r.ids[name], key)
			}
		}
		// Sessions are large to move: a source that lists in ID order
		// is not sorted again.
		if !slices.IsSortedFunc(list, byID) {
			slices.SortFunc(list, byID)
		}
	}
	lists := make([][]Session, len(results))
	for i, res := range results {
		lists[i] = res.list
	}
	return mergeByID(lists, n), errs, skipped
}

func byID(a, b Session) int { return a.ID - b.ID }

// mergeByID merges the sources' lists (heads, which it consumes), each
// sorted by ID, into one sorted list of n sessions. There are a few
// sources, so the head of each is compared at every step.
func mergeByID(heads [][]Session, n int) []Session {
	var nonEmpty [][]Session
	for _, h := range heads {
		if len(h) > 0 {
			nonEmpty = append(nonEmpty, h)
		}
	}
	if len(nonEmpty) == 1 {
		return nonEmpty[0] // one source has sessions: its list is the listing
	}
	all := make([]Session, 0, n)
	for {
		best := -1
		for i, h := range heads {
			if len(h) > 0 && (best < 0 || h[0].ID < heads[best][0].ID) {
				best = i
			}
		}
		if best < 0 {
			return all
		}
		all = append(all, heads[best][0])
		heads[best] = heads[best][1:]
	}
}

// MaxIDDigits bounds how long a numeric session ID argument may be.
const MaxIDDigits = 9

// AllDigits reports whether s is a non-empty run of ASCII digits.
func AllDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// ParseNumber is the one parser of a session ID (and of the other small
// numbers of the command language): a non-negative decimal of at most
// MaxIDDigits digits, leading zeros allowed.
func ParseNumber(s string) (int, bool) {
	if !AllDigits(s) || len(s) > MaxIDDigits {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// Find returns the one session that target names: an ID, or a session name
// that must match exactly one session (case-insensitive). It never guesses.
func Find(list []Session, target string) (Session, error) {
	if id, ok := ParseNumber(target); ok {
		for _, s := range list {
			if s.ID == id {
				return s, nil
			}
		}
		return Session{}, Errorf(ErrNotFound, "no session has ID %d", id)
	}
	var match []Session
	for _, s := range list {
		if strings.EqualFold(s.Name, target) {
			match = append(match, s)
		}
	}
	switch len(match) {
	case 0:
		return Session{}, Errorf(ErrNotFound, "no session is named %q", target)
	case 1:
		return match[0], nil
	default:
		ids := make([]string, len(match))
		for i, s := range match {
			ids[i] = strconv.Itoa(s.ID)
		}
		return Session{}, Errorf(ErrAmbiguous, "%d sessions are named %q (IDs %s); use the ID",
			len(match), target, strings.Join(ids, ", "))
	}
}

// source returns the source that listed s.
func (r *Registry) source(s Session) (Source, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, candidate := range r.sources {
		if candidate.Name() == s.Source {
			return candidate, nil
		}
	}
	return nil, Errorf(ErrNotFound, "source %q is not configured", s.Source)
}

// Logoff ends s through the source that listed it, as req asks.
func (r *Registry) Logoff(ctx context.Context, s Session, req LogoffRequest) error {
	src, err := r.source(s)
	if err != nil {
		return err
	}
	return src.Logoff(ctx, s, req)
}

// Processes returns the processes of the sessions of list, keyed by
// session ID, each source asked once for its own sessions. Sessions of a
// source that is no ProcessLister have none; a source that fails is
// reported in errs and the others still answer.
func (r *Registry) Processes(ctx context.Context, list []Session) (procs map[int][]Process, errs []error) {
	bySource := map[string][]Session{}
	var order []string
	for _, s := range list {
		if bySource[s.Source] == nil {
			order = append(order, s.Source)
		}
		bySource[s.Source] = append(bySource[s.Source], s)
	}
	procs = map[int][]Process{}
	for _, name := range order {
		src, err := r.source(bySource[name][0])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lister, ok := src.(ProcessLister)
		if !ok {
			continue
		}
		byKey, err := lister.Processes(ctx, bySource[name])
		if err != nil {
			errs = append(errs, &SourceError{Source: name, Err: err})
			continue
		}
		for _, s := range bySource[name] {
			if ps, ok := byKey[s.Key]; ok {
				procs[s.ID] = ps
			}
		}
	}
	return procs, errs
}

// Message writes text to the terminal of s, where its source can.
func (r *Registry) Message(ctx context.Context, s Session, text string) error {
	src, err := r.source(s)
	if err != nil {
		return err
	}
	m, ok := src.(Messenger)
	if !ok {
		return ErrNoMessage
	}
	return m.Message(ctx, s, text)
}
