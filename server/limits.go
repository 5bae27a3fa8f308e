package server

import (
	"net"
	"slices"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// connState is what the server keeps about one TCP connection.
type connState struct {
	srv     *Server
	netConn net.Conn
	remote  net.Addr
	source  string // remote IP
	started time.Time
	// tracked is netConn as x/crypto sees it: its Close is how the
	// server learns that the connection ended.
	tracked trackedConn

	mu       sync.Mutex
	grace    *time.Timer // the login grace; nil once stopped
	pending  bool        // still in handshake/auth: counts against max_startups
	sshConn  *gossh.ServerConn
	v        *verified
	sessions int              // session channels open now
	running  int              // of those, the ones that started a command or shell
	live     []*shell.Session // running admin sessions: a handful (max_sessions_per_connection)
	probing  bool             // a keepalive is out and unanswered
	unused   *time.Timer      // closes the connection when it has run no session for idle_timeout
	closed   bool             // the TCP connection has closed
	slot     int              // the keepalive tick that probes it (keepalives)
	missed   int              // keepalive intervals in a row without an answer

	// refusals sums up the connection's refused authentication
	// attempts; they are audited as one record when it closes.
	refusals audit.Refusals
}

// accept is where every TCP connection comes first. It enforces the caps on connections still in handshake or
// authentication, and starts the login grace timer.
//
// At a cap, a pending connection is dropped to make room, rather than the
// new one refused: a flood of half-open connections then cycles through
// the slots and cannot lock out an admin. Which one is dropped keeps the
// sources fair: at the per-source cap, the oldest of that source; at the
// global cap, the oldest of the source that holds the most slots. A flood
// from one address or from many then cycles through its own slots, and a
// lone admin from another address, however slow their handshake, is not
// pushed out by it (the oldest connection overall would be theirs).
// It returns nil, having closed conn, when the server is shutting down.
func (s *Server) accept(conn net.Conn) *connState {
	cfg := s.cfg.Load()
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		host = conn.RemoteAddr().String()
	}
	c := &connState{
		srv: s, netConn: conn, remote: conn.RemoteAddr(), source: host,
		started: time.Now(), pending: true,
	}
	c.tracked = trackedConn{Conn: conn, state: c}
	var victim *connState
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		conn.Close()
		return nil
	}
	switch {
	case s.perSource[host] >= cfg.Limits.MaxStartupsPerSource:
		victim = s.dropOldestPendingLocked(host)
	case s.startups >= cfg.Limits.MaxStartups:
		victim = s.dropOldestPendingLocked(s.busiestSourceLocked())
	}
	s.startups++
	s.perSource[host]++
	c.slot = s.nextSlot
	s.nextSlot = (s.nextSlot + 1) % keepaliveSlots
	s.conns[c] = struct{}{}
	s.connsDone.Add(1) // under s.mu with closing false: before Shutdown's Wait
	report := s.drops.count(victim != nil, time.Now())
	s.mu.Unlock()
	if victim != nil {
		victim.netConn.Close()
	}
	if report != nil {
		// One line per interval, not one per drop: a flood must not
		// fill the disk through the server's log either.
		s.log.Warn("too many connections in handshake; dropped the oldest pending connections of the busiest sources",
			"dropped", report.n, "since", report.since.Format(time.RFC3339), "last_addr", victim.remote.String())
	}
	grace := time.AfterFunc(cfg.Limits.LoginGrace.Duration, func() {
		conn.Close()
		s.closedFor(&s.graceCloses, "login grace time over; closed connections that had not authenticated", c)
	})
	c.mu.Lock()
	c.grace = grace
	c.mu.Unlock()
	return c
}

// busiestSourceLocked returns the source holding the most pending slots.
// Ties are broken by the map's random order, which is fair among equals.
func (s *Server) busiestSourceLocked() string {
	busiest, most := "", 0
	for src, n := range s.perSource {
		if n > most {
			busiest, most = src, n
		}
	}
	return busiest
}

