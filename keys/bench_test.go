package keys

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

func BenchmarkAllow(b *testing.B) {
	p := policy(b, fmt.Sprintf(`roles: { helpdesk: { logoff: ["name:tty*", "type:login", "user:student*"] } }
admins:
  - { name: helen, role: helpdesk, keys: [%q] }
`, authorized(newSigner(b))))
	id := Identity{Name: "helen"}
	s := sessions.Session{User: "student0042", Name: "pts/3", Type: "sshd"}
	b.ReportAllocs()
	for b.Loop() {
		if !p.Allow(id, s).Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkAuthenticatePeerCert is the receiving side of a relay: the
// peer's host certificate, checked at the offer, after signing and at
// each session of one connection.
func BenchmarkAuthenticatePeerCert(b *testing.B) {
	ca := newSigner(b)
	p := policy(b, "name: HUB\ntrusted_host_ca_keys: [\""+authorized(ca)+"\"]\nservers: { WF13: { address: \"127.0.0.1:1\" } }\n")
	cert := hostCert(b, ca, nil)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Authenticate(addr, cert, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateKey is an admin's plain key, checked three times
// on every connection (the offer, the signature, the session).
func BenchmarkAuthenticateKey(b *testing.B) {
	s := newSigner(b)
	p := policy(b, "roles: { v: { logoff: [] } }\nadmins:\n  - { name: erin, role: v, keys: [\""+authorized(s)+"\"] }\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Authenticate(addr, s.PublicKey(), time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
