package shell

import (
	"errors"
	"fmt"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

// Exit statuses. 0, 1, 2, 5 and 7 are DESIGN.md's; 3 and 70 are tsadmin's
// own for what the contract does not name (README, "Exit status").
const (
	StatusOK       = 0  // success
	StatusNotFound = 1  // no such session, or the name is not unique
	StatusUsage    = 2  // unknown verb or option, bad argument, unparseable line
	StatusNotEnded = 3  // the logoff was carried out but the session did not end
	StatusDenied   = 5  // access denied (or the server lacks the privilege)
	StatusServer   = 7  // the /server: named is unknown, unreachable or refused
	StatusInternal = 70 // an internal fault of tsadmin (sysexits' EX_SOFTWARE)
)

// DeniedError is a refusal: the admin lacks permission, or the audit log
// cannot be written. Exit status 5.
type DeniedError struct{ Msg string }

func (e *DeniedError) Error() string { return e.Msg }

// ServerError is a /server: that is unknown, unreachable or refused.
// Exit status 7.
type ServerError struct{ Msg string }

func (e *ServerError) Error() string { return e.Msg }

// InternalError is a fault of tsadmin itself (a recovered panic). Exit
// status 70.
type InternalError struct{ Msg string }

func (e *InternalError) Error() string { return e.Msg }

// PeerStatus is the exit status of a command that a peer ran: it is
// passed through as it came.
type PeerStatus struct {
	Server string
	Status int
}

func (e *PeerStatus) Error() string {
	return fmt.Sprintf("server %s: exit status %d", e.Server, e.Status)
}

// StatusError is the summary of a command that did several things (logoff
// /user:NAME), with the status CombineStatus chose from their outcomes.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string { return e.Msg }

// statusRank orders the statuses for CombineStatus, worst first: a fault
// of tsadmin, then a line a server could not run, then a session that
// was allowed to end and did not (it needs someone's attention), then a
// server that could not be asked, then a refusal (named on stderr, and
// expected of a narrow role). A missing session counts only when every
// part found none.
var statusRank = []int{StatusInternal, StatusUsage, StatusNotEnded, StatusServer, StatusDenied}

// CombineStatus is the status of a command made of several outcomes
// (logoff /user:NAME, and with /server:* one outcome per server): the
// worst of them by statusRank; StatusNotFound only when all of them are
// StatusNotFound; else StatusOK. A status it does not know (a peer's) is
// passed through unless a known one ranks first.
func CombineStatus(statuses ...int) int {
	for _, want := range statusRank {
		for _, s := range statuses {
			if s == want {
				return want
			}
		}
	}
	notFound := len(statuses) > 0
	for _, s := range statuses {
		switch s {
		case StatusOK:
			notFound = false
		case StatusNotFound:
		default:
			return s
		}
	}
	if notFound {
		return StatusNotFound
	}
	return StatusOK
}

// ExitStatus is the one place that turns an error into an exit status.
func ExitStatus(err error) int {
	var usage *UsageError
	var denied *DeniedError
	var server *ServerError
	var peer *PeerStatus
	var summary *StatusError
	switch {
	case err == nil:
		return StatusOK
	case errors.As(err, &summary):
		return summary.Status
	case errors.As(err, &peer):
		return peer.Status
	case errors.As(err, &usage):
		return StatusUsage
	case errors.As(err, &denied), errors.Is(err, sessions.ErrPrivilege):
		return StatusDenied
	case errors.As(err, &server):
		return StatusServer
	case errors.Is(err, sessions.ErrNotFound), errors.Is(err, sessions.ErrAmbiguous):
		return StatusNotFound
	case errors.Is(err, sessions.ErrSurvived):
		return StatusNotEnded
	default:
		return StatusInternal
	}
}

// How each mode turns the statuses of its commands into the session's.

// ScriptStatus is a script's status: that of the first command that
// failed, or 0. Every command runs, even after one failed.
func ScriptStatus(sofar, next int) int {
	if sofar != StatusOK {
		return sofar
	}
	return next
}

// InteractiveStatus is an interactive session's status: 0 when it ends
// with exit, Ctrl-D or a logoff, whatever its commands returned; 2 when
// its input itself was refused (an over-long line or escape sequence).
func InteractiveStatus(inputRefused bool) int {
	if inputRefused {
		return StatusUsage
	}
	return StatusOK
}
