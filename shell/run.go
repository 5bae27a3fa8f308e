package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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

// Env is what commands run against: this server's name, sessions, policy,
// audit log and peers. One Env serves every session of the server.
type Env struct {
	Server   string
	Registry *sessions.Registry
	Shells   *sessions.ShellSource // tsadmin's own sessions, where admin sessions register
	Policy   func() *keys.Policy   // the policy in force (it changes on reload)
	Audit    *audit.Log
	Log      *slog.Logger
	Grace    time.Duration        // the host logoff grace; a logoff may take this long
	Idle     func() time.Duration // the idle timeout in force (limits.idle_timeout)
	// IdleAfter is the listing's threshold for idle (sessions.idle_after);
	// nil marks no session idle.
	IdleAfter func() time.Duration
	Peers     Relayer // federation; nil when no servers are configured

	// listings holds buffers of earlier listings (*listingBuffers), so
	// that listing thousands of sessions for every query allocates none.
	listings sync.Pool
	// shellLines holds the query session lines of the shell source's
	// sessions (Shells), for listings with no terminal width.
	shellLines shellLines
}

// listingBuffers are the buffers of one listing: the sessions and the
// chunk of the table being written.
type listingBuffers struct {
	list  []sessions.Session
	chunk []byte
}

// Relayer runs a command on another server (federation).
type Relayer interface {
	// Names lists the configured peers.
	Names() []string
	// Relay runs cmd on the named peer for the caller, copying its output.
	// A peer's own exit status comes back as a *PeerStatus; a peer that
	// could not be asked, as a *ServerError.
	Relay(ctx context.Context, server string, caller Caller, cmd Command, stdout, stderr io.Writer) error
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
	Status int   // the exit status, ExitStatus(Err)
	Err    error // why it failed, for the audit log; nil on success
	End    bool  // the caller's session ends now (exit, or logoff of itself)
	// LoggedOff: the caller logged off its own session; the session sends
	// the reply and the exit status, then closes the connection.
	LoggedOff bool
	// Words is the line as split; nil for a blank line or one that did not
	// parse.
	Words []string
}

func failed(err error) Outcome { return Outcome{Status: ExitStatus(err), Err: err} }

// Handler runs one command line for a caller. Every way a line reaches the
// server (exec, script, interactive, relayed by a peer) is a Handler
// wrapped once by Audited.
type Handler func(ctx context.Context, c Caller, line string, stdout, stderr io.Writer) Outcome

// Exec parses and runs one line, and audits it: what every mode calls.
func (e *Env) Exec(ctx context.Context, c Caller, line string, stdout, stderr io.Writer) Outcome {
	return e.Audited(e.ParseAndRun)(ctx, c, line, stdout, stderr)
}

// maxAuditLine is how much of a line that did not parse the audit log
// keeps; the rest is counted.
const maxAuditLine = 256

// maxAuditWord is how much of each word of a parsed line the audit log
// keeps.
const maxAuditWord = 128

// Audited wraps next so that each line it runs leaves exactly one audit
// record: who (and through which peer), the words, the status, why it
// failed and how long it took. A blank line leaves none.
func (e *Env) Audited(next Handler) Handler {
	return func(ctx context.Context, c Caller, line string, stdout, stderr io.Writer) Outcome {
		start := time.Now()
		out := next(ctx, c, line, stdout, stderr)
		if out.Words == nil && out.Status == StatusOK {
			return out
		}
		// What the admin typed is bounded in the record: each word, or
		// a line that did not parse, cut and escaped with its length.
		words := []string{cut(line, maxAuditLine)}
		if out.Words != nil {
			words = make([]string, len(out.Words))
			for i, w := range out.Words {
				words[i] = cut(w, maxAuditWord)
			}
		}
		reason := ""
		if out.Err != nil {
			reason = cut(oneLine(out.Err.Error()), maxAuditLine)
		}
		e.Audit.Command(audit.Command{
			Admin: c.Identity.Name, Session: sessionLabel(c), Via: c.Via, Server: e.Server,
			Words: words, Status: out.Status, Reason: reason, Took: time.Since(start),
		})
		return out
	}
}

// cut keeps at most n bytes of s, escaped, and says how long it was.
func cut(s string, n int) string {
	c := Clean(s[:min(len(s), n)])
	if len(c) <= n && len(s) <= n {
		return c
	}
	for len(c) > n || !utf8.ValidString(c) {
		c = c[:len(c)-1]
	}
	return fmt.Sprintf("%s... (%d bytes)", c, len(s))
}

// ParseAndRun parses one line and runs it. It is the innermost Handler.
func (e *Env) ParseAndRun(ctx context.Context, c Caller, line string, stdout, stderr io.Writer) Outcome {
	cmd, err := Parse(line)
	if err != nil {
		fmt.Fprintf(stderr, "tsadmin: %s\n", oneLine(err.Error()))
		return failed(err)
	}
	out := e.Run(ctx, c, cmd, stdout, stderr)
	out.Words = cmd.Words
	return out
}

func sessionLabel(c Caller) string {
	if c.Via != "" {
		return "relayed from " + c.Via
	}
	return strconv.Itoa(c.Session)
}

