package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/shell"
)

// maxEnvRequests is how many env requests one session may send (OpenSSH
// sends LANG and LC_* by default); all are refused, and past this many the
// session is closed.
const maxEnvRequests = 32

// peerSessions caps the sessions on one peer's relay connection.
const peerSessions = 64

// channel is one session channel: it answers the channel's requests and
// hands exec and shell to shell/ (an admin) or federation/ (a peer). It
// implements shell.Channel.
type channel struct {
	gossh.Channel
	srv  *Server
	conn *connState
	v    *verified

	mu      sync.Mutex
	pty     *ptyRequest
	started bool
	// running is set while the channel counts as running on its
	// connection: from its start to its exit status (Exit), or to its end
	// if it ends without one.
	running bool
	env     int
	// subsystems counts subsystem requests: one is refused and audited,
	// another closes the channel.
	subsystems int
	session    *shell.Session // the admin's session, once started

	exitOnce sync.Once
	// wmu is held by every write and by the EOF: x/crypto reads its EOF
	// flag at the start of a write without a lock and sets it in
	// CloseWrite, so a notice written while the session sends its EOF
	// (a logoff or a shutdown as the session ends) was a data race.
	wmu sync.Mutex

	// ctx ends what the session runs when the channel ends; ended is
	// touched only by the goroutine that serves the channel's requests.
	ctx    context.Context
	cancel context.CancelFunc
	ended  bool
}

type ptyRequest struct {
	Term          string
	Columns, Rows uint32
	Width, Height uint32
	Modes         string
}

// openSession decides a new session channel: it returns the accepted
// channel and its requests, or nil. Every request type is decided in
// handle: pty-req, env, window-change, exec and shell are handled;
// subsystem (sftp), x11-req, auth-agent-req and anything else are refused.
func (s *Server) openSession(cs *connState, conn *gossh.ServerConn, newChan gossh.NewChannel) (*channel, <-chan *gossh.Request) {
	v := cs.identity()
	if v == nil {
		newChan.Reject(gossh.Prohibited, "not authenticated")
		return nil, nil
	}
	if err := s.stillValid(cs, v); err != nil {
		s.audit.Event("session.refused", slog.String("admin", v.id.Name+v.id.Peer),
			slog.String("fingerprint", v.id.Fingerprint), slog.String("reason", err.Error()))
		newChan.Reject(gossh.Prohibited, err.Error())
		go cs.hangup()
		return nil, nil
	}
	cfg := s.cfg.Load()
	limit := cfg.Limits.MaxSessionsPerConnection
	if v.id.Peer != "" {
		// A peer's pooled connection carries the relayed commands of
		// all its admins.
		limit = peerSessions
	}
	cs.mu.Lock()
	if cs.sessions >= limit {
		cs.mu.Unlock()
		newChan.Reject(gossh.ResourceShortage, fmt.Sprintf("at most %d sessions per connection", limit))
		return nil, nil
	}
	cs.openedSession()
	cs.mu.Unlock()
	cs.established(conn)

	ch, reqs, err := newChan.Accept()
	if err != nil {
		cs.endSession(false)
		return nil, nil
	}
	c := &channel{Channel: ch, srv: s, conn: cs, v: v}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, reqs
}

// serve answers the requests of a session channel that the connection's
// goroutine does not serve (a second one, opened while the first is open).
func (c *channel) serve(reqs <-chan *gossh.Request) {
	defer c.end()
	for req := range reqs {
		c.handle(req)
	}
}

// end is called once the client closed the channel or the connection
// went: what the session was running stops, and the channel no longer
// counts against the connection's sessions. Only the goroutine that
// serves the channel's requests calls it.
func (c *channel) end() {
	if c.ended {
		return
	}
	c.ended = true
	c.cancel()
	c.Close()
	c.conn.endSession(c.stopRunning())
}

// stopRunning reports whether the channel counted as running, and stops
// it counting.
func (c *channel) stopRunning() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.running
	c.running = false
	return was
}

// handle answers one request of the session channel. A panic ends this
// session only; the channel's later requests are refused.
func (c *channel) handle(req *gossh.Request) {
	if c.ended {
		req.Reply(false, nil)
		return
	}
	defer func() {
		if r := recover(); r != nil {
			c.srv.log.Error("panic recovered", "in", "session requests", "panic", fmt.Sprint(r))
			c.end()
		}
	}()
	ok := false
	switch req.Type {
	case "pty-req":
		ok = c.ptyReq(req.Payload)
	case "window-change":
		ok = c.windowChange(req.Payload)
	case "env", "subsystem":
		// Refused: nothing in the environment changes tsadmin, and no
		// subsystem is served. A client chooses how many it sends: past
		// the cap of its kind the channel is closed.
		if c.flooding(req.Type) {
			req.Reply(false, nil)
			c.Close()
			return
		}
		if req.Type == "subsystem" {
			c.srv.audit.Event("refused", slog.String("admin", c.v.id.Name), slog.String("what", "subsystem"))
		}
	case "exec", "shell":
		// Reply before the command runs: a quick command would
		// otherwise close the channel before the client heard that its
		// exec was accepted, and the client would see EOF.
		var run func()
		run, ok = c.start(c.ctx, req)
		req.Reply(ok, nil)
		if run != nil {
			run()
		}
		return
	default:
		// x11-req, auth-agent-req@openssh.com, signal, break, and
		// anything unknown.
	}
	req.Reply(ok, nil)
}

