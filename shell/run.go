package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// Mode is how a command reached the server.
type Mode int

// The three ways tsadmin is used.
const (
	ModeExec        Mode = iota // ssh host logoff 12
	ModeScript                  // ssh host < commands.txt
	ModeInteractive             // ssh host, with a PTY
)

// Env is what commands run against: this server's name, sessions, policy
// and audit log.
type Env struct {
	Server   string
	Registry *sessions.Registry
	Policy   func() *keys.Policy // the policy in force (it changes on reload)
	Audit    *audit.Log
	Grace    time.Duration // the host logoff grace; a logoff may take this long
	Peers    Relayer       // federation; nil when no servers are configured
}

// Relayer runs a command on another server (federation).
type Relayer interface {
	// Names lists the configured peers.
	Names() []string
	// Relay runs cmd on the named peer for the caller, copying its output,
	// and returns its exit status.
	Relay(ctx context.Context, server string, caller Caller, cmd Command, stdout, stderr io.Writer) int
	// QueryAll runs a query on every peer at once, returning the rows of
	// those that answered and an error for each that did not.
	QueryAll(ctx context.Context, caller Caller, cmd Command) ([]Row, []error)
}

// Caller is who runs a command, and from where.
type Caller struct {
	Identity keys.Identity
	Session  int    // the caller's own session ID; 0 for a relayed command
	Via      string // the server that relayed the command, if any
	Mode     Mode
	Width    int // terminal width for tables; 0 for none
}

// Outcome is what became of a command.
type Outcome struct {
	Status int  // the exit status
	End    bool // the caller's session ends now (exit, or logoff of itself)
	// LoggedOff: the caller logged off its own session; the server sends
	// the reply and the exit status, then closes the connection.
	LoggedOff bool
}

// Run carries out one command and writes its output to stdout and its
// errors, one line each, to stderr.
func (e *Env) Run(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) Outcome {
	start := time.Now()
	out := e.run(ctx, c, cmd, stdout, stderr)
	if cmd.Verb != VerbNone {
		e.Audit.Command(c.Identity.Name, sessionLabel(c), e.Server, cmd.Words, out.Status, time.Since(start))
	}
	return out
}

func sessionLabel(c Caller) string {
	if c.Via != "" {
		return "relayed from " + c.Via
	}
	return fmt.Sprintf("%d", c.Session)
}

func (e *Env) run(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) Outcome {
	fail := func(err error) Outcome {
		fmt.Fprintf(stderr, "%s: %s\n", verbName(cmd), oneLine(err.Error()))
		return Outcome{Status: ExitStatus(err)}
	}
	if cmd.Help || cmd.Verb == VerbHelp {
		io.WriteString(stdout, helpFor(cmd))
		return Outcome{}
	}
	switch cmd.Verb {
	case VerbNone:
		return Outcome{}
	case VerbExit:
		if c.Mode == ModeExec {
			return fail(usagef("exit is for the interactive shell"))
		}
		return Outcome{End: true}
	}
	if cmd.Server != "" && !strings.EqualFold(cmd.Server, e.Server) {
		if c.Via != "" {
			return fail(&ServerError{Msg: "a relayed command cannot be relayed again"})
		}
		if e.Peers == nil {
			return fail(&ServerError{Msg: fmt.Sprintf("unknown server %s: no servers are configured", quoteWord(cmd.Server))})
		}
		if cmd.Server == "*" {
			return e.queryAll(ctx, c, cmd, stdout, stderr)
		}
		return Outcome{Status: e.Peers.Relay(ctx, cmd.Server, c, cmd, stdout, stderr)}
	}
	var err error
	var end bool
	switch cmd.Verb {
	case VerbQuerySession, VerbQueryUser:
		err = e.query(ctx, c, cmd, stdout, stderr)
	case VerbLogoff:
		end, err = e.logoff(ctx, c, cmd, stdout)
	}
	if err != nil {
		return fail(err)
	}
	return Outcome{End: end, LoggedOff: end}
}

func verbName(cmd Command) string {
	switch cmd.Verb {
	case VerbNone:
		return "tsadmin"
	case VerbQuerySession:
		return "query session"
	}
	return cmd.Verb
}

// oneLine keeps an error message to one clean line.
func oneLine(s string) string {
	return Clean(strings.ReplaceAll(s, "\n", " "))
}

// rows lists the local sessions as the caller sees them.
func (e *Env) rows(ctx context.Context, c Caller) ([]Row, []error) {
	list, errs := e.Registry.List(ctx)
	policy := e.Policy()
	rows := make([]Row, len(list))
	for i, s := range list {
		rows[i] = Row{
			Session:   s,
			Server:    e.Server,
			Current:   c.Session != 0 && s.ID == c.Session,
			CanLogoff: policy.Allow(c.Identity, s).Allowed,
		}
	}
	return rows, errs
}

// filterRows keeps the rows that a query's argument names: an ID, a
// session name or a user name.
func filterRows(rows []Row, target string) []Row {
	if target == "" {
		return rows
	}
	var keep []Row
	for _, r := range rows {
		if sessions.IsID(target) && fmt.Sprint(r.ID) == strings.TrimLeft(target, "0") ||
			!sessions.IsID(target) && (strings.EqualFold(r.Name, target) || r.User == target) {
			keep = append(keep, r)
		}
	}
	return keep
}

