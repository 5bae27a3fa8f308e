package shell

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// maxParallelLogoffs bounds how many sessions of one /user: logoff are
// ended at once: each may wait out the grace, and each reads /proc every
// 50ms while it does.
const maxParallelLogoffs = 16

// planned is one session a logoff will end, with its audit record.
type planned struct {
	s   sessions.Session
	rec audit.Logoff
}

// logoff ends the session the command names (an ID, a name, or the
// caller's own), or with /user:NAME every session of that user that the
// caller may end. It returns end=true when the caller's own current
// session is among them: the server then replies and closes it.
//
// The sessions of /user: are those of one listing taken at the start: a
// session that starts after it is not touched, one that ended meanwhile
// counts as ended.
func (e *Env) logoff(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) (end bool, err error) {
	var outMu sync.Mutex
	verbose := func(format string, args ...any) {
		if cmd.Verbose {
			// Process and user names come from outside: the line is
			// escaped whole, whatever its arguments were.
			outMu.Lock()
			defer outMu.Unlock()
			io.WriteString(stdout, Clean(fmt.Sprintf(format, args...))+"\n")
		}
	}
	list, _ := e.Registry.List(ctx)
	targets, err := logoffTargets(list, c, cmd)
	if err != nil {
		return false, err
	}
	policy := e.Policy()
	var allowed []planned
	var refused []string
	for _, s := range targets {
		d := policy.Allow(c.Identity, s)
		rec := audit.Logoff{
			Admin: c.Identity.Name, Via: c.Via, Server: e.Server,
			SessionID: s.ID, SessionName: s.Name, SessionUser: s.User,
			SessionSource: s.Source, Rule: d.Rule, Now: cmd.Now,
		}
		if d.Allowed {
			allowed = append(allowed, planned{s, rec})
			continue
		}
		e.Audit.LogoffDenied(rec)
		msg := fmt.Sprintf("access denied: %s may not log off session %d (%s of %s)",
			c.Identity.Name, s.ID, Clean(s.Name), Clean(s.User))
		if cmd.User == "" {
			return false, &DeniedError{Msg: msg}
		}
		fmt.Fprintf(stderr, "logoff: %s; it is left alone\n", msg)
		refused = append(refused, strconv.Itoa(s.ID))
	}
	for i, p := range allowed {
		verbose("Logging off session %d (%s) of user %s on server %s (%s%s).",
			p.s.ID, Clean(p.s.Name), Clean(p.s.User), e.Server, p.rec.Rule, nowNote(cmd.Now))
		if err := e.Audit.LogoffIntent(p.rec); err != nil {
			// Nothing happens unless every intent is on record.
			for _, q := range allowed[:i] {
				e.Audit.LogoffOutcome(q.rec, fmt.Errorf("not carried out: %w", err))
			}
			return false, &DeniedError{Msg: fmt.Sprintf("logoff refused: %v", err)}
		}
	}
	// The caller's own current session ends last, after the command has
	// returned: the reply must reach the client before its connection
	// closes.
	var own *planned
	others := allowed[:0:0]
	for i, p := range allowed {
		if c.Session != 0 && p.s.ID == c.Session {
			own = &allowed[i]
		} else {
			others = append(others, p)
		}
	}
	if len(others) > 0 && (cmd.Message != "" || cmd.Delay > 0) {
		if err := e.warn(ctx, others, c, cmd, verbose); err != nil {
			for _, p := range allowed {
				e.Audit.LogoffOutcome(p.rec, err)
			}
			return false, err
		}
	}
	errs := make([]error, len(others))
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxParallelLogoffs)
	var panicked any
	var panicOnce sync.Once
	for i, p := range others {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			// A bug in a source must reach the session's own recover,
			// as it would without the goroutine: a panic here would
			// take the whole server down.
			defer func() {
				if r := recover(); r != nil {
					panicOnce.Do(func() { panicked = r })
				}
			}()
			errs[i] = e.end(ctx, c, cmd, p, verbose)
		}()
	}
	wg.Wait()
	if panicked != nil {
		panic(panicked)
	}
	if own != nil {
		verbose("Ending the current session %d.", own.s.ID)
		e.Audit.LogoffOutcome(own.rec, nil)
		end = true
	}
	if cmd.User == "" {
		if len(errs) == 1 {
			return end, errs[0]
		}
		return end, nil
	}
	return end, userOutcome(cmd.User, len(targets), refused, others, errs, stderr)
}

// nowNote marks /now in the /v account.
func nowNote(now bool) string {
	if now {
		return "; /now: SIGKILL at once"
	}
	return ""
}

// end ends one session whose intent is on record, and records the
// outcome.
func (e *Env) end(ctx context.Context, c Caller, cmd Command, p planned, verbose func(string, ...any)) error {
	lctx, cancel := context.WithTimeout(ctx, e.Grace+5*time.Second)
	defer cancel()
	start := time.Now()
	prefix := "  "
	if cmd.User != "" {
		// Several sessions report at once: each line says whose it is.
		prefix = fmt.Sprintf("  [%d] ", p.s.ID)
	}
	err := e.Registry.Logoff(lctx, p.s, sessions.LogoffRequest{
		By:     c.Identity.Name,
		Now:    cmd.Now,
		Report: func(format string, args ...any) { verbose(prefix+format, args...) },
	})
	e.Audit.LogoffOutcome(p.rec, err)
	if err == nil {
		verbose("Session %d ended after %s.", p.s.ID, time.Since(start).Round(10*time.Microsecond))
	}
	return err
}

