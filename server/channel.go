package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/sessions"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// maxEnvRequests is how many env requests one session may send (OpenSSH
// sends LANG and LC_* by default); all are refused, and past this many the
// session is closed.
const maxEnvRequests = 32

// peerSessions caps the sessions on one peer's relay connection.
const peerSessions = 64

// channel is one session channel: a shell, a command or a script.
type channel struct {
	srv   *Server
	conn  *connState
	ch    gossh.Channel
	v     *verified
	shell *sessions.ShellSession

	mu       sync.Mutex
	pty      *ptyRequest
	started  bool
	env      int
	winch    func(w, h int) // set by the interactive shell
	notifyFn func(string)   // how to show a message; set by the mode
	exited   bool

	width atomic.Int32
}

type ptyRequest struct {
	Term          string
	Columns, Rows uint32
	Width, Height uint32
	Modes         string
}

// handleSession is the "session" channel handler. It replaces gliderlabs'
// DefaultSessionHandler so that every request type is decided here:
// pty-req, env, window-change, exec and shell are handled; subsystem
// (sftp), x11-req, auth-agent-req and anything else are refused.
func (s *Server) handleSession(_ *gliderssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, ctx gliderssh.Context) {
	cs, _ := ctx.Value(connKey{}).(*connState)
	v := identityOf(conn)
	if cs == nil || v == nil {
		newChan.Reject(gossh.Prohibited, "not authenticated")
		return
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
		return
	}
	cs.sessions++
	cs.mu.Unlock()
	defer func() {
		cs.mu.Lock()
		cs.sessions--
		cs.mu.Unlock()
	}()
	cs.established(conn, v)

	ch, reqs, err := newChan.Accept()
	if err != nil {
		return
	}
	c := &channel{srv: s, conn: cs, ch: ch, v: v}
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.guard("session requests", func() { c.handleRequests(runCtx, reqs) }, func() { ch.Close() })
	// The client closed the channel, or the connection went: stop what
	// the session was running.
	cancel()
	ch.Close()
}

func (c *channel) handleRequests(ctx context.Context, reqs <-chan *gossh.Request) {
	for req := range reqs {
		ok := false
		switch req.Type {
		case "pty-req":
			ok = c.ptyReq(req.Payload)
		case "window-change":
			ok = c.windowChange(req.Payload)
		case "env":
			c.mu.Lock()
			c.env++
			tooMany := c.env > maxEnvRequests
			c.mu.Unlock()
			if tooMany {
				req.Reply(false, nil)
				c.ch.Close()
				continue
			}
			// Refused: nothing in the environment changes tsadmin.
		case "exec", "shell":
			// Reply before the command runs: a quick command would
			// otherwise close the channel before the client heard that
			// its exec was accepted, and the client would see EOF.
			var run func()
			run, ok = c.start(ctx, req)
			if req.WantReply {
				req.Reply(ok, nil)
			}
			if run != nil {
				run()
			}
			continue
		case "subsystem":
			c.srv.audit.Event("refused", slog.String("admin", c.v.id.Name), slog.String("what", "subsystem"))
		default:
			// x11-req, auth-agent-req@openssh.com, signal, break, and
			// anything unknown.
		}
		if req.WantReply {
			req.Reply(ok, nil)
		}
	}
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
	c.pty = &p
	c.width.Store(int32(clampDim(p.Columns)))
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
	winch := c.winch
	c.mu.Unlock()
	if !hasPTY {
		return false
	}
	c.width.Store(int32(cols))
	if winch != nil {
		winch(cols, rows)
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
	c.started = true
	pty := c.pty != nil
	c.mu.Unlock()

	if c.v.id.Peer != "" {
		// A peer runs relayed commands only: no shell, no PTY, and it is
		// not an admin session of its own.
		if req.Type != "exec" || pty {
			return nil, false
		}
		return func() {
			c.srv.safeGo("relayed command", func() { c.runRelayed(ctx, raw) }, func() { c.exit(shell.StatusNotFound) })
		}, true
	}

	c.shell = c.srv.shells.Add(c.v.id.Name, c.conn.source, c)
	c.conn.mu.Lock()
	c.conn.live[c] = struct{}{}
	c.conn.mu.Unlock()
	done := func() {
		c.conn.mu.Lock()
		delete(c.conn.live, c)
		c.conn.mu.Unlock()
		c.shell.Close()
	}
	return func() {
		c.srv.safeGo("session", func() {
			defer done()
			switch {
			case req.Type == "exec":
				c.runExec(ctx, raw, pty)
			case pty:
				c.runInteractive(ctx)
			default:
				c.runScript(ctx)
			}
		}, func() {
			done()
			io.WriteString(c.ch.Stderr(), "tsadmin: internal error; the session ends\r\n")
			c.exit(shell.StatusNotFound)
		})
	}, true
}

// exit sends the exit status and closes the channel, once.
func (c *channel) exit(status int) {
	c.mu.Lock()
	if c.exited {
		c.mu.Unlock()
		return
	}
	c.exited = true
	c.mu.Unlock()
	msg := struct{ Status uint32 }{uint32(status)}
	c.ch.SendRequest("exit-status", false, gossh.Marshal(&msg))
	c.ch.CloseWrite()
	c.ch.Close()
}

// Kick implements sessions.ShellControl: another admin logged this session
// off.
func (c *channel) Kick(by string) {
	msg := "tsadmin: this session was logged off"
	if by != "" {
		msg += " by " + by
	}
	c.conn.kick(msg)
}

// Notify implements sessions.ShellControl.
func (c *channel) Notify(text string) { c.notify(text) }

func (c *channel) notify(text string) {
	c.mu.Lock()
	fn := c.notifyFn
	c.mu.Unlock()
	if fn != nil {
		fn(text)
		return
	}
	io.WriteString(c.ch.Stderr(), text+"\r\n")
}