// dropOldestPendingLocked picks the oldest pending connection of source
// and releases its slot at once, so that the counts are right before the
// next connection arrives (its goroutine may take a while to see the
// close); the caller closes it. It returns nil if source has none.
func (s *Server) dropOldestPendingLocked(source string) *connState {
	var oldest *connState
	for c := range s.conns {
		if c.source != source {
			continue
		}
		c.mu.Lock()
		pending := c.pending
		c.mu.Unlock()
		if pending && (oldest == nil || c.started.Before(oldest.started)) {
			oldest = c
		}
	}
	if oldest == nil {
		return nil
	}
	oldest.mu.Lock()
	wasPending := oldest.pending
	oldest.pending = false
	oldest.mu.Unlock()
	if !wasPending { // it authenticated meanwhile: leave it be
		return nil
	}
	s.releaseStartupLocked(oldest)
	return oldest
}

// batchReport is what one batched log line says: how many since when.
type batchReport struct {
	n     int
	since time.Time
}

// batchedLine counts events (dropped connections, login grace timeouts)
// between the log lines that report them, at most one line per
// batchInterval, so that what a flood causes costs the log a line per
// interval, not a line per connection.
type batchedLine struct {
	n        int
	since    time.Time
	reported time.Time
}

const batchInterval = 10 * time.Second

// count notes an event (if happened) and returns a report when one is due.
func (d *batchedLine) count(happened bool, now time.Time) *batchReport {
	if !happened {
		return nil
	}
	if d.n == 0 {
		d.since = now
	}
	d.n++
	if now.Sub(d.reported) < batchInterval {
		return nil
	}
	r := &batchReport{n: d.n, since: d.since}
	d.n, d.reported = 0, now
	return r
}

// established is called when the first session channel opens: the
// connection is authenticated and in use, so the login grace stops and it
// no longer counts against the startup caps.
func (c *connState) established(conn *gossh.ServerConn) {
	c.mu.Lock()
	wasPending := c.pending
	c.pending = false
	c.sshConn = conn
	c.stopGraceLocked()
	c.mu.Unlock()
	if wasPending {
		c.srv.releaseStartup(c)
		c.srv.keepaliveOnce.Do(func() { go c.srv.keepalives() })
	}
}

// keepalives sends keepalive@openssh.com to every established connection
// each keepalive_interval, and closes one when keepalive_count_max
// intervals in a row go unanswered, so that a client that vanished
// without a FIN does not hold its sessions forever. One loop serves all
// connections: an idle connection then costs no goroutine or timer of its
// own between probes. A reload's interval and count apply from the next
// tick; the loop ends at shutdown.
//
// The interval is cut in keepaliveSlots ticks, and each connection is
// probed at the tick of its own slot: a probe waits for its answer on a
// goroutine, and with 10,000 connections probed at once those goroutines
// and their stacks were the server's largest allocation, kept by the
// runtime long after they had gone.
func (s *Server) keepalives() {
	defer func() { recover() }() // a bug here must not take the server down
	interval := s.cfg.Load().Limits.KeepaliveInterval.Duration
	if interval <= 0 {
		return // no keepalives, as before (time.NewTicker refuses 0)
	}
	t := time.NewTicker(interval / keepaliveSlots)
	defer t.Stop()
	var conns []*connState
	for tick := 0; ; tick = (tick + 1) % keepaliveSlots {
		<-t.C
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return
		}
		conns = conns[:0]
		for c := range s.conns {
			if c.slot == tick {
				conns = append(conns, c)
			}
		}
		s.mu.Unlock()
		limits := s.cfg.Load().Limits
		for _, c := range conns {
			c.probe(limits.KeepaliveCountMax)
		}
		clear(conns) // hold no closed connection until the next tick
		if d := limits.KeepaliveInterval.Duration; d > 0 && d != interval {
			interval = d
			t.Reset(d / keepaliveSlots)
		}
	}
}

// keepaliveSlots is how many ticks a keepalive interval is cut into.
const keepaliveSlots = 10

// probe is one keepalive tick for c: it counts the interval as missed if
// the last keepalive is still unanswered (and closes the connection at
// count of them), else sends a new one. A connection still in
// authentication is not probed: the login grace bounds it.
func (c *connState) probe(count int) {
	c.mu.Lock()
	conn := c.sshConn
	if conn == nil || c.pending {
		c.mu.Unlock()
		return
	}
	if c.probing {
		c.missed++
		missed := c.missed
		c.mu.Unlock()
		if missed >= count {
			c.srv.log.Info("keepalives unanswered; closing", "addr", c.remote.String())
			c.netConn.Close()
		}
		return
	}
	c.probing = true
	c.mu.Unlock()
	go func() {
		defer func() { recover() }()
		// It returns when the client answers or the connection closes.
		_, _, err := conn.SendRequest("keepalive@openssh.com", true, nil)
		c.mu.Lock()
		c.probing = false
		if err == nil {
			c.missed = 0
		}
		c.mu.Unlock()
	}()
}

