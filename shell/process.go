package shell

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

// queryProcess is `query process`: the processes of the sessions the
// caller may see (every session is visible to every admin; seeing is not
// ending), as the sources that have processes report them. A session of
// tsadmin itself runs no program and lists none.
func (e *Env) queryProcess(ctx context.Context, c Caller, cmd Command, stdout, stderr io.Writer) error {
	rows, errs := e.rows(ctx, c, false) // process JSON has no can_logoff
	list := make([]sessions.Session, len(rows))
	for i, r := range rows {
		list[i] = r.Session
	}
	procs, perrs := e.Registry.Processes(ctx, list)
	for _, err := range append(errs, perrs...) {
		fmt.Fprintf(stderr, "%s: warning: %s\n", verbName(cmd), oneLine(err.Error()))
	}
	var out []Row
	for _, r := range rows {
		for _, p := range procs[r.ID] {
			row := r
			row.Process = p
			if processMatches(cmd, row) {
				out = append(out, row)
			}
		}
	}
	if len(out) == 0 && (cmd.HasID || cmd.Target != "" && cmd.Target != "*") {
		what := quoteWord(cmd.Target)
		if cmd.HasID {
			what = fmt.Sprintf("session ID %d", cmd.ID)
		}
		return sessions.Errorf(sessions.ErrNotFound, "no process found for %s", what)
	}
	if cmd.Format == FormatJSON {
		return WriteProcessJSON(stdout, out)
	}
	return WriteTable(stdout, cmd.Verb, out, false, c.Width)
}

// processMatches applies query process's one argument, as Windows reads
// it: * (or nothing) for every process, /id:nn for one session's, a
// number for one process ID, else a user name (the process's or the
// session's), a session name or a program name.
func processMatches(cmd Command, r Row) bool {
	if cmd.HasID {
		return r.ID == cmd.ID
	}
	t := cmd.Target
	if t == "" || t == "*" {
		return true
	}
	if pid, ok := sessions.ParseNumber(t); ok {
		return r.Process.PID == pid
	}
	return r.Process.User == t || r.User == t || strings.EqualFold(r.Name, t) || strings.EqualFold(r.Process.Command, t)
}

// JSONProcess is the stable JSON form of a process (query process
// /fo:json). Field names are part of the contract; add fields, never
// rename them.
type JSONProcess struct {
	Server      string  `json:"server"`
	PID         int     `json:"pid"`
	User        string  `json:"user"`         // the user the process runs as
	SessionID   int     `json:"session_id"`   // its session, as query session shows it
	SessionName string  `json:"session_name"` //
	SessionUser string  `json:"session_user"` // the user of the session (may differ from user: sshd runs as root)
	Command     string  `json:"command"`      // the process's name (comm), escaped by JSON
	StartTime   string  `json:"start_time"`   // RFC 3339, UTC; "" if unknown
	CPUSeconds  float64 `json:"cpu_seconds"`  // user + system CPU time, to 1/100 s
}

// WriteProcessJSON prints process rows as a JSON array of JSONProcess.
func WriteProcessJSON(w io.Writer, rows []Row) error {
	out := make([]JSONProcess, len(rows))
	for i, r := range rows {
		start := ""
		if !r.Process.Start.IsZero() {
			start = r.Process.Start.UTC().Format(time.RFC3339)
		}
		out[i] = JSONProcess{
			Server: r.Server, PID: r.Process.PID, User: r.Process.User,
			SessionID: r.ID, SessionName: r.Name, SessionUser: r.User,
			Command: r.Process.Command, StartTime: start,
			CPUSeconds: float64(r.Process.CPU.Round(10*time.Millisecond)) / float64(time.Second),
		}
	}
	return writeJSON(w, out)
}
