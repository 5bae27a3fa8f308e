package sessions

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ShellType is the TYPE column of tsadmin's own sessions.
const ShellType = "tsadmin"

// ShellSource is tsadmin's own SSH sessions. It is always on. The SSH
// server adds a session when a client's shell or command starts and removes
// it when it ends.
type ShellSource struct {
	reg   *Registry
	epoch time.Time // input times are kept as monotonic time since epoch

	mu       sync.Mutex
	sessions map[string]*ShellSession
	seq      uint64
	// order holds the sessions in ID order, so that a listing needs no
	// sort; a closed one stays until compact drops it (gone counts them).
	// Add only appends to it and compact makes a new one, so a listing
	// may read the order it found without the lock.
	order []*ShellSession
	gone  int
}

// NewShellSource returns the shell source; it takes its IDs from reg.
func NewShellSource(reg *Registry) *ShellSource {
	return &ShellSource{reg: reg, epoch: time.Now(), sessions: make(map[string]*ShellSession)}
}

// ShellSession is one live tsadmin session, owned by the SSH server.
type ShellSession struct {
	src    *ShellSource
	key    string
	id     int
	name   string // ssh#ID, made once
	admin  string
	device string
	logon  time.Time
	ctl    ShellControl
	done   chan struct{}
	memo   Memo // the printer's, for Session.Memo: the cells never change

	lastInput atomic.Int64 // time since src.epoch
	closeOnce sync.Once
	closed    atomic.Bool // set under src.mu: it has left order's live part
}

// ShellControl is how the source reaches a live session's connection.
type ShellControl interface {
	// Kick ends the session from outside (a logoff by someone else, or by
	// the admin from another session): it tells the client who ended it
	// and closes the connection.
	Kick(by string)
	// Notify writes a message to the session's terminal.
	Notify(text string)
}

// Add registers a new session of admin connected from device.
func (src *ShellSource) Add(admin, device string, ctl ShellControl) *ShellSession {
	now := time.Now()
	s := &ShellSession{
		src: src, admin: admin, device: device,
		logon: now, ctl: ctl, done: make(chan struct{}),
	}
	s.lastInput.Store(int64(now.Sub(src.epoch)))
	// The key, the ID and the entry in the map in one step: a listing
	// then either sees the session, or started before its ID existed (and
	// so cannot judge it gone); and IDs, handed out in increasing order,
	// keep order sorted.
	src.mu.Lock()
	src.seq++
	s.key = strconv.FormatUint(src.seq, 10)
	s.id = src.reg.newID()
	s.name = "ssh#" + strconv.Itoa(s.id)
	src.sessions[s.key] = s
	src.order = append(src.order, s)
	src.mu.Unlock()
	return s
}

// ID is the registry ID of the session.
func (s *ShellSession) ID() int { return s.id }

// Name is the session name shown in listings, ssh#ID.
func (s *ShellSession) Name() string { return s.name }

// Touch records input from the client, for the idle time.
func (s *ShellSession) Touch() {
	s.lastInput.Store(int64(time.Since(s.src.epoch)))
}

// Close removes the session from the listing. It is safe to call more than
// once.
func (s *ShellSession) Close() {
	s.closeOnce.Do(func() {
		src := s.src
		src.mu.Lock()
		delete(src.sessions, s.key)
		s.closed.Store(true)
		src.gone++
		if src.gone > len(src.order)/2 {
			src.compactLocked()
		}
		src.mu.Unlock()
		close(s.done)
	})
}

// compactLocked drops the closed sessions from order, keeping it sorted;
// it runs when they are half of it, so its cost per Close is constant.
// The live ones go to a new slice: listings may still be reading the old.
func (src *ShellSource) compactLocked() {
	live := make([]*ShellSession, 0, len(src.order)-src.gone)
	for _, s := range src.order {
		if !s.closed.Load() {
			live = append(live, s)
		}
	}
	src.order, src.gone = live, 0
}

const shellSourceName = "shell"

// Name implements Source.
func (src *ShellSource) Name() string { return shellSourceName }

// List implements Source. The sessions come in ID order, with their IDs
// (the source hands them out: ownIDs).
func (src *ShellSource) List(ctx context.Context) ([]Session, error) {
	return src.appendList(nil), nil
}

// appendList implements appendLister: List, into dst.
func (src *ShellSource) appendList(dst []Session) []Session {
	src.mu.Lock()
	order, live := src.order, len(src.order)-src.gone
	src.mu.Unlock()

	now := int64(time.Since(src.epoch))
	out := slices.Grow(dst[:0], live)[:live]
	n := 0
	for _, s := range order {
		if s.closed.Load() {
			continue // closed before order was read (gone), or since
		}
		// Field by field, every field (dst held another listing): a
		// Session literal would be built and then copied whole.
		r := &out[n]
		n++
		r.ID, r.Name, r.User, r.State, r.Type = s.id, s.name, s.admin, Active, ShellType
		r.Device, r.LogonTime, r.IdleTime = s.device, s.logon, time.Duration(now-s.lastInput.Load())
		r.Source, r.Key, r.Admin, r.Memo = shellSourceName, s.key, s.admin, &s.memo
	}
	return out[:n]
}

func (*ShellSource) ownsIDs() {}

// Logoff implements Source: it asks the connection to close and waits until
// the session has gone. A tsadmin session runs no program, so /now (Now)
// changes nothing: closing the connection is already immediate.
func (src *ShellSource) Logoff(ctx context.Context, target Session, req LogoffRequest) error {
	report := req.Report
	s, err := src.live(target)
	if err != nil {
		return err
	}
	report.Report("closing the SSH connection of %s (%s) from %s", s.Name(), s.admin, s.device)
	s.ctl.Kick(req.By)
	select {
	case <-s.done:
		report.Report("session %d ended", target.ID)
		return nil
	case <-ctx.Done():
		return Errorf(ErrSurvived, "session %d is still open: %v", target.ID, ctx.Err())
	}
}

// Message implements Messenger.
func (src *ShellSource) Message(ctx context.Context, target Session, text string) error {
	s, err := src.live(target)
	if err != nil {
		return err
	}
	s.ctl.Notify(text)
	return nil
}

// live returns the session target names, if it is still there.
func (src *ShellSource) live(target Session) (*ShellSession, error) {
	src.mu.Lock()
	s := src.sessions[target.Key]
	src.mu.Unlock()
	if s == nil {
		return nil, Errorf(ErrNotFound, "session %d has already ended", target.ID)
	}
	return s, nil
}
