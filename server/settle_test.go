package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"math"
	"net"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// forcedGCs is how many collections were forced (debug.FreeOSMemory
// forces one).
func forcedGCs() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// startSettling starts a server whose bursts are 6 connection events,
// over after quiet.
func startSettling(t *testing.T, quiet time.Duration) (st *settler, addr string, oneShot func()) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv, addr, alice := startServer(t, nil, priv, "")
	st = srv.settle
	st.mu.Lock()
	st.burst, st.quiet, st.worth = 6, quiet, 0
	st.mu.Unlock()
	return st, addr, func() {
		t.Helper()
		runQuery(t, addr, alice)
	}
}

// runQuery runs query session on a connection of its own.
func runQuery(t *testing.T, addr string, key gossh.Signer) {
	t.Helper()
	c := dial(t, addr, key)
	defer c.Close()
	mustOutput(t, c, "query session")
}

// A burst of connections is followed by one settle, once it is over and
// not before; fewer connections than a burst settle nothing.
func TestABurstOfConnectionsSettlesOnceItIsOver(t *testing.T) {
	st, _, oneShot := startSettling(t, 2*time.Second)
	forced := forcedGCs()
	// Six events and more (a handshake and a close each), each well
	// within the quiet two seconds of the one before.
	for range 5 {
		oneShot()
	}
	if n := st.settles(); n != 0 {
		t.Fatalf("%d settles while the connections went on", n)
	}
	within(t, 8*time.Second, "no settle after the burst", func() bool { return st.settles() == 1 })
	if forcedGCs() == forced {
		t.Error("the settle forced no collection")
	}
	oneShot()
	time.Sleep(3 * time.Second)
	if n := st.settles(); n != 1 {
		t.Errorf("%d settles after a burst and one more connection, want 1", n)
	}
}

// A connection still in its handshake keeps a burst from being over,
// until it ends.
func TestAHandshakeUnderWayDelaysTheSettle(t *testing.T) {
	st, addr, oneShot := startSettling(t, 200*time.Millisecond)
	pending, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pending.Close()
	for range 3 {
		oneShot()
	}
	// Past the quiet period, short of settleStuck of them.
	time.Sleep(5 * 200 * time.Millisecond)
	if n := st.settles(); n != 0 {
		t.Fatalf("%d settles with a handshake under way", n)
	}
	pending.Close()
	within(t, 5*time.Second, "no settle once the handshake ended", func() bool { return st.settles() == 1 })
}

// A burst that ends while a settle still runs (a large heap takes a
// while) does not start a second one beside it: the next waits for the
// first to end, and then for its settleShare.
func TestSettlesDoNotOverlap(t *testing.T) {
	st := newSettler(func() bool { return false })
	st.burst, st.quiet, st.worth = 1, 10*time.Millisecond, 0
	var running, most atomic.Int32
	st.free = func() {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(300 * time.Millisecond)
		running.Add(-1)
	}
	defer func() {
		st.mu.Lock()
		if st.timer != nil {
			st.timer.Stop()
		}
		st.mu.Unlock()
	}()
	st.note()
	within(t, 5*time.Second, "the first settle did not start", func() bool { return running.Load() == 1 })
	st.note() // a burst while it runs
	time.Sleep(500 * time.Millisecond)
	if n := most.Load(); n != 1 {
		t.Errorf("%d settles ran at once", n)
	}
	if n := st.settles(); n != 1 {
		t.Errorf("%d settles within 0.5 s of a burst, want 1 (the next waits %d times the first)", n, settleShare)
	}
}

// A server that shuts down settles no more: a burst it saw is not
// followed by a collection.
func TestNoSettleAfterShutdown(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv, addr, alice := startServer(t, nil, priv, "")
	st := srv.settle
	st.mu.Lock()
	st.burst, st.quiet, st.worth = 6, 300*time.Millisecond, 0
	st.mu.Unlock()
	for range 3 {
		runQuery(t, addr, alice)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	time.Sleep(3 * 300 * time.Millisecond)
	if n := st.settles(); n != 0 {
		t.Errorf("%d settles after the shutdown", n)
	}
}

// A burst whose garbage is less than settleWorth is not settled: a full
// collection and the page faults after it would cost more than the
// memory handed back.
func TestLittleToHandBackIsNotSettled(t *testing.T) {
	st, _, oneShot := startSettling(t, 100*time.Millisecond)
	st.mu.Lock()
	st.worth = math.MaxUint64
	st.mu.Unlock()
	for range 3 {
		oneShot()
	}
	time.Sleep(5 * 100 * time.Millisecond)
	st.mu.Lock()
	n, armed := st.settled, st.timer != nil
	st.mu.Unlock()
	if n != 0 || armed {
		t.Errorf("%d settles (timer armed: %v) with nothing worth handing back", n, armed)
	}
}

// reclaimable counts the garbage a collection would free (a large live
// heap lets it pile up: the next collection is due at twice the live
// heap), and not what a collection has handed back.
func TestReclaimableCountsGarbage(t *testing.T) {
	live := make([][]byte, 96)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	debug.FreeOSMemory()
	before := reclaimable()
	for range 48 {
		sink = make([]byte, 1<<20)
	}
	sink = nil
	if got := reclaimable(); got < before+40<<20 {
		t.Errorf("reclaimable %d MiB after 48 MiB of garbage beside 96 MiB live, %d MiB before", got>>20, before>>20)
	}
	debug.FreeOSMemory()
	if got := reclaimable(); got >= 40<<20 {
		t.Errorf("reclaimable %d MiB after the garbage was collected and handed back", got>>20)
	}
	runtime.KeepAlive(live)
}

var sink []byte

// A settle skipped for having too little to hand back leaves the settler
// ready for the next burst: no timer armed, no events counted, so a later
// burst worth a collection still gets one.
func TestSkippedSettleLeavesTheNextBurstSettled(t *testing.T) {
	st := newSettler(func() bool { return false })
	st.burst, st.quiet, st.worth = 2, 10*time.Millisecond, math.MaxUint64
	var freed atomic.Int32
	st.free = func() { freed.Add(1) }
	defer st.stop()
	st.note()
	st.note()
	within(t, 5*time.Second, "the burst was not looked at", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.timer == nil && st.events == 0
	})
	if n := freed.Load(); n != 0 {
		t.Fatalf("%d settles with nothing worth handing back", n)
	}
	st.mu.Lock()
	st.worth = 0
	st.mu.Unlock()
	st.note()
	st.note()
	within(t, 5*time.Second, "the next burst was not settled", func() bool { return st.settles() == 1 })
}
