package sessions

import (
	"context"
	"math/bits"
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
	// ids holds their IDs and dead a bit per slot of order, set when its
	// session closes: a listing learns which sessions are live, and where
	// an ID is, from two small arrays, without reading a session. Add
	// only appends to the three and compact makes new ones (and counts
	// itself in gen), so a listing may read what it found without the
	// lock.
	order []*ShellSession
	ids   []int
	dead  []uint64 // written with atomic.OrUint64 under mu; read with atomic loads
	gone  int
	gen   uint64
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
	src.ids = append(src.ids, s.id)
	if len(src.order) > 64*len(src.dead) {
		src.dead = append(src.dead, 0)
	}
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
		// Its slot is there: only closed sessions are compacted away.
		i, _ := slices.BinarySearch(src.ids, s.id)
		atomic.OrUint64(&src.dead[i/64], 1<<(i%64))
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
// The live ones go to new slices: listings may still be reading the old.
func (src *ShellSource) compactLocked() {
	n := len(src.order) - src.gone
	order, ids := make([]*ShellSession, 0, n), make([]int, 0, n)
	old := ShellSlots{IDs: src.ids, dead: src.dead}
	for i, s := range src.order {
		if old.Live(i) {
			order, ids = append(order, s), append(ids, s.id)
		}
	}
	src.order, src.ids, src.dead = order, ids, make([]uint64, (n+63)/64)
	src.gone = 0
	src.gen++
}

// ShellSlots is the shell source's sessions as a listing finds them:
// slot i holds the session whose ID is IDs[i], in increasing ID order,
// live or closed since (Live). It is read without a lock. Slots keep
// their numbers until a compaction drops the closed ones and numbers the
// rest anew, with a new Gen: a printer that keeps something per session
// in arrays of its own, slot by slot, can append for the slots that a
// later snapshot of the same Gen adds, and carry its arrays over by ID
// when Gen changes.
type ShellSlots struct {
	Gen   uint64
	IDs   []int // do not modify
	order []*ShellSession
	dead  []uint64
	live  int // at most this many are Live: closed ones never open again
	epoch time.Time
}

// Slots returns the source's slots as they are now: a session closed
// before the call is not Live, and one open until the caller is done
// reading is Live in exactly one slot.
func (src *ShellSource) Slots() ShellSlots {
	src.mu.Lock()
	defer src.mu.Unlock()
	n := len(src.order)
	return ShellSlots{Gen: src.gen, IDs: src.ids[:n:n], order: src.order[:n:n], dead: src.dead,
		live: n - src.gone, epoch: src.epoch}
}

// Live reports whether slot i's session is open (it was when the slots
// were taken, and has not closed since).
func (v *ShellSlots) Live(i int) bool {
	return atomic.LoadUint64(&v.dead[i/64])&(1<<(i%64)) == 0
}

// NextRun returns the first run of consecutive live slots [start, stop)
// at or after slot i and before end; start is end when there is none.
// It reads a word of 64 slots at a time.
func (v *ShellSlots) NextRun(i, end int) (start, stop int) {
	start = v.scan(i, end, true)
	return start, v.scan(start, end, false)
}

// scan returns the first slot in [i, end) that is live (or, for !live,
// closed), or end.
func (v *ShellSlots) scan(i, end int, live bool) int {
	for i < end {
		w := atomic.LoadUint64(&v.dead[i/64]) >> (i % 64)
		if live {
			w = ^w
		}
		if i%64 != 0 {
			w &= 1<<(64-i%64) - 1 // the bits shifted in are not slots
		}
		if w != 0 {
			return min(i+bits.TrailingZeros64(w), end)
		}
		i += 64 - i%64
	}
	return end
}

// Session returns slot i's session as List lists it.
func (v *ShellSlots) Session(i int) Session {
	var r Session
	v.order[i].fill(&r, int64(time.Since(v.epoch)))
	return r
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
	slots := src.Slots()
	now := int64(time.Since(src.epoch))
	end := len(slots.IDs)
	out := slices.Grow(dst[:0], slots.live)[:slots.live]
	n := 0
	for i := 0; i < end; {
		start, stop := slots.NextRun(i, end)
		for _, s := range slots.order[start:stop] {
			s.fill(&out[n], now)
			n++
		}
		i = stop
	}
	return out[:n]
}

// fill sets every field of r (which may hold another session) to the
// session's, its idle time as of now (time since src.epoch). Field by
// field: a Session literal would be built and then copied whole.
func (s *ShellSession) fill(r *Session, now int64) {
	r.ID, r.Name, r.User, r.State, r.Type = s.id, s.name, s.admin, Active, ShellType
	r.Device, r.LogonTime, r.IdleTime = s.device, s.logon, time.Duration(now-s.lastInput.Load())
	r.Source, r.Key, r.Admin, r.Memo = shellSourceName, s.key, s.admin, &s.memo
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
