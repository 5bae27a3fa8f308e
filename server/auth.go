package server

import (
	"errors"
	"net"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/keys"
)

// permissionsKey is where the identity travels in the Permissions of a
// connection. Only VerifiedPublicKeyCallback writes it.
type permissionsKey struct{}

type verified struct {
	id  keys.Identity
	key gossh.PublicKey
}

// offer answers "would this key be accepted?" for every key a client
// offers. It decides nothing lasting: an offered key may never sign. A
// refused key is noted in the connection's refusals, written as one
// bounded record when the connection authenticates or ends (limits.go),
// never one record per attempt: a client chooses how many attempts and
// how long a name.
func (s *Server) offer(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
	_, err := s.policy.Load().Authenticate(ctx.RemoteAddr(), key, time.Now())
	if err != nil {
		refusalsOf(ctx).Key(gossh.FingerprintSHA256(key), err.Error())
	}
	return err == nil
}

// refusalsOf returns the refusals of ctx's connection. Every connection
// has a connState (accept sets it before the handshake starts); the
// fallback only keeps a broken invariant from becoming a nil dereference.
func refusalsOf(ctx gliderssh.Context) *audit.Refusals {
	if c, ok := ctx.Value(connKey{}).(*connState); ok {
		return &c.refusals
	}
	return new(audit.Refusals)
}

// serverConfig returns a fresh x/crypto config for each connection.
func (s *Server) serverConfig(ctx gliderssh.Context) *gossh.ServerConfig {
	cfg := s.cfg.Load()
	sc := &gossh.ServerConfig{
		Config: gossh.Config{
			KeyExchanges: keys.KeyExchanges,
			Ciphers:      keys.Ciphers,
			MACs:         keys.MACs,
		},
		PublicKeyAuthAlgorithms: keys.UserSignatureAlgorithms,
		MaxAuthTries:            cfg.Limits.MaxAuthTries,
		ServerVersion:           "SSH-2.0-tsadmin",
		// Called only once the key has signed: bind the identity to this
		// key, in a Permissions object of its own, never the one shared
		// with offers.
		VerifiedPublicKeyCallback: func(meta gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
			id, err := s.policy.Load().Authenticate(meta.RemoteAddr(), key, time.Now())
			if err != nil {
				refusalsOf(ctx).Key(gossh.FingerprintSHA256(key), err.Error())
				return nil, err
			}
			// The attempts refused before this one are recorded now,
			// not when the admin's connection ends, hours later.
			s.audit.Refused(meta.RemoteAddr().String(), refusalsOf(ctx))
			s.audit.Accepted(meta.RemoteAddr().String(), meta.User(), "publickey", id.Fingerprint, id.Name, id.Method)
			v := &verified{id: *id, key: key}
			// Known to the connection from now on, so that a reload
			// re-checks it even before it opens a session.
			if c, ok := ctx.Value(connKey{}).(*connState); ok {
				c.setIdentity(v)
			}
			return &gossh.Permissions{ExtraData: map[any]any{permissionsKey{}: v}}, nil
		},
		AuthLogCallback: func(meta gossh.ConnMetadata, method string, err error) {
			// The first "none" probe is how every client starts, not an
			// attempt worth counting.
			if err != nil && method != "none" {
				refusalsOf(ctx).Attempt(meta.User(), method, err.Error())
			}
		},
	}
	// gliderlabs adds the plain host key (HostSigners) after this.
	if s.hostCert != nil {
		if c := s.hostCert(); c != nil {
			sc.AddHostKey(c)
		}
	}
	return sc
}

// stillValid reports whether the policy in force now authenticates v's
// key as the same identity with the same grants. An identity is decided at
// authentication, but a reload or an expiry-time may end it while the
// connection lives: every new session channel is checked again.
func (s *Server) stillValid(remote net.Addr, v *verified) error {
	id, err := s.policy.Load().Authenticate(remote, v.key, time.Now())
	if err != nil {
		return err
	}
	if id.Name != v.id.Name || id.Peer != v.id.Peer || id.Grants != v.id.Grants {
		return errors.New("the key now belongs to another identity or grants something else (configuration reload); log in again")
	}
	return nil
}

// identityOf returns the identity bound to a connection at authentication.
func identityOf(conn *gossh.ServerConn) *verified {
	if conn == nil || conn.Permissions == nil {
		return nil
	}
	v, _ := conn.Permissions.ExtraData[permissionsKey{}].(*verified)
	return v
}