func (s *Server) releaseStartup(c *connState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseStartupLocked(c)
}

func (s *Server) releaseStartupLocked(c *connState) {
	s.settle.note()
	s.startups--
	if s.perSource[c.source]--; s.perSource[c.source] <= 0 {
		delete(s.perSource, c.source)
	}
}

// closedConn is called once (trackedConn.Close) when the TCP connection
// closes.
func (c *connState) closedConn() {
	c.mu.Lock()
	wasPending := c.pending
	c.pending = false
	c.closed = true
	c.stopGraceLocked()
	c.stopUnusedLocked()
	c.mu.Unlock()
	if wasPending {
		c.srv.releaseStartup(c)
	}
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	c.srv.mu.Unlock()
	if !wasPending { // a pending one was noted by releaseStartup
		c.srv.settle.note()
	}
	c.srv.audit.Refused(c.remote.String(), &c.refusals)
}

// stopGraceLocked stops the login grace and lets its timer go: a held
// connection keeps no timer.
func (c *connState) stopGraceLocked() { stopTimer(&c.grace) }

// stopTimer stops *t, if any, and lets it go.
func stopTimer(t **time.Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

// endSession is called when a session channel that counted against the
// connection's sessions ends; running says whether it still counted as
// running (it started and sent no exit status).
func (c *connState) endSession(running bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sessions--
	if running {
		c.running--
	}
	c.armUnusedLocked()
}

// stoppedRunning is called when a session channel that was running sent
// its exit status: it stays open until the client answers the close, but
// runs nothing.
func (c *connState) stoppedRunning() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running--
	c.armUnusedLocked()
}

// openedSession counts a session channel just opened. A channel that
// runs nothing is not a session anyone can see: the connection's unused
// timer keeps running until a command or shell starts (startedSession).
func (c *connState) openedSession() {
	c.sessions++
	c.armUnusedLocked()
}

// startedSession is called when a session channel starts its command or
// shell: the connection is in use.
func (c *connState) startedSession() {
	c.mu.Lock()
	c.running++
	c.stopUnusedLocked()
	c.mu.Unlock()
}

// armUnusedLocked arms the unused-connection timer if nothing runs on the
// connection. A connection that runs no session is closed after
// idle_timeout, as OpenSSH's UnusedConnectionTimeout does: it is not
// listed, so no admin could see or end it, and a client could hold
// thousands. Session channels that never start a command count as none
// (else one such channel would hold the connection forever). A peer's
// pooled connection waits between relayed commands: it stays.
// A session usually ends after its connection has closed (the client
// closes first): a timer armed then would never be stopped, and would
// hold the connection for idle_timeout.
func (c *connState) armUnusedLocked() {
	idle := c.srv.cfg.Load().Limits.IdleTimeout.Duration
	if c.running == 0 && !c.closed && idle > 0 && c.v != nil && c.v.id.Peer == "" && c.unused == nil {
		var t *time.Timer
		t = time.AfterFunc(idle, func() { c.closeUnused(&t) })
		c.unused = t
	}
}

// stopUnusedLocked stops the unused-connection timer: a session started,
// or the connection closed.
func (c *connState) stopUnusedLocked() { stopTimer(&c.unused) }

// closeUnused closes the connection if it still runs no session. *t is
// the timer that fired, read under the lock (its arming held it): a timer
// that fired as a session started was stopped too late, and may since
// have been replaced (the session sent its exit status); stale, it does
// nothing, and leaves the new one in place.
func (c *connState) closeUnused(t **time.Timer) {
	c.mu.Lock()
	if c.unused != *t {
		c.mu.Unlock()
		return
	}
	unused := c.running == 0
	c.unused = nil
	c.mu.Unlock()
	if !unused {
		return
	}
	c.netConn.Close()
	c.srv.closedFor(&c.srv.unusedCloses, "closed connections left without a session for idle_timeout", c)
}

// closedFor counts a connection closed for one reason (line) and logs
// msg when a line is due: one line per interval, so that a flood cannot
// fill the disk through the server's log.
func (s *Server) closedFor(line *batchedLine, msg string, c *connState) {
	s.mu.Lock()
	report := line.count(true, time.Now())
	s.mu.Unlock()
	if report != nil {
		s.log.Info(msg, "closed", report.n, "since", report.since.Format(time.RFC3339), "last_addr", c.remote.String())
	}
}