// flooding counts a refused env or subsystem request and reports whether
// the session is past its cap: maxEnvRequests env requests (OpenSSH sends
// LANG and LC_*), and one subsystem request, the one that is audited (an
// audit record each would let a client fill the disk).
func (c *channel) flooding(kind string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kind == "subsystem" {
		c.subsystems++
		return c.subsystems > 1
	}
	c.env++
	return c.env > maxEnvRequests
}

func (c *channel) ptyReq(payload []byte) bool {
	var p ptyRequest
	if err := gossh.Unmarshal(payload, &p); err != nil {
		return false
	}
	if !c.v.id.Grants.PTY {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.pty != nil || len(p.Term) > 64 {
		return false
	}
	// Not the terminal modes (hundreds of bytes from OpenSSH): tsadmin
	// uses none, and an interactive session would hold them to its end.
	c.pty = &ptyRequest{Term: p.Term, Columns: p.Columns, Rows: p.Rows}
	return true
}

func (c *channel) windowChange(payload []byte) bool {
	if len(payload) < 8 {
		return false
	}
	cols := clampDim(binary.BigEndian.Uint32(payload))
	rows := clampDim(binary.BigEndian.Uint32(payload[4:]))
	c.mu.Lock()
	hasPTY := c.pty != nil
	session := c.session
	if hasPTY && session == nil {
		// Before the shell starts: it starts with this size.
		c.pty.Columns, c.pty.Rows = uint32(cols), uint32(rows)
	}
	c.mu.Unlock()
	if !hasPTY {
		return false
	}
	if session != nil {
		session.Resize(cols, rows)
	}
	return true
}

// clampDim keeps a terminal dimension in a sane range.
func clampDim(n uint32) int {
	switch {
	case n == 0:
		return 0
	case n < 20:
		return 20
	case n > 1000:
		return 1000
	}
	return int(n)
}

// start prepares the session's command, script or shell, once, and
// returns what starts it.
func (c *channel) start(ctx context.Context, req *gossh.Request) (func(), bool) {
	var raw string
	if req.Type == "exec" {
		var p struct{ Command string }
		if err := gossh.Unmarshal(req.Payload, &p); err != nil {
			return nil, false
		}
		raw = p.Command
	}
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return nil, false
	}
	c.started, c.running = true, true
	pty := c.pty
	c.mu.Unlock()
	c.conn.startedSession()

	if c.v.id.Peer != "" {
		// A peer runs relayed commands only: no shell, no PTY, and it is
		// not an admin session of its own.
		if req.Type != "exec" || pty != nil {
			return nil, false
		}
		return func() {
			c.srv.safeGo("relayed command", func() { c.srv.relayed.Serve(ctx, c, c.v.id.Peer, raw) },
				func() { c.Exit(shell.StatusInternal) })
		}, true
	}

	var term *shell.PTY
	if pty != nil {
		term = &shell.PTY{Term: pty.Term, Width: clampDim(pty.Columns), Height: clampDim(pty.Rows)}
	}
	session := c.srv.env.NewSession(c, c.v.id, c.conn.source, term)
	c.mu.Lock()
	c.session = session
	c.mu.Unlock()
	c.conn.addLive(session)
	exec := req.Type == "exec"
	return func() {
		// shell.Session.Run recovers from its own panics; this guard is
		// for the transport's part.
		c.srv.safeGo("session", func() {
			if exec {
				growStack() // one command and gone; a shell idles
			}
			defer c.conn.removeLive(session)
			session.Run(ctx, exec, raw)
		}, func() { c.Exit(shell.StatusInternal) })
	}, true
}

// Write implements io.Writer, ordered with the EOF (wmu).
func (c *channel) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Channel.Write(p)
}

// Stderr implements shell.Channel (gossh.Channel's returns a ReadWriter).
func (c *channel) Stderr() io.Writer { return stderrWriter{c} }

type stderrWriter struct{ c *channel }

func (w stderrWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	return w.c.Channel.Stderr().Write(p)
}

// eofWait bounds how long Exit waits for a write under way before it
// sends EOF: a write to a client that stopped reading waits until the
// connection is hung up, and the channel then closes without its EOF
// (the close says as much).
const eofWait = 250 * time.Millisecond

// Exit implements shell.Channel: it sends the exit status and closes the
// channel, once. The channel then no longer keeps its connection in use:
// a client that never answers the close would otherwise hold, with
// nothing listed, a connection no admin can see or end (the unused
// timer closes it after idle_timeout).
func (c *channel) Exit(status int) {
	c.exitOnce.Do(func() {
		defer func() {
			if c.stopRunning() {
				c.conn.stoppedRunning()
			}
		}()
		msg := struct{ Status uint32 }{uint32(status)}
		c.SendRequest("exit-status", false, gossh.Marshal(&msg))
		if c.lockWrites(eofWait) {
			c.CloseWrite()
			c.wmu.Unlock()
		}
		c.Close()
	})
}

// lockWrites takes wmu if it can within d; a write stuck on a stalled
// client must not hold the session's end.
func (c *channel) lockWrites(d time.Duration) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if c.wmu.TryLock() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// Hangup implements shell.Channel: it closes the SSH connection.
func (c *channel) Hangup() { c.conn.hangup() }
