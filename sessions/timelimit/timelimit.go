// Package timelimit enforces sessions.policy: the server's own time limits
// for idle and disconnected sessions, as Windows' group policy "session
// time limits" do. A loop lists the sessions on a ticker, warns a session
// on its terminal warn_before ahead, and then logs it off through the
// registry, audited as the server's own decision (admin "tsadmin:policy").
//
// Rules:
//   - The first rule whose match names a session applies to it.
//   - tsadmin's own sessions (source shell) are matched only by a selector
//     that names them literally, type:tsadmin or type:shell; "*" and
//     user: selectors never end an admin's session.
//   - Idle is the session's IdleTime (a host terminal's last input;
//     logind's IdleSinceHint). A session without a terminal has no idle
//     time and is never idle.
//   - A Disc session has been disconnected for its IdleTime, where its
//     source reports one; else for as long as this loop has seen it Disc.
//   - A session is warned once; it is logged off only when, in a fresh
//     listing taken right before the logoff, its time is still over the
//     limit and it has had no input since the warning. Input after the
//     warning starts it over.
//   - A dry_run rule neither warns nor logs off: it writes what it would
//     log off to the audit log and the server log, once per idle period.
package timelimit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// Admin is the name the loop's logoffs are audited under.
const Admin = "tsadmin:policy"

// listTimeout bounds one listing of the sessions.
const listTimeout = 10 * time.Second

// Options are what the loop needs from the server.
type Options struct {
	Server   string // this server's name, for the audit log and warnings
	Registry *sessions.Registry
	Audit    *audit.Log
	Log      *slog.Logger
}

// Settings are the parts of the config the loop follows; Replace swaps
// them on reload.
type Settings struct {
	Rules []config.PolicyRule
	Every time.Duration // how often to look
	Grace time.Duration // sessions.logoff_grace
}

// FromConfig takes the loop's settings from a loaded config.
func FromConfig(c *config.Config) Settings {
	return Settings{Rules: c.Sessions.Policy, Every: c.Sessions.PolicyInterval.Duration, Grace: c.Sessions.LogoffGrace.Duration}
}

// Loop is the running policy loop.
type Loop struct {
	opts    Options
	mu      sync.Mutex
	set     Settings
	changed chan struct{} // Replace wakes the loop to re-read its ticker
	cancel  context.CancelFunc
	done    chan struct{}
	state   map[string]*tracked // by source and key; touched by the loop only
}

// tracked is what the loop remembers of one session between ticks.
type tracked struct {
	warnedAt  time.Time // zero until warned (or dry-run reported)
	warnedFor string    // "idle" or "disconnected": which limit warned
	lastIdle  time.Duration
	discSince time.Time // when the loop first saw it Disc, zero if not Disc
}

// Start starts the loop. Stop ends it.
func Start(opts Options, set Settings) *Loop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Loop{opts: opts, set: set, changed: make(chan struct{}, 1), cancel: cancel,
		done: make(chan struct{}), state: map[string]*tracked{}}
	go l.run(ctx)
	return l
}

// Replace puts new settings in force (reload). What the loop remembers of
// the sessions is kept, but warnings start over: a session warned under
// the old rules is warned again before the new ones log it off.
func (l *Loop) Replace(set Settings) {
	l.mu.Lock()
	l.set = set
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// Stop ends the loop, cancelling a logoff under way, and waits for it.
func (l *Loop) Stop() {
	l.cancel()
	<-l.done
}

func (l *Loop) settings() Settings {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.set
}

func (l *Loop) run(ctx context.Context) {
	defer close(l.done)
	every := l.settings().Every
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.changed:
			for _, t := range l.state {
				t.warnedAt, t.warnedFor = time.Time{}, ""
			}
			if e := l.settings().Every; e != every {
				every = e
				ticker.Reset(every)
			}
		case <-ticker.C:
			l.tick(ctx, l.settings())
		}
	}
}

// due is a session over (or nearly over) one of its rule's limits.
type due struct {
	s     sessions.Session
	rule  int
	limit string        // "idle" or "disconnected"
	over  time.Duration // how long it has been idle or disconnected
}