// setIdentity binds the identity that VerifiedPublicKeyCallback decided.
// It is the only writer of c.v: nothing an offer says lasts.
func (c *connState) setIdentity(v *verified) {
	c.mu.Lock()
	c.v = v
	c.mu.Unlock()
}

func (c *connState) identity() *verified {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.v
}

func (c *connState) addLive(s *shell.Session) {
	c.mu.Lock()
	c.live = append(c.live, s)
	c.mu.Unlock()
}

func (c *connState) removeLive(s *shell.Session) {
	c.mu.Lock()
	if i := slices.Index(c.live, s); i >= 0 {
		// Cleared, not only cut: the backing array must not keep the
		// ended session.
		c.live = slices.Delete(c.live, i, i+1)
	}
	c.mu.Unlock()
}

// kick tells every live session of the connection why it ends, then
// closes the connection. The notices are best effort and bounded
// (shell.Session.Notify): a client that stopped reading cannot hold a
// logoff, a reload or a shutdown.
func (c *connState) kick(msg string) {
	c.mu.Lock()
	live := slices.Clone(c.live)
	c.mu.Unlock()
	concurrently(live, func(s *shell.Session) { s.Notify(msg) })
	c.hangup()
}

// hangupLinger is how long a hung-up connection waits for the client to
// close its end before it is closed outright.
const hangupLinger = time.Second

// hangup closes the connection so that what was sent last (an exit
// status, a notice) still reaches the client: closing a socket that has
// unread input sends a reset, and the client then loses what it had not
// read yet. So the server's side is shut first (the client reads to the
// end, then closes), and the connection is closed for good when the
// client has gone, or after hangupLinger whatever the client does.
func (c *connState) hangup() {
	if cw, ok := c.netConn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		time.AfterFunc(hangupLinger, func() { c.netConn.Close() })
		return
	}
	c.netConn.Close()
}

// concurrently calls f for each item at once and waits for them all: the
// bounded waits of many stalled clients then add up to one, not to a sum.
func concurrently[T any](items []T, f func(T)) {
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(it)
		}()
	}
	wg.Wait()
}

// trackedConn reports the connection's close to its connState, and
// reads ahead while the client's version line is read.
type trackedConn struct {
	net.Conn
	state *connState
	once  sync.Once
	// ahead holds what was read ahead of a one-byte read and not yet
	// handed out. x/crypto reads the client's version line a byte at a
	// time, a system call each, from the connection itself (it must not
	// read past the line); the client sends its key exchange init right
	// behind it, so one read usually brings both, and what follows the
	// line is handed to x/crypto's own buffered reader next. Only reads
	// of a few bytes read ahead, and only the handshake makes them: the
	// buffer is dropped once empty, and an idle connection holds none.
	ahead    []byte
	aheadBuf *[readAheadSize]byte // what ahead is a slice of, for readAheadPool
}

// readAheadSize bounds a read ahead: a version line (255 bytes at most)
// and a key exchange init, which OpenSSH sends in about 1.5 KB.
const readAheadSize = 2048

func (t *trackedConn) Read(p []byte) (int, error) {
	if len(t.ahead) == 0 && len(p) < 16 {
		buf := readAheadPool.Get().(*[readAheadSize]byte)
		n, err := t.Conn.Read(buf[:])
		if n == 0 {
			readAheadPool.Put(buf)
			return 0, err
		}
		t.aheadBuf, t.ahead = buf, buf[:n]
	}
	if len(t.ahead) > 0 {
		n := copy(p, t.ahead)
		if t.ahead = t.ahead[n:]; len(t.ahead) == 0 {
			// Reads come one at a time (x/crypto's version exchange,
			// then its read loop), so the drained buffer is no one's.
			readAheadPool.Put(t.aheadBuf)
			t.aheadBuf, t.ahead = nil, nil
		}
		return n, nil
	}
	return t.Conn.Read(p)
}

// readAheadPool keeps the read-ahead buffers between handshakes: one is
// needed only for the few reads of a version line.
var readAheadPool = sync.Pool{New: func() any { return new([readAheadSize]byte) }}

func (t *trackedConn) Close() error {
	err := t.Conn.Close()
	t.once.Do(t.state.closedConn)
	return err
}