// Run carries out one parsed command and writes its output to stdout and
// its errors, one line each, to stderr.
func (e *Env) Run(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) Outcome {
	fail := func(err error) Outcome {
		fmt.Fprintf(stderr, "%s: %s\n", verbName(cmd), oneLine(err.Error()))
		return failed(err)
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
		if e.Peers == nil || len(e.Peers.Names()) == 0 {
			return fail(&ServerError{Msg: fmt.Sprintf("unknown server %s: no peers are configured (servers: in config.yaml)", quoteWord(cmd.Server))})
		}
		if cmd.Server == "*" && cmd.Verb == VerbLogoff {
			return e.logoffEverywhere(ctx, c, cmd, stdout, stderr)
		}
		if cmd.Server == "*" {
			return e.queryAll(ctx, c, cmd, stdout, stderr)
		}
		err := e.Peers.Relay(ctx, cmd.Server, c, cmd, stdout, stderr)
		var peer *PeerStatus
		if errors.As(err, &peer) {
			// The peer's own error lines came with its output.
			return failed(err)
		}
		if err != nil {
			return fail(err)
		}
		return Outcome{}
	}
	var err error
	var end bool
	switch cmd.Verb {
	case VerbQuerySession, VerbQueryUser:
		err = e.query(ctx, c, cmd, stdout, stderr)
	case VerbQueryProcess:
		err = e.queryProcess(ctx, c, cmd, stdout, stderr)
	case VerbLogoff:
		end, err = e.logoff(ctx, c, cmd, stdout, stderr)
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
	case VerbQueryProcess:
		return "query process"
	}
	return cmd.Verb
}

// oneLine keeps an error message to one clean line.
func oneLine(s string) string {
	return Clean(strings.ReplaceAll(s, "\n", " "))
}

// rows lists the local sessions as the caller sees them. CanLogoff, which
// only JSON prints, is decided when allow is set.
func (e *Env) rows(ctx context.Context, c Caller, allow bool) ([]Row, []error) {
	list, errs := e.Registry.List(ctx)
	var policy *keys.Policy
	if allow {
		policy = e.Policy()
	}
	idleAfter := time.Duration(-1)
	if e.IdleAfter != nil {
		idleAfter = e.IdleAfter()
	}
	rows := make([]Row, len(list))
	// Filled in place, field by field: a Row literal would be built and
	// then copied whole (with the GC's write barriers), which at
	// thousands of sessions cost more than the listing itself.
	for i := range list {
		r := &rows[i]
		r.Session = list[i]
		r.Server = e.Server
		r.Current = c.Session != 0 && r.ID == c.Session
		if allow {
			r.CanLogoff = policy.Allow(c.Identity, r.Session).Allowed
		}
		r.Idle = idleAfter >= 0 && r.IdleTime >= idleAfter
	}
	return rows, errs
}

// filterRows keeps the rows that a query's argument names: an ID, a
// session name or a user name.
func filterRows(rows []Row, target string) []Row {
	if target == "" {
		return rows
	}
	id, isID := sessions.ParseNumber(target)
	var keep []Row
	for _, r := range rows {
		if isID && r.ID == id || !isID && (strings.EqualFold(r.Name, target) || r.User == target) {
			keep = append(keep, r)
		}
	}
	return keep
}

func (e *Env) query(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) error {
	if cmd.Target == "" && cmd.Format != FormatJSON {
		return e.queryTable(ctx, c, cmd, stdout, stderr)
	}
	rows, errs := e.rows(ctx, c, cmd.Format == FormatJSON)
	for _, err := range errs {
		fmt.Fprintf(stderr, "%s: warning: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	return e.print(cmd, c, filterRows(rows, cmd.Target), false, stdout)
}

// queryTable is a query of every local session as a table, the common
// case and the one that grows with the server: the sessions go from the
// listing to the table with no Row made for each, in buffers kept from
// earlier listings.
func (e *Env) queryTable(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) error {
	bufs, _ := e.listings.Get().(*listingBuffers)
	if bufs == nil {
		bufs = new(listingBuffers)
	}
	defer e.listings.Put(bufs)
	// query session with no terminal width, the common case, copies the
	// shell source's lines from e.shellLines; the other sources' few
	// sessions are listed (bufs.list, sized for every session, is kept
	// for the other tables) and merged in.
	var list []sessions.Session
	var errs []error
	shells := cmd.Verb == VerbQuerySession && c.Width == 0 && e.Shells != nil
	if shells {
		list, errs, shells = e.Registry.ListOthers(ctx, nil, e.Shells)
	} else {
		bufs.list, errs = e.Registry.ListInto(ctx, bufs.list)
		list = bufs.list
	}
	for _, err := range errs {
		fmt.Fprintf(stderr, "%s: warning: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	var err error
	if shells {
		bufs.chunk, err = e.shellLines.write(stdout, list, e.Shells, c.Session, bufs.chunk)
	} else {
		bufs.chunk, err = writeSessions(stdout, cmd.Verb, list, c.Session, c.Width, bufs.chunk)
	}
	return err
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
	local, errs := e.rows(ctx, c, cmd.Format == FormatJSON)
	remote, peerErrs := e.Peers.QueryAll(ctx, c, cmd)
	for _, err := range errs {
		fmt.Fprintf(stderr, "%s: warning: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	for _, err := range peerErrs {
		fmt.Fprintf(stderr, "%s: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	rows := filterRows(append(local, remote...), cmd.Target)
	err := e.print(cmd, c, rows, true, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	if len(peerErrs) > 0 {
		// A partial answer: the servers that failed are named above.
		err = &ServerError{Msg: oneLine(errors.Join(peerErrs...).Error())}
	}
	return failed(err)
}
