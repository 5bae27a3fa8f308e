package audit

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds on what a client sends before it authenticates, as it is kept in
// the logs. The SSH packet size lets a login name or a method name run to
// 256 kB; a refused connection must cost the audit log a few hundred bytes
// at most, or a flood of them fills the disk and logoff fails closed.
const (
	MaxLogin        = 32  // login names
	MaxMethod       = 16  // authentication method names
	MaxReason       = 128 // reasons, which may quote a certificate's principals
	MaxMethods      = 4   // distinct methods kept per connection
	MaxFingerprints = 3   // distinct key fingerprints kept per connection
)

// Clip returns s escaped (control characters, format characters such as
// bidirectional overrides, backslashes and invalid UTF-8 as Go escapes) and
// cut to at most max bytes; a cut is marked with a trailing "...". The
// escaping happens before the cut, so the result is never longer than max
// plus the mark, whatever s holds.
func Clip(s string, max int) string {
	var b strings.Builder
	for i, r := range s {
		var piece string
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			piece = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\\':
			piece = `\\`
		case unicode.IsPrint(r):
			piece = string(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			piece = q[1 : len(q)-1]
		}
		if b.Len()+len(piece) > max {
			b.WriteString("...")
			break
		}
		b.WriteString(piece)
	}
	return b.String()
}

// Refusals sums up the refused authentication attempts of one connection
// in bounded space: how many, which methods and keys (the first few), and
// the first login name (cut). The connection's record is written once, by
// Log.Refused, when it ends. It is safe for concurrent use.
type Refusals struct {
	mu           sync.Mutex
	attempts     int
	methods      []string
	fingerprints []string
	login        string
	loginLen     int
	reason       string
}

// Attempt counts one refused attempt with a method, under a login name;
// reason is kept if no key gave one first.
func (r *Refusals) Attempt(login, method, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts == 0 {
		r.login, r.loginLen = Clip(login, MaxLogin), len(login)
	}
	r.attempts++
	r.methods = addBounded(r.methods, Clip(method, MaxMethod), MaxMethods)
	if r.reason == "" {
		r.reason = Clip(reason, MaxReason)
	}
}

// Key notes a key that was refused, and why (the first reason is kept).
func (r *Refusals) Key(fingerprint, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fingerprints = addBounded(r.fingerprints, fingerprint, MaxFingerprints)
	if r.reason == "" {
		r.reason = Clip(reason, MaxReason)
	}
}

func addBounded(list []string, s string, max int) []string {
	if len(list) >= max || slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// Throttle writes at most Burst records of one kind per Interval; the
// ones past that are counted, and the count is written as one record
// (EVENT.suppressed) when the next interval's first record comes, or at
// Flush. It bounds what something outside tsadmin can make it write,
// where each record is worth keeping but their number is not tsadmin's
// to choose: a local user can forge as many login records as there are
// terminals, and each would be one "host.suspicious" record per listing.
type Throttle struct {
	Log      *Log
	Event    string
	Burst    int
	Interval time.Duration

	mu         sync.Mutex
	start      time.Time
	written    int
	suppressed int
}

// Write records one event, or counts it when this interval's burst is
// spent.
func (t *Throttle) Write(attrs ...slog.Attr) {
	t.mu.Lock()
	now := time.Now()
	if now.Sub(t.start) >= t.Interval {
		t.flushLocked()
		t.start, t.written = now, 0
	}
	if t.written >= t.Burst {
		t.suppressed++
		t.mu.Unlock()
		return
	}
	t.written++
	t.mu.Unlock()
	t.Log.Event(t.Event, attrs...)
}

// Flush writes the count of suppressed records, if any.
func (t *Throttle) Flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.flushLocked()
}

func (t *Throttle) flushLocked() {
	if t.suppressed > 0 {
		t.Log.Event(t.Event+".suppressed", slog.Int("count", t.suppressed),
			slog.Time("since", t.start), slog.Int("burst", t.Burst), slog.Duration("interval", t.Interval))
		t.suppressed = 0
	}
}
