package server

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// After a burst of connections, the garbage of their handshakes (about
// 50 KB each) stays in the heap until the next collection, which an idle
// server does not make, and the goroutine stacks that the handshakes grew
// stay grown until then: a server that took 10,000 logins in a minute
// kept about 11 KiB per session more than the sessions use. Once the
// connections stop coming and going, the server collects and hands the
// free memory back to the OS (debug.FreeOSMemory), as the runtime's
// scavenger would only over minutes.
const (
	// settleQuiet is how long no connection starts or ends before a
	// burst is over.
	settleQuiet = 250 * time.Millisecond
	// settleBurst is how many connection events (handshakes done,
	// connections closed) since the last settle make one worth a
	// collection: a burst, or as many over a longer time.
	settleBurst = 256
	// settleShare bounds the time spent settling: after a settle that
	// took d, the next waits settleShare*d at least (at 10,000 sessions
	// a settle takes about 0.4 s on 2 cores).
	settleShare = 20
	// settleStuck is how many quiet periods with no connection event a
	// handshake under way delays a settle.
	settleStuck = 10
	// settleWorth is how much heap a settle must be able to hand back:
	// below it (a server of a few hundred sessions after a burst of
	// one-shots), a full collection, and the page faults of the next
	// burst on the memory handed back, cost more than they save.
	settleWorth = 32 << 20
)

// settler runs the settle after each burst; its zero value is not ready,
// newSettler makes one.
type settler struct {
	quiet time.Duration
	burst int
	// busy reports connections still in their handshake: a burst is not
	// over while any is, though a stall (a collection on a loaded
	// machine) may keep them all quiet for a while. It must not be
	// called with mu held (it takes the server's lock, under which note
	// is called).
	busy func() bool
	// free hands memory back: debug.FreeOSMemory, slowed in tests.
	free func()
	// worth is settleWorth; tests lower it.
	worth uint64

	mu        sync.Mutex
	events    int       // connection events since the last settle
	last      time.Time // the latest event
	timer     *time.Timer
	notBefore time.Time // settleShare after the last settle
	settling  bool      // a settle runs: notBefore is known only once it ends
	settled   int       // settles done, for tests
	stopped   bool      // the server shut down: no more settles
}

func newSettler(busy func() bool) *settler {
	return &settler{quiet: settleQuiet, burst: settleBurst, busy: busy, free: debug.FreeOSMemory, worth: settleWorth}
}

// note counts a connection event (a handshake done, a connection
// closed): once a burst has been counted, a settle waits for quiet.
func (s *settler) note() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events++
	s.last = time.Now()
	if s.timer == nil && s.events >= s.burst && !s.stopped {
		s.timer = time.AfterFunc(s.quiet, s.fire)
	}
}

// fire settles if the burst is over and the last settle long enough ago,
// else waits until then.
func (s *settler) fire() {
	// Both read outside mu: busy takes the server's lock, and note,
	// called under it, must never wait on a metrics read.
	busy, freeable := s.busy(), reclaimable()
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	since := time.Since(s.last)
	wait := max(s.quiet-since, time.Until(s.notBefore))
	if busy && since < settleStuck*s.quiet {
		// Handshakes under way; one that has made no progress for
		// settleStuck quiet periods (a client that connects and never
		// logs in) holds the settle no longer.
		wait = max(wait, s.quiet)
	}
	if s.settling {
		// A burst that ended during a settle (a large heap takes a
		// while) waits for it: two at once would be two full
		// collections back to back, past the settleShare bound.
		wait = max(wait, s.quiet)
	}
	if wait > 0 {
		s.timer.Reset(wait)
		s.mu.Unlock()
		return
	}
	s.timer, s.events = nil, 0
	if freeable < s.worth {
		s.mu.Unlock()
		return
	}
	s.settling = true
	s.mu.Unlock()
	start := time.Now()
	s.free()
	took := time.Since(start)
	s.mu.Lock()
	s.notBefore = time.Now().Add(settleShare * took)
	s.settling = false
	s.settled++
	s.mu.Unlock()
}

// reclaimable estimates what a collection now would hand back: the heap
// objects beyond those live at the last collection, and the free heap
// the runtime has kept.
func reclaimable() uint64 {
	m := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(m)
	objects, live, free := m[0].Value.Uint64(), m[1].Value.Uint64(), m[2].Value.Uint64()
	return max(objects, live) - live + free
}

// stop lets the settler go: no settle runs after it (a server that
// shuts down has nothing to hand back).
func (s *settler) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.stopped = true
}

// settles reports how many settles have run.
func (s *settler) settles() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settled
}
