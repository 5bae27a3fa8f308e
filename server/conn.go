package server

import (
	"errors"
	"fmt"
	"net"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
)

// The connection loop is ours, not gliderlabs' HandleConn: after x/crypto's
// handshake, one goroutine per connection refuses its global requests,
// decides its new channels, and serves the requests of its first session
// channel. An idle interactive session then costs five goroutines
// (x/crypto's mux, read and key exchange loops, this one, and the shell
// waiting for input) instead of seven, and a connection no gliderlabs
// context (a map of values, the hex session ID), deadline wrapper or
// second config.

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	defer l.Close()
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			// Out of file descriptors and the like: wait and go on,
			// backing off to a second, as net/http and gliderlabs do.
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go s.handleConn(conn)
	}
}

// handleConn runs the handshake of one TCP connection, then hands it to
// a fresh goroutine. Authentication (the user's signature check) grows
// this goroutine's stack to several times what serving an idle
// connection needs; a goroutine's stack only shrinks at a garbage
// collection, one halving at a time, so the connection is served from a
// new, small one, and this stack goes back to the runtime for the next
// handshake.
func (s *Server) handleConn(conn net.Conn) {
	growStack()
	c := s.accept(conn)
	if c == nil {
		return
	}
	served := false
	defer func() {
		if !served {
			c.tracked.Close()
			s.connsDone.Done()
		}
	}()
	defer s.recoverConn()
	sc, chans, reqs, err := gossh.NewServerConn(&c.tracked, s.serverConfig(c))
	if err != nil {
		// The error can quote what the client sent (its algorithm lists
		// run to the packet size): bound it.
		s.log.Debug("connection failed", "addr", c.remote.String(), "err", audit.Clip(err.Error(), 200))
		return
	}
	served = true
	go func() {
		defer s.connsDone.Done()
		defer c.tracked.Close()
		defer s.recoverConn()
		c.serve(sc, chans, reqs)
	}()
}

// recoverConn is deferred by a connection's goroutines: a bug ends that
// connection (its deferred close runs), not the server.
func (s *Server) recoverConn() {
	if r := recover(); r != nil {
		s.log.Error("panic recovered", "in", "connection", "panic", fmt.Sprint(r))
	}
}

// serve is the connection's one goroutine from authentication on. A later
// session channel, opened while the first is still open, gets a goroutine
// of its own, so that one session never waits for another's requests.
func (c *connState) serve(conn *gossh.ServerConn, chans <-chan gossh.NewChannel, reqs <-chan *gossh.Request) {
	var first *channel
	var firstReqs <-chan *gossh.Request
	defer func() {
		// The connection ended (or this goroutine panicked): what the
		// first session runs stops.
		if first != nil {
			first.end()
		}
	}()
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			// No global request is served: tcpip-forward (-R),
			// cancel-tcpip-forward, no-more-sessions and the rest are
			// refused.
			req.Reply(false, nil)
		case nc, ok := <-chans:
			if !ok {
				return // x/crypto closed the session channels first
			}
			// Only session channels: no direct-tcpip (-L, -W), no x11,
			// no auth-agent.
			if nc.ChannelType() != "session" {
				nc.Reject(gossh.UnknownChannelType, "unsupported channel type")
				continue
			}
			ch, chReqs := c.srv.openSession(c, conn, nc)
			switch {
			case ch == nil:
			case first == nil:
				first, firstReqs = ch, chReqs
			default:
				go ch.serve(chReqs)
			}
		case req, ok := <-firstReqs:
			if !ok {
				first.end()
				first, firstReqs = nil, nil
				continue
			}
			first.handle(req)
		}
	}
}
