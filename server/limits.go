package server

import (
	"net"
	"sync"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
)

// connState is what the server keeps about one TCP connection.
type connState struct {
	srv     *Server
	netConn net.Conn
	remote  net.Addr
	source  string // remote IP
	started time.Time
	grace   *time.Timer

	mu       sync.Mutex
	pending  bool // still in handshake/auth: counts against max_startups
	sshConn  *gossh.ServerConn
	v        *verified
	key      gossh.PublicKey
	sessions int                   // session channels open now
	live     map[*channel]struct{} // running shells and commands
	closed   bool
	done     chan struct{} // closed when the connection closes

	// refusals sums up the connection's refused authentication
	// attempts; they are audited as one record when it closes.
	refusals audit.Refusals
}

type connKey struct{}

// accept is gliderlabs' ConnCallback: every TCP connection comes here
// first. It enforces the caps on connections still in handshake or
// authentication, and starts the login grace timer.
//
// At a cap, the oldest pending connection is dropped to make room, rather
// than the new one refused: a flood of half-open connections then cycles
// through the slots and cannot lock out an admin, whose own handshake
// takes milliseconds.
func (s *Server) accept(ctx gliderssh.Context, conn net.Conn) net.Conn {
	cfg := s.cfg.Load()
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		host = conn.RemoteAddr().String()
	}
	c := &connState{
		srv: s, netConn: conn, remote: conn.RemoteAddr(), source: host,
		started: time.Now(), pending: true, live: make(map[*channel]struct{}),
		done: make(chan struct{}),
	}
	var evict []*connState
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		conn.Close()
		return nil
	}
	if s.perSource[host] >= cfg.Limits.MaxStartupsPerSource {
		evict = append(evict, s.oldestPendingLocked(host))
	}
	if s.startups >= cfg.Limits.MaxStartups {
		evict = append(evict, s.oldestPendingLocked(""))
	}
	s.startups++
	s.perSource[host]++
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	for _, old := range evict {
		if old != nil {
			s.log.Warn("too many connections in handshake; dropping the oldest", "addr", old.remote.String())
			old.netConn.Close()
		}
	}
	c.grace = time.AfterFunc(cfg.Limits.LoginGrace.Duration, func() {
		s.log.Info("login grace time over; closing", "addr", c.remote.String())
		conn.Close()
	})
	ctx.SetValue(connKey{}, c)
	return &trackedConn{Conn: conn, state: c}
}

func (s *Server) oldestPendingLocked(source string) *connState {
	var oldest *connState
	for c := range s.conns {
		c.mu.Lock()
		pending := c.pending
		c.mu.Unlock()
		if !pending || source != "" && c.source != source {
			continue
		}
		if oldest == nil || c.started.Before(oldest.started) {
			oldest = c
		}
	}
	return oldest
}

// established is called when the first session channel opens: the
// connection is authenticated and in use, so the login grace stops and it
// no longer counts against the startup caps.
func (c *connState) established(conn *gossh.ServerConn, v *verified) {
	c.mu.Lock()
	wasPending := c.pending
	c.pending = false
	c.sshConn, c.v, c.key = conn, v, v.key
	c.mu.Unlock()
	c.grace.Stop()
	if wasPending {
		c.srv.releaseStartup(c)
		cfg := c.srv.cfg.Load()
		go c.keepalive(conn, cfg.Limits.KeepaliveInterval.Duration, cfg.Limits.KeepaliveCountMax)
	}
}

// keepalive sends keepalive@openssh.com every interval and closes the
// connection when count of them in a row go unanswered, so that a client
// that vanished without a FIN does not hold its sessions forever.
func (c *connState) keepalive(conn *gossh.ServerConn, interval time.Duration, count int) {
	defer func() { recover() }()
	missed := 0
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		answered := make(chan error, 1)
		go func() {
			_, _, err := conn.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		select {
		case err := <-answered:
			if err != nil {
				return // the connection is gone
			}
			missed = 0
		case <-time.After(interval):
			missed++
		case <-c.done:
			return
		}
		if missed >= count {
			c.srv.log.Info("keepalives unanswered; closing", "addr", c.remote.String())
			c.netConn.Close()
			return
		}
	}
}

func (s *Server) releaseStartup(c *connState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startups--
	if s.perSource[c.source]--; s.perSource[c.source] <= 0 {
		delete(s.perSource, c.source)
	}
}

// closed is called once when the TCP connection closes.
func (c *connState) closedConn() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	wasPending := c.pending
	c.pending = false
	c.mu.Unlock()
	close(c.done)
	c.grace.Stop()
	if wasPending {
		c.srv.releaseStartup(c)
	}
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	c.srv.mu.Unlock()
	c.srv.audit.Refused(c.remote.String(), &c.refusals)
}

func (c *connState) identity() *verified {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.v
}

// kick tells every live shell and command of the connection why it ends,
// then closes the connection.
func (c *connState) kick(msg string) {
	c.mu.Lock()
	live := make([]*channel, 0, len(c.live))
	for ch := range c.live {
		live = append(live, ch)
	}
	c.mu.Unlock()
	for _, ch := range live {
		ch.notify(msg)
	}
	c.netConn.Close()
}

// trackedConn reports the connection's close to its connState.
type trackedConn struct {
	net.Conn
	state *connState
	once  sync.Once
}

func (t *trackedConn) Close() error {
	err := t.Conn.Close()
	t.once.Do(t.state.closedConn)
	return err
}
