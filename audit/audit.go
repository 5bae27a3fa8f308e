// Package audit writes tsadmin's audit log: one JSON line (log/slog) for
// every authentication, every command and every logoff. A logoff's intent
// is written and synced before the logoff is carried out; when that write
// fails the caller must refuse the logoff (fail closed).
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/tsadmin-dev/tsadmin/config"
)

// Log is the audit log. It is safe for concurrent use.
type Log struct {
	mu   sync.Mutex
	file *os.File // nil when writing to a plain io.Writer
	h    slog.Handler
	// syncable is false for stderr pipes and terminals, where fsync is
	// meaningless and fails with EINVAL.
	syncable bool
	owned    bool
	// OnFailure, if set, is told when a record cannot be written, at most
	// once a minute, so that the operator hears of a broken audit log
	// before an admin's logoff is refused for it.
	OnFailure  func(error)
	lastWarned time.Time
}

// Open opens the audit file for appending (mode 0600), or standard error
// when path is empty.
func Open(path string) (*Log, error) {
	if path == "" {
		return newLog(os.Stderr, false), nil
	}
	// Never through a symlink, and never a file or directory another
	// user could change: root appends to whatever this names.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case fi.Mode()&os.ModeCharDevice != 0 && ownedByRoot(fi):
		// A device node (/dev/null, /dev/full in tests) only root makes.
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", path)
	default:
		err = config.CheckTrusted(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l := newLog(f, true)
	l.owned = true
	return l, nil
}

func ownedByRoot(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == 0
}

func newLog(f *os.File, syncable bool) *Log {
	return &Log{
		file:     f,
		syncable: syncable,
		h:        slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}),
	}
}

// Close closes the audit file, if the Log opened one.
func (l *Log) Close() error {
	if l.owned {
		return l.file.Close()
	}
	return nil
}

// ErrAudit wraps a failure to write the audit log.
var ErrAudit = errors.New("the audit log cannot be written")

// write emits one record; with sync it also flushes it to disk.
func (l *Log) write(event string, sync bool, attrs ...slog.Attr) error {
	r := slog.NewRecord(time.Now(), slog.LevelInfo, event, 0)
	r.AddAttrs(attrs...)
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.h.Handle(context.Background(), r)
	if err == nil && sync && l.syncable {
		if err = l.file.Sync(); errors.Is(err, syscall.EINVAL) {
			err = nil
		}
	}
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%w: %v", ErrAudit, err)
	if l.OnFailure != nil && time.Since(l.lastWarned) > time.Minute {
		l.lastWarned = time.Now()
		l.OnFailure(err)
	}
	return err
}

// Accepted records an accepted authentication: one record each, with the
// key's fingerprint and the client's address. The login name is the
// client's to choose, so it is bounded as in a refusal.
func (l *Log) Accepted(addr, login, method, fingerprint, admin, reason string) {
	l.write("auth", false,
		slog.String("addr", addr), slog.String("login", Clip(login, MaxLogin)), slog.Int("login_len", len(login)),
		slog.String("method", method), slog.String("fingerprint", fingerprint), slog.String("admin", admin),
		slog.Bool("accepted", true), slog.String("reason", reason))
}

// Refused records the refused authentication attempts of one connection,
// summed up by r, as one record of bounded size, and empties r. It writes
// nothing if there was no attempt since the last record.
func (l *Log) Refused(addr string, r *Refusals) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts == 0 {
		return
	}
	l.write("auth.refused", false,
		slog.String("addr", addr), slog.String("login", r.login), slog.Int("login_len", r.loginLen),
		slog.Int("attempts", r.attempts), slog.Any("methods", r.methods),
		slog.Any("fingerprints", r.fingerprints), slog.String("reason", r.reason))
	r.attempts, r.methods, r.fingerprints, r.login, r.loginLen, r.reason = 0, nil, nil, "", 0, ""
}

// Command is what a command record says.
type Command struct {
	Admin   string   // who ran it (for a relayed command, the admin as the peer named them)
	Session string   // the admin's session ID, or "relayed from PEER"
	Via     string   // the peer that relayed it, if any
	Server  string   // this server
	Words   []string // the line as split (or, cut and escaped, a line that did not parse)
	Status  int      // the exit status
	Reason  string   // why it failed, one line
	Took    time.Duration
}

// Command records a command line run by an admin, with its exit status
// and how long the server took to run it.
func (l *Log) Command(c Command) {
	l.write("command", false,
		slog.String("admin", c.Admin), slog.String("session", c.Session), slog.String("via", c.Via),
		slog.String("server", c.Server), slog.Any("words", c.Words), slog.Int("status", c.Status),
		slog.String("reason", c.Reason), slog.Int64("took_us", c.Took.Microseconds()))
}

// Logoff is what a logoff record says.
type Logoff struct {
	Admin         string // who asked
	Via           string // the relaying server, if relayed
	Server        string // where the target session is
	SessionID     int
	SessionName   string
	SessionUser   string
	SessionSource string
	Rule          string // the rule that allowed or denied it
	Now           bool   // logoff /now: SIGKILL at once, no SIGHUP and no grace
}

func (e Logoff) attrs() []slog.Attr {
	return []slog.Attr{
		slog.String("admin", e.Admin), slog.String("via", e.Via), slog.String("server", e.Server),
		slog.Int("session_id", e.SessionID), slog.String("session_name", e.SessionName),
		slog.String("session_user", e.SessionUser), slog.String("session_source", e.SessionSource),
		slog.String("rule", e.Rule), slog.Bool("now", e.Now),
	}
}

// LogoffIntent records, durably, a logoff about to happen. If it returns
// an error the logoff must not happen.
func (l *Log) LogoffIntent(e Logoff) error {
	return l.write("logoff.intent", true, e.attrs()...)
}

// LogoffDenied records a logoff refused by policy.
func (l *Log) LogoffDenied(e Logoff) {
	l.write("logoff.denied", true, e.attrs()...)
}

// LogoffOutcome records how a logoff ended.
func (l *Log) LogoffOutcome(e Logoff, err error) {
	result := "ok"
	if err != nil {
		result = err.Error()
	}
	l.write("logoff.outcome", true, append(e.attrs(), slog.String("result", result))...)
}

// Event records anything else worth keeping (reloads, relays, limits).
func (l *Log) Event(event string, attrs ...slog.Attr) {
	l.write(event, false, attrs...)
}