// tick lists the sessions once, warns those within warn_before of their
// limit and logs off those past it (after a fresh listing).
func (l *Loop) tick(ctx context.Context, set Settings) {
	if len(set.Rules) == 0 {
		clear(l.state)
		return
	}
	list := l.list(ctx)
	if list == nil {
		return
	}
	now := time.Now()
	seen := make(map[string]bool, len(list))
	var logoff []due
	for _, s := range list {
		k := key(s)
		seen[k] = true
		d, ok := l.measure(s, set.Rules, now)
		if !ok {
			continue
		}
		r := set.Rules[d.rule]
		t := l.state[k]
		limit := limitOf(r, d.limit)
		switch {
		case d.over < limit-r.WarnBefore.Duration:
			// Not near its limit (or used again): nothing is owed.
			t.warnedAt, t.warnedFor = time.Time{}, ""
			continue
		case r.DryRun:
			if d.over >= limit && t.warnedAt.IsZero() {
				t.warnedAt, t.warnedFor = now, d.limit
				l.report(s, set.Rules, d, "policy.dry_run", "would log off")
			}
			continue
		case t.warnedAt.IsZero() || t.warnedFor != d.limit:
			t.warnedAt, t.warnedFor = now, d.limit
			if r.WarnBefore.Duration > 0 {
				l.warn(ctx, s, set.Rules, d)
				continue
			}
		}
		if d.over >= limit && now.Sub(t.warnedAt) >= r.WarnBefore.Duration {
			logoff = append(logoff, d)
		}
	}
	for k := range l.state {
		if !seen[k] {
			delete(l.state, k)
		}
	}
	if len(logoff) > 0 {
		l.logoff(ctx, set, logoff)
	}
}

// list reads the registry; a source that fails is logged and its sessions
// are left alone this tick.
func (l *Loop) list(ctx context.Context) []sessions.Session {
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	list, errs := l.opts.Registry.List(lctx)
	for _, err := range errs {
		l.opts.Log.Warn("policy: a session source could not be listed", "err", err.Error())
	}
	if ctx.Err() != nil {
		return nil
	}
	if list == nil {
		list = []sessions.Session{}
	}
	return list
}

// measure finds the rule that applies to s and how long s has been idle or
// disconnected, and updates what the loop remembers of s. ok is false when
// no rule applies or the rule has no limit for the session's state.
func (l *Loop) measure(s sessions.Session, rules []config.PolicyRule, now time.Time) (due, bool) {
	t := l.state[key(s)]
	if t == nil {
		t = &tracked{lastIdle: s.IdleTime}
		l.state[key(s)] = t
	}
	// Input since the last look: whatever was owed starts over.
	if s.IdleTime < t.lastIdle {
		t.warnedAt, t.warnedFor = time.Time{}, ""
	}
	t.lastIdle = s.IdleTime
	if s.State != sessions.Disc {
		t.discSince = time.Time{}
	} else if t.discSince.IsZero() {
		t.discSince = now
	}
	rule := match(s, rules)
	if rule < 0 {
		return due{}, false
	}
	r := rules[rule]
	d := due{s: s, rule: rule}
	switch {
	case s.State == sessions.Disc && r.DisconnectedLogoff.Duration > 0:
		d.limit, d.over = "disconnected", max(s.IdleTime, now.Sub(t.discSince))
	case s.State != sessions.Disc && r.IdleLogoff.Duration > 0:
		d.limit, d.over = "idle", s.IdleTime
	default:
		return due{}, false
	}
	return d, true
}

// match returns the index of the first rule that names s, or -1.
func match(s sessions.Session, rules []config.PolicyRule) int {
	for i, r := range rules {
		for _, sel := range r.Selectors {
			if s.Source == "shell" && !(sel.Text == "type:tsadmin" || sel.Text == "type:shell") {
				continue // an admin's own session only by name
			}
			if sel.Match(s.User, s.Name, s.Type, s.Source) {
				return i
			}
		}
	}
	return -1
}

func limitOf(r config.PolicyRule, limit string) time.Duration {
	if limit == "disconnected" {
		return r.DisconnectedLogoff.Duration
	}
	return r.IdleLogoff.Duration
}

func key(s sessions.Session) string { return s.Source + "\x00" + s.Key }

