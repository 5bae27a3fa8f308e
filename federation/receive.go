package federation

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// Receiver is the peer side of a relay: it runs the commands that peers
// send for their admins. The admin is mapped with this server's own admins
// list and decided with its own roles; a relayed command is never relayed
// further.
type Receiver struct {
	Env *shell.Env
}

// Serve runs one relayed command on ch for the authenticated peer. It
// implements server.RelayedRunner.
func (r *Receiver) Serve(ctx context.Context, ch shell.Channel, peer, payload string) {
	stdout, stderr := shell.EscapeWriter(ch), shell.EscapeWriter(ch.Stderr())
	req, err := ParseRequest(payload)
	if err != nil {
		// Not audited as a command: there is no admin and no line.
		fmt.Fprintf(stderr, "tsadmin: a peer may only send relayed commands\n")
		ch.Exit(shell.StatusUsage)
		return
	}
	// The caller as the peer names them; the audit record says so, with
	// the peer, whether or not this server accepts the mapping.
	claimed := shell.Caller{
		// The peer's words, bounded: they reach the audit log.
		Identity: keys.Identity{Name: audit.Clip(req.Admin, 64), Fingerprint: audit.Clip(req.Fingerprint, 128), Method: "relayed"},
		Via:      peer, Mode: shell.ModeExec,
	}
	run := r.Env.Audited(func(ctx context.Context, c shell.Caller, line string, stdout, stderr io.Writer) shell.Outcome {
		if !strings.EqualFold(req.Via, peer) {
			err := &shell.DeniedError{Msg: fmt.Sprintf("access denied: the relay is %s, not %s", peer, shell.Clean(req.Via))}
			fmt.Fprintf(stderr, "tsadmin: %s\n", err.Msg)
			return shell.Outcome{Status: shell.ExitStatus(err), Err: err}
		}
		id, err := r.Env.Policy().Relayed(req.Vouched(), time.Now())
		if err != nil {
			denied := &shell.DeniedError{Msg: fmt.Sprintf("access denied on %s: %s", r.Env.Server, err)}
			fmt.Fprintf(stderr, "tsadmin: %s\n", denied.Msg)
			return shell.Outcome{Status: shell.ExitStatus(denied), Err: denied}
		}
		c.Identity = *id
		return r.Env.ParseAndRun(ctx, c, line, stdout, stderr)
	})
	out := run(ctx, claimed, req.Line, stdout, stderr)
	ch.Exit(out.Status)
}
