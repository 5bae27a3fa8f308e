package server

import (
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

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
// offers. It decides nothing lasting: an offered key may never sign.
func (s *Server) offer(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
	_, err := s.policy.Load().Authenticate(ctx.RemoteAddr(), key, time.Now())
	if err != nil {
		s.audit.Auth(ctx.RemoteAddr().String(), ctx.User(), "publickey", gossh.FingerprintSHA256(key), "", false, err.Error())
	}
	return err == nil
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
				s.audit.Auth(meta.RemoteAddr().String(), meta.User(), "publickey", gossh.FingerprintSHA256(key), "", false, err.Error())
				return nil, err
			}
			s.audit.Auth(meta.RemoteAddr().String(), meta.User(), "publickey", id.Fingerprint, id.Name, true, id.Method)
			return &gossh.Permissions{ExtraData: map[any]any{permissionsKey{}: &verified{id: *id, key: key}}}, nil
		},
		AuthLogCallback: func(meta gossh.ConnMetadata, method string, err error) {
			s.auditAuth(meta, method, err)
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

// auditAuth records attempts with methods tsadmin does not offer
// (password, keyboard-interactive). Public-key attempts are recorded with
// their fingerprint by offer and VerifiedPublicKeyCallback; "none" probes
// are not worth a line each.
func (s *Server) auditAuth(meta gossh.ConnMetadata, method string, err error) {
	if method == "none" || method == "publickey" || err == nil {
		return
	}
	s.audit.Auth(meta.RemoteAddr().String(), meta.User(), method, "", "", false, err.Error())
}

// identityOf returns the identity bound to a connection at authentication.
func identityOf(conn *gossh.ServerConn) *verified {
	if conn == nil || conn.Permissions == nil {
		return nil
	}
	v, _ := conn.Permissions.ExtraData[permissionsKey{}].(*verified)
	return v
}
