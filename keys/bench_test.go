package keys

import (
	"fmt"
	"testing"

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
