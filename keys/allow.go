package keys

import (
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// selector is one compiled role entry, with its rule text for the audit.
type selector struct {
	config.Selector
	rule string // "role NAME: SELECTOR"; set by NewPolicy
}

func (sel selector) match(s sessions.Session) bool {
	return sel.Selector.Match(s.User, s.Name, s.Type, s.Source)
}

// Decision is the answer of Allow, with the rule that made it, for the
// audit log.
type Decision struct {
	Allowed bool
	Rule    string
}

// Allow is the one place that decides whether an identity may log off a
// session. It decides against the session as the registry listed it (its
// real owner, name and type), never against the text the admin typed.
// Deny by default.
func (p *Policy) Allow(id Identity, s sessions.Session) Decision {
	role, ok := p.Admins[id.Name]
	if !ok {
		return Decision{Rule: "identity no longer configured"}
	}
	// Own sessions: tsadmin sessions of the same identity. A host session
	// of a Unix user who happens to share the admin's name is not "own":
	// the key is the identity, not the name.
	if s.Admin != "" && s.Admin == id.Name {
		return Decision{Allowed: true, Rule: "own session"}
	}
	for _, sel := range p.roles[role] {
		if sel.match(s) {
			return Decision{Allowed: true, Rule: sel.rule}
		}
	}
	if r, ok := p.noMatch[role]; ok {
		return Decision{Rule: r}
	}
	return Decision{Rule: "role " + role + ": no selector matches"}
}