func (e *Env) query(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) error {
	rows, errs := e.rows(ctx, c)
	for _, err := range errs {
		fmt.Fprintf(stderr, "%s: warning: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	return e.print(cmd, c, filterRows(rows, cmd.Target), false, stdout)
}

func (e *Env) print(cmd Command, c Caller, rows []Row, withServer bool, stdout io.Writer) error {
	if cmd.Target != "" && len(rows) == 0 {
		what := "session"
		if cmd.Verb == VerbQueryUser {
			what = "user"
		}
		return sessions.Errorf(sessions.ErrNotFound, "no %s exists for %s", what, quoteWord(cmd.Target))
	}
	if cmd.Format == FormatJSON {
		return WriteJSON(stdout, rows)
	}
	return WriteTable(stdout, cmd.Verb, rows, withServer, c.Width)
}

// queryAll is query /server:*: this server and every peer, in one table.
func (e *Env) queryAll(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) Outcome {
	local, errs := e.rows(ctx, c)
	remote, peerErrs := e.Peers.QueryAll(ctx, c, cmd)
	for _, err := range errs {
		fmt.Fprintf(stderr, "%s: warning: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	for _, err := range peerErrs {
		fmt.Fprintf(stderr, "%s: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	rows := filterRows(append(local, remote...), cmd.Target)
	status := 0
	if err := e.print(cmd, c, rows, true, stdout); err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", verbName(cmd), oneLine(err.Error()))
		status = ExitStatus(err)
	}
	if len(peerErrs) > 0 {
		status = StatusServer
	}
	return Outcome{Status: status}
}

// logoff ends a session. It returns end=true when the session to end is
// the caller's own current one: the server then replies and closes it.
func (e *Env) logoff(ctx context.Context, c Caller, cmd Command, stdout io.Writer) (end bool, err error) {
	verbose := func(format string, args ...any) {
		if cmd.Verbose {
			fmt.Fprintf(stdout, format+"\n", args...)
		}
	}
	list, _ := e.Registry.List(ctx)
	var target sessions.Session
	if cmd.Target == "" {
		if c.Session == 0 {
			return false, usagef("logoff: a relayed logoff must name a session")
		}
		target, err = sessions.Find(list, fmt.Sprint(c.Session))
	} else {
		target, err = sessions.Find(list, cmd.Target)
	}
	if err != nil {
		return false, err
	}
	policy := e.Policy()
	d := policy.Allow(c.Identity, target)
	rec := audit.Logoff{
		Admin: c.Identity.Name, Via: c.Via, Server: e.Server,
		SessionID: target.ID, SessionName: target.Name, SessionUser: target.User,
		SessionSource: target.Source, Rule: d.Rule,
	}
	if !d.Allowed {
		e.Audit.LogoffDenied(rec)
		return false, &DeniedError{Msg: fmt.Sprintf("access denied: %s may not log off session %d (%s of %s)",
			c.Identity.Name, target.ID, Clean(target.Name), Clean(target.User))}
	}
	verbose("Logging off session %d (%s) of user %s on server %s (%s).",
		target.ID, Clean(target.Name), Clean(target.User), e.Server, d.Rule)
	if err := e.Audit.LogoffIntent(rec); err != nil {
		return false, &DeniedError{Msg: fmt.Sprintf("logoff refused: %v", err)}
	}
	if target.ID == c.Session && c.Session != 0 {
		// The reply must reach the client before its connection closes:
		// the server ends this session once the command has returned.
		verbose("Ending the current session %d.", target.ID)
		e.Audit.LogoffOutcome(rec, nil)
		return true, nil
	}
	if cmd.Message != "" || cmd.Delay > 0 {
		if err := e.warn(ctx, target, c, cmd, verbose); err != nil {
			e.Audit.LogoffOutcome(rec, err)
			return false, err
		}
	}
	lctx, cancel := context.WithTimeout(context.WithValue(ctx, sessions.ByKey{}, c.Identity.Name), e.Grace+5*time.Second)
	defer cancel()
	start := time.Now()
	err = e.Registry.Logoff(lctx, target, func(format string, args ...any) {
		verbose("  "+format, args...)
	})
	e.Audit.LogoffOutcome(rec, err)
	if err != nil {
		return false, err
	}
	verbose("Session %d ended after %s.", target.ID, time.Since(start).Round(10*time.Microsecond))
	return false, nil
}

// warn writes /msg to the target and waits /delay seconds.
func (e *Env) warn(ctx context.Context, target sessions.Session, c Caller, cmd Command, verbose func(string, ...any)) error {
	if cmd.Message != "" {
		text := fmt.Sprintf("Message from %s (tsadmin on %s): %s", c.Identity.Name, e.Server, cmd.Message)
		if err := e.Registry.Message(ctx, target, text); err != nil {
			verbose("  the message could not be delivered: %s", oneLine(err.Error()))
		} else {
			verbose("  message written to session %d.", target.ID)
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

// Exit statuses, as DESIGN.md fixes them.
const (
	StatusOK       = 0
	StatusNotFound = 1
	StatusUsage    = 2
	StatusDenied   = 5
	StatusServer   = 7
)

// DeniedError is a refusal: the admin lacks permission, or the audit log
// cannot be written. Exit status 5.
type DeniedError struct{ Msg string }

func (e *DeniedError) Error() string { return e.Msg }

// ServerError is a /server: that is unknown, unreachable or refused.
// Exit status 7.
type ServerError struct{ Msg string }

func (e *ServerError) Error() string { return e.Msg }

// ExitStatus is the one place that turns an error into an exit status.
func ExitStatus(err error) int {
	var usage *UsageError
	var denied *DeniedError
	var server *ServerError
	switch {
	case err == nil:
		return StatusOK
	case errors.As(err, &usage):
		return StatusUsage
	case errors.As(err, &denied), errors.Is(err, sessions.ErrPrivilege):
		return StatusDenied
	case errors.As(err, &server):
		return StatusServer
	default:
		// Not found, not unique, or the session would not end.
		return StatusNotFound
	}
}