// logoffTargets are the sessions a logoff names, from one listing.
func logoffTargets(list []sessions.Session, c Caller, cmd Command) ([]sessions.Session, error) {
	if cmd.User != "" {
		var out []sessions.Session
		for _, s := range list {
			if s.User == cmd.User {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			return nil, sessions.Errorf(sessions.ErrNotFound, "user %s has no session", quoteWord(cmd.User))
		}
		return out, nil
	}
	target := cmd.Target
	if target == "" {
		if c.Session == 0 {
			return nil, usagef("a relayed logoff must name a session")
		}
		target = strconv.Itoa(c.Session)
	}
	s, err := sessions.Find(list, target)
	if err != nil {
		return nil, err
	}
	return []sessions.Session{s}, nil
}

// userOutcome is the result of logoff /user:NAME: each session that did
// not end is named on stderr, and the error (nil when every session
// ended) carries the status CombineStatus picks. A session that ended by
// itself meanwhile counts as ended.
func userOutcome(user string, total int, refused []string, done []planned, errs []error, stderr io.Writer) error {
	statuses := []int{StatusOK}
	if len(refused) > 0 {
		statuses = append(statuses, StatusDenied)
	}
	var failed []string
	for i, err := range errs {
		if err == nil || errors.Is(err, sessions.ErrNotFound) {
			continue
		}
		fmt.Fprintf(stderr, "logoff: session %d (%s of %s): %s\n", done[i].s.ID, Clean(done[i].s.Name), Clean(done[i].s.User), oneLine(err.Error()))
		failed = append(failed, strconv.Itoa(done[i].s.ID))
		statuses = append(statuses, ExitStatus(err))
	}
	status := CombineStatus(statuses...)
	if status == StatusOK {
		return nil
	}
	var parts []string
	if len(failed) > 0 {
		parts = append(parts, fmt.Sprintf("%d did not end (%s)", len(failed), strings.Join(failed, ", ")))
	}
	if len(refused) > 0 {
		parts = append(parts, fmt.Sprintf("%d refused by policy (%s)", len(refused), strings.Join(refused, ", ")))
	}
	return &StatusError{Status: status, Msg: fmt.Sprintf("of %d sessions of %s, %s",
		total, quoteWord(user), strings.Join(parts, "; "))}
}

// warn writes /msg to each target and then waits /delay seconds, once.
func (e *Env) warn(ctx context.Context, targets []planned, c Caller, cmd Command, verbose func(string, ...any)) error {
	if cmd.Message != "" {
		text := fmt.Sprintf("Message from %s (tsadmin on %s): %s", c.Identity.Name, e.Server, cmd.Message)
		for _, t := range targets {
			if err := e.Registry.Message(ctx, t.s, text); err != nil {
				verbose("  the message could not be delivered to session %d: %s", t.s.ID, oneLine(err.Error()))
			} else {
				verbose("  message written to session %d.", t.s.ID)
			}
		}
	}
	if cmd.Delay > 0 {
		verbose("  waiting %d seconds before the logoff.", cmd.Delay)
		select {
		case <-time.After(time.Duration(cmd.Delay) * time.Second):
		case <-ctx.Done():
			return sessions.Errorf(sessions.ErrSurvived, "the logoff was cancelled during /delay")
		}
	}
	return nil
}

// logoffEverywhere is logoff /user:NAME /server:*: this server, then every
// peer, each deciding with its own roles. The peers run at once; their
// output is shown whole, one server after another, in name order. The
// status is CombineStatus of every server's.
func (e *Env) logoffEverywhere(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) Outcome {
	local := cmd
	local.Server = ""
	end, err := e.logoff(ctx, c, local, stdout, stderr)
	statuses := []int{ExitStatus(err)}
	errs := []error{err}
	if err != nil {
		fmt.Fprintf(stderr, "logoff: %s: %s\n", e.Server, oneLine(err.Error()))
	}
	peers := e.Peers.Names()
	type answer struct {
		out, errOut bytes.Buffer
		err         error
	}
	answers := make([]answer, len(peers))
	var wg sync.WaitGroup
	for i, name := range peers {
		pc := cmd
		pc.Server = name
		pc.Line = joinWords(replaceServer(cmd.Words, name))
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i].err = e.Peers.Relay(ctx, name, c, pc, &answers[i].out, &answers[i].errOut)
		}()
	}
	wg.Wait()
	for i, a := range answers {
		stdout.Write(a.out.Bytes())
		stderr.Write(a.errOut.Bytes())
		var peer *PeerStatus
		if a.err != nil && !errors.As(a.err, &peer) {
			// The peer could not be asked; its own errors came with its
			// output otherwise.
			fmt.Fprintf(stderr, "logoff: %s: %s\n", peers[i], oneLine(a.err.Error()))
		}
		statuses = append(statuses, ExitStatus(a.err))
		errs = append(errs, a.err)
	}
	return Outcome{Status: CombineStatus(statuses...), Err: errors.Join(errs...), End: end, LoggedOff: end}
}

// replaceServer returns words with /server:* made /server:NAME.
func replaceServer(words []string, name string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		if isOption(w) && strings.EqualFold(w[1:], "server:*") {
			w = "/server:" + name
		}
		out[i] = w
	}
	return out
}

// plainWord is a word that Split reads back unchanged without quotes.
var plainWord = regexp.MustCompile(`^[A-Za-z0-9_./:,=+@%-]+$`)

// joinWords makes a line that Split turns back into words: each word that
// is not plain is single-quoted, a ' inside as '\”.
func joinWords(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		if plainWord.MatchString(w) {
			quoted[i] = w
		} else {
			quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " ")
}
