// Package sessions is the model of what tsadmin lists and ends: the Session,
// the Source interface that each kind of session (tsadmin's own SSH shells,
// the host's utmp logins, systemd-logind) implements, and the Registry that
// merges the sources and hands out small stable IDs that are never reused
// while the server runs, so that `query` then `logoff N` cannot hit a
// different session.
package sessions

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// State is the classic Terminal Server session state.
type State string

// The states a session with a user can be in. There is no Idle: on Windows
// Idle is a station with nobody on it, and scripts read a user's session
// as Active or Disc; how long it has gone without input is IdleTime.
const (
	Active State = "Active"
	Disc   State = "Disc"
)

// Session is one row of `query session`.
type Session struct {
	ID        int           // registry ID, stable while the session lives
	Name      string        // ssh#4, pts/3, tty1, or a logind session name
	User      string        // admin identity for tsadmin sessions; host user otherwise
	State     State         // Active or Disc
	Type      string        // tsadmin, sshd, login, ... (where it comes from)
	Device    string        // remote address or host, if any
	LogonTime time.Time     // when the session started
	IdleTime  time.Duration // time since the last input, if known
	Source    string        // the Source that reported it
	// Key identifies the session inside its source; the registry maps it to
	// the ID. It must change if the underlying session is replaced (a new
	// login on the same terminal gets a new key), so that IDs are never
	// carried over to another session.
	Key string
	// Admin is the tsadmin identity that owns the session, set only for
	// tsadmin's own sessions. It decides "your own session".
	Admin string
	// Memo is where a printer may keep what it made of the session; nil
	// for a source that does not keep its sessions between listings.
	Memo *Memo
}

// Memo is a place, one per session and owned by its source, where a
// printer keeps the session's formatted line: a listing of thousands of
// sessions then formats each once in its life and finds it again without
// a lookup. A source gives a session a Memo only while every field but
// IdleTime stays as it is (the printer compares only the ID, and idle
// minutes where it prints them); when one changes, the session needs a
// new Memo. The shell source's sessions never change: one Memo each.
// It is safe for concurrent use.
type Memo struct{ v atomic.Value }

// Load returns what was last stored, or nil.
func (m *Memo) Load() any { return m.v.Load() }

// Store keeps v. Every Store of one Memo must pass the same type.
func (m *Memo) Store(v any) { m.v.Store(v) }

// Reporter receives the step-by-step account of a logoff for /v.
// It may be nil.
type Reporter func(format string, args ...any)

// Report calls r if it is set.
func (r Reporter) Report(format string, args ...any) {
	if r != nil {
		r(format, args...)
	}
}

// Source is one kind of session: it lists what it knows and ends one of its
// own sessions.
type Source interface {
	// Name is the source's configuration name: shell, host or logind.
	Name() string
	// List returns the current sessions with Key, and not ID, set. The
	// slice is the caller's: the registry fills in IDs, sorts it, and may
	// reuse it for a later listing.
	List(ctx context.Context) ([]Session, error)
	// Logoff ends the session s, which came from this source's List, and
	// returns once it is gone, or an error saying what survived.
	Logoff(ctx context.Context, s Session, req LogoffRequest) error
}

// LogoffRequest is how a session is to be ended, and for whom.
type LogoffRequest struct {
	By     string   // the admin who asked, for the sources that tell the session's user
	Report Reporter // the step-by-step account for /v; may be nil
	// Now ends the session at once (logoff /now, Windows' reset session):
	// SIGKILL with no SIGHUP and no grace, where the source signals
	// processes itself.
	Now bool
}

// Process is one process of a session, as `query process` shows it.
type Process struct {
	PID     int
	User    string        // the user the process runs as (its real uid)
	Command string        // its name (comm), as the process set it: text from outside
	Start   time.Time     // when it started; zero if unknown
	CPU     time.Duration // user and system CPU time so far
}

// ProcessLister is implemented by sources whose sessions have processes
// of their own (the host source). A source that does not implement it
// lists none: tsadmin's own sessions run no program.
type ProcessLister interface {
	// Processes returns the processes of each session of list (all from
	// this source's List), keyed by Session.Key. A session that has ended
	// meanwhile is absent.
	Processes(ctx context.Context, list []Session) (map[string][]Process, error)
}

// Messenger is implemented by sources that can write a message to a
// session's terminal (logoff /msg).
type Messenger interface {
	Message(ctx context.Context, s Session, text string) error
}

// ErrNoMessage: the session's source cannot deliver messages.
var ErrNoMessage = errors.New("this kind of session cannot be sent a message")

// Errors a logoff or lookup can end with. Callers compare with errors.Is.
var (
	// ErrNotFound: no session has that ID or name.
	ErrNotFound = errors.New("no such session")
	// ErrAmbiguous: a name matches more than one session.
	ErrAmbiguous = errors.New("session name is not unique")
	// ErrPrivilege: the operating system refused the server (it lacks root,
	// CAP_KILL or the polkit right); distinct from the admin lacking
	// permission.
	ErrPrivilege = errors.New("the server lacks the privilege to end this session")
	// ErrSurvived: the session did not end within the grace period.
	ErrSurvived = errors.New("the session did not end")
)

// lookupError is a failure with its own message that still compares equal
// (errors.Is) to one of the errors above.
type lookupError struct {
	msg  string
	kind error
}

func (e *lookupError) Error() string { return e.msg }
func (e *lookupError) Unwrap() error { return e.kind }

// Errorf makes an error that reads as the message alone and matches kind
// with errors.Is: Errorf(ErrNotFound, "no session has ID %d", 12).
func Errorf(kind error, format string, args ...any) error {
	return &lookupError{msg: fmt.Sprintf(format, args...), kind: kind}
}
