// Package server is tsadmin's SSH transport, and only that: it accepts
// connections and serves them on golang.org/x/crypto/ssh, turns a
// verified key into an identity with its grants (keys/), enforces the
// connection limits, refuses everything but session channels with exec or
// shell, and hands an admin's session to shell/ and a peer's relayed
// command to federation/. Each concern has its own file: conn.go (the accept loop
// and the connection's goroutine), auth.go (who is this?), limits.go
// (connection caps and the login grace), channel.go (the session channel
// and its requests), settle.go (memory handed back after a burst).
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// Server is one tsadmin server.
type Server struct {
	log     *slog.Logger
	audit   *audit.Log
	hostKey gossh.Signer
	// hostCert presents the host certificate, when there is one (auth.go).
	hostCert func() gossh.Signer
	env      *shell.Env
	relayed  RelayedRunner

	cfg    atomic.Pointer[config.Config]
	policy atomic.Pointer[keys.Policy]

	mu           sync.Mutex
	listeners    []net.Listener
	conns        map[*connState]struct{}
	connsDone    sync.WaitGroup // one for each connection in conns
	startups     int            // connections not yet past their first session
	perSource    map[string]int // the same, by source address
	drops        batchedLine    // pending connections dropped at the caps
	graceCloses  batchedLine    // connections closed at the login grace
	unusedCloses batchedLine    // connections closed for having had no session for idle_timeout
	nextSlot     int            // the keepalive slot of the next connection
	closing      bool

	keepaliveOnce sync.Once // starts the one keepalive loop (limits.go)
	settle        *settler  // hands memory back after a burst of connections (settle.go)
}

// Options are what New needs beyond the config.
type Options struct {
	Config  *config.Config
	Policy  *keys.Policy
	HostKey gossh.Signer
	// HostCert returns the host certificate's signer (nil for none): it
	// is presented beside the plain host key, so that clients that trust
	// a host CA (@cert-authority) and clients that pinned the key both
	// connect. A func, so that a reload can renew it.
	HostCert func() gossh.Signer
	Env      *shell.Env // what admins' sessions run against
	Audit    *audit.Log
	Log      *slog.Logger
	Relayed  RelayedRunner // runs the commands peers send
}

// RelayedRunner runs a command that a peer relays (federation's receiving
// side). payload is the peer's exec request, as it came.
type RelayedRunner interface {
	Serve(ctx context.Context, ch shell.Channel, peer, payload string)
}

// New builds a server; Serve starts it.
func New(o Options) *Server {
	s := &Server{
		log: o.Log, audit: o.Audit, hostKey: o.HostKey, hostCert: o.HostCert,
		env: o.Env, relayed: o.Relayed,
		conns: make(map[*connState]struct{}), perSource: make(map[string]int),
	}
	s.settle = newSettler(func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.startups > 0
	})
	s.cfg.Store(o.Config)
	s.policy.Store(o.Policy)
	return s
}

// Config is the configuration in force.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

// Policy is the policy in force.
func (s *Server) Policy() *keys.Policy { return s.policy.Load() }

// Shutdown tells every connected admin that the server is stopping, closes
// their connections and stops accepting new ones.
func (s *Server) Shutdown(ctx context.Context) error {
	s.settle.stop()
	s.mu.Lock()
	s.closing = true
	listeners := s.listeners
	s.listeners = nil
	live := s.liveLocked()
	s.mu.Unlock()
	var err error
	for _, l := range listeners {
		if e := l.Close(); e != nil && err == nil {
			err = e
		}
	}
	concurrently(live, func(c *connState) { c.kick("tsadmin: the server is shutting down") })
	// The kicked connections close within hangupLinger; wait for them,
	// as long as ctx allows, then close what is left.
	done := make(chan struct{})
	go func() {
		s.connsDone.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.mu.Lock()
	live = s.liveLocked()
	s.mu.Unlock()
	for _, c := range live {
		c.netConn.Close()
	}
	return err
}

// liveLocked returns the connections of the server now.
func (s *Server) liveLocked() []*connState {
	live := make([]*connState, 0, len(s.conns))
	for c := range s.conns {
		live = append(live, c)
	}
	return live
}

// Reload puts a new config and policy in force: new connections and every
// later permission check use them, and the live sessions of admins (or
// keys) that the new config no longer trusts are ended.
func (s *Server) Reload(c *config.Config, p *keys.Policy) {
	s.cfg.Store(c)
	s.policy.Store(p)
	s.mu.Lock()
	live := s.liveLocked()
	s.mu.Unlock()
	now := time.Now()
	for _, c := range live {
		v := c.identity()
		if v == nil {
			continue
		}
		old := v.id
		id, err := p.Authenticate(c.remote, v.key, now)
		switch {
		case err != nil:
			s.audit.Event("reload.revoked", slog.String("admin", old.Name), slog.String("fingerprint", old.Fingerprint), slog.String("reason", err.Error()))
			go c.kick(fmt.Sprintf("tsadmin: access for %s was revoked by a configuration reload", old.Name))
		case id.Name != old.Name || id.Peer != old.Peer || id.Grants != old.Grants:
			// The key now belongs to another admin (or peer), or grants
			// something else: the live connection must not go on as the
			// old one, nor silently become the new one. It ends; the
			// client logs in again.
			s.audit.Event("reload.rebound", slog.String("admin", old.Name), slog.String("now", id.Name+id.Peer), slog.String("fingerprint", old.Fingerprint))
			go c.kick("tsadmin: this key now belongs to another identity (configuration reload); log in again")
		}
	}
}

// safeGo runs f in a goroutine that recovers from a panic, logs it and
// calls cleanup, so that one broken session never takes the server down.
func (s *Server) safeGo(what string, f func(), cleanup func()) {
	go s.guard(what, f, cleanup)
}

func (s *Server) guard(what string, f func(), cleanup func()) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic recovered", "in", what, "panic", fmt.Sprint(r))
			if cleanup != nil {
				cleanup()
			}
		}
	}()
	f()
}