// ruleText names the rule and why it applies, for the audit log:
// "sessions.policy[0] (line 3) user:student*: idle 2h0m4s, idle_logoff 2h0m0s".
func ruleText(rules []config.PolicyRule, d due) string {
	r := rules[d.rule]
	sels := make([]string, len(r.Selectors))
	for i, s := range r.Selectors {
		sels[i] = s.Text
	}
	return fmt.Sprintf("sessions.policy[%d] (line %d) %s: %s %s, %s_logoff %s", d.rule, r.Line,
		strings.Join(sels, ","), d.limit, d.over.Truncate(time.Second), d.limit, limitOf(r, d.limit))
}

func (l *Loop) record(s sessions.Session, rules []config.PolicyRule, d due) audit.Logoff {
	return audit.Logoff{
		Admin: Admin, Server: l.opts.Server, SessionID: s.ID, SessionName: s.Name,
		SessionUser: s.User, SessionSource: s.Source, Rule: ruleText(rules, d),
	}
}

// report writes a warning or a dry run to the audit log and the server
// log.
func (l *Loop) report(s sessions.Session, rules []config.PolicyRule, d due, event, what string, extra ...slog.Attr) {
	rec := l.record(s, rules, d)
	attrs := append([]slog.Attr{
		slog.String("admin", rec.Admin), slog.String("server", rec.Server), slog.Int("session_id", rec.SessionID),
		slog.String("session_name", rec.SessionName), slog.String("session_user", rec.SessionUser),
		slog.String("session_source", rec.SessionSource), slog.String("rule", rec.Rule),
		slog.Int64(d.limit+"_seconds", int64(d.over/time.Second)),
	}, extra...)
	l.opts.Audit.Event(event, attrs...)
	args := make([]any, len(attrs))
	for i, a := range attrs {
		args[i] = a
	}
	l.opts.Log.Info("policy: "+what, args...)
}

// warn writes the warning to the session's terminal.
// The logoff comes warn_before after the warning at the soonest (the
// warning is due only once the session is that close to its limit).
func (l *Loop) warn(ctx context.Context, s sessions.Session, rules []config.PolicyRule, d due) {
	r := rules[d.rule]
	what := "had no input"
	if d.limit == "disconnected" {
		what = "been disconnected"
	}
	text := fmt.Sprintf("tsadmin on %s: this session has %s for %s; by policy it will be logged off in %s unless it is used (type a command).",
		l.opts.Server, what, d.over.Truncate(time.Second), r.WarnBefore.Duration)
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	result := "written"
	if err := l.opts.Registry.Message(mctx, s, text); err != nil {
		result = err.Error()
	}
	l.report(s, rules, d, "policy.warn", "warned", slog.String("warn_before", r.WarnBefore.Duration.String()), slog.String("result", result))
}

// logoff lists the sessions again and logs off those of todo that are
// still past their limit and have had no input since their warning.
func (l *Loop) logoff(ctx context.Context, set Settings, todo []due) {
	fresh := l.list(ctx)
	now := time.Now()
	byKey := make(map[string]sessions.Session, len(fresh))
	for _, s := range fresh {
		byKey[key(s)] = s
	}
	for _, old := range todo {
		s, ok := byKey[key(old.s)]
		if !ok || ctx.Err() != nil {
			continue // gone by itself, or the server stops
		}
		d, ok := l.measure(s, set.Rules, now)
		t := l.state[key(s)]
		if !ok || d.rule != old.rule || d.limit != old.limit || d.over < limitOf(set.Rules[d.rule], d.limit) ||
			t.warnedAt.IsZero() || d.over < now.Sub(t.warnedAt) {
			continue // used again since it was warned
		}
		rec := l.record(s, set.Rules, d)
		if err := l.opts.Audit.LogoffIntent(rec); err != nil {
			l.opts.Log.Error("policy: logoff refused: the audit log cannot be written", "session_id", s.ID, "err", err.Error())
			continue
		}
		l.opts.Log.Info("policy: logging off", "session_id", s.ID, "session_user", s.User, "rule", rec.Rule)
		lctx, cancel := context.WithTimeout(ctx, set.Grace+5*time.Second)
		err := l.opts.Registry.Logoff(lctx, s, sessions.LogoffRequest{By: Admin})
		cancel()
		l.opts.Audit.LogoffOutcome(rec, err)
		if err != nil {
			l.opts.Log.Warn("policy: logoff failed", "session_id", s.ID, "err", err.Error())
		}
	}
}
