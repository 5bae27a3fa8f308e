package server

import (
	"errors"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/keys"
)

// verified is the identity a connection authenticated as, and the key
// that signed for it. Only VerifiedPublicKeyCallback makes one, and it
// lives in the connection's connState.
type verified struct {
	id  keys.Identity
	key gossh.PublicKey
}

// errDenied is what a refused offer says, as gliderlabs said it: the
// refusals audit record quotes it.
var errDenied = errors.New("permission denied")

// offer answers "would this key be accepted?" for every key a client
// offers. It decides nothing lasting: an offered key may never sign. A
// refused key is noted in the connection's refusals, written as one
// bounded record when the connection authenticates or ends (limits.go),
// never one record per attempt: a client chooses how many attempts and
// how long a name.
func (c *connState) offer(meta gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	_, err := c.srv.policy.Load().Authenticate(meta.RemoteAddr(), key, time.Now())
	if err != nil {
		c.refusals.Key(gossh.FingerprintSHA256(key), err.Error())
		return nil, errDenied
	}
	return nil, nil
}

// verify is called only once the key has signed: it binds the identity to
// this key, in the connection's connState, never in anything an offer
// touched.
func (c *connState) verify(meta gossh.ConnMetadata, key gossh.PublicKey, _ *gossh.Permissions, _ string) (*gossh.Permissions, error) {
	s := c.srv
	id, err := s.policy.Load().Authenticate(meta.RemoteAddr(), key, time.Now())
	if err != nil {
		c.refusals.Key(gossh.FingerprintSHA256(key), err.Error())
		return nil, err
	}
	// The attempts refused before this one are recorded now, not when
	// the admin's connection ends, hours later.
	s.audit.Refused(meta.RemoteAddr().String(), &c.refusals)
	s.audit.Accepted(meta.RemoteAddr().String(), meta.User(), "publickey", id.Fingerprint, id.Name, id.Method)
	// Known to the connection from now on, so that a reload re-checks it
	// even before it opens a session.
	c.setIdentity(&verified{id: *id, key: key})
	return nil, nil
}

// authLog counts the refused attempts of the connection.
func (c *connState) authLog(meta gossh.ConnMetadata, method string, err error) {
	// The first "none" probe is how every client starts, not an attempt
	// worth counting.
	if err != nil && method != "none" {
		c.refusals.Attempt(meta.User(), method, err.Error())
	}
}

// serverConfig returns a fresh x/crypto config for each connection: its
// callbacks are the connection's own.
func (s *Server) serverConfig(c *connState) *gossh.ServerConfig {
	sc := &gossh.ServerConfig{
		Config: gossh.Config{
			KeyExchanges: keys.KeyExchanges,
			Ciphers:      keys.Ciphers,
			MACs:         keys.MACs,
		},
		PublicKeyAuthAlgorithms:   keys.UserSignatureAlgorithms,
		MaxAuthTries:              s.cfg.Load().Limits.MaxAuthTries,
		ServerVersion:             "SSH-2.0-tsadmin",
		PublicKeyCallback:         c.offer,
		VerifiedPublicKeyCallback: c.verify,
		AuthLogCallback:           c.authLog,
	}
	// The certificate first, then the plain key, in the order gliderlabs
	// added them.
	if s.hostCert != nil {
		if hc := s.hostCert(); hc != nil {
			sc.AddHostKey(hc)
		}
	}
	sc.AddHostKey(s.hostKey)
	return sc
}

// stillValid reports whether the policy in force now authenticates v's
// key as the same identity with the same grants. An identity is decided at
// authentication, but a reload or an expiry-time may end it while the
// connection lives: every new session channel is checked again.
func (s *Server) stillValid(c *connState, v *verified) error {
	id, err := s.policy.Load().Authenticate(c.remote, v.key, time.Now())
	if err != nil {
		return err
	}
	if id.Name != v.id.Name || id.Peer != v.id.Peer || id.Grants != v.id.Grants {
		return errors.New("the key now belongs to another identity or grants something else (configuration reload); log in again")
	}
	return nil
}
