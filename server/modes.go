package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/tsadmin-dev/tsadmin/federation"
	"github.com/tsadmin-dev/tsadmin/shell"
)

func (c *channel) caller(mode shell.Mode) shell.Caller {
	return shell.Caller{
		Identity: c.v.id,
		Session:  c.shell.ID(),
		Mode:     mode,
		Width:    int(c.width.Load()),
	}
}

// runLine parses and runs one line; every mode comes through here.
func (c *channel) runLine(ctx context.Context, mode shell.Mode, line string, stdout, stderr io.Writer) shell.Outcome {
	c.shell.Touch()
	cmd, err := shell.Parse(line)
	if err != nil {
		fmt.Fprintf(stderr, "tsadmin: %s\n", err)
		c.srv.audit.Command(c.v.id.Name, fmt.Sprint(c.shell.ID()), c.srv.env.Server, []string{shell.Clean(line)}, shell.ExitStatus(err), 0)
		return shell.Outcome{Status: shell.ExitStatus(err)}
	}
	return c.srv.env.Run(ctx, c.caller(mode), cmd, stdout, stderr)
}

// finish ends the session with status; when the command logged off the
// caller's own session, the connection closes too.
func (c *channel) finish(out shell.Outcome, status int) {
	c.exit(status)
	if out.LoggedOff {
		c.conn.netConn.Close()
	}
}

// runExec is `ssh host logoff 12`: one line, its exit status.
func (c *channel) runExec(ctx context.Context, raw string, pty bool) {
	var stdout, stderr io.Writer = c.ch, c.ch.Stderr()
	if pty {
		stdout, stderr = crlf(stdout), crlf(stderr)
	}
	out := c.runLine(ctx, shell.ModeExec, raw, stdout, stderr)
	c.finish(out, out.Status)
}

// runRelayed runs a command that a peer relays for one of its admins. The
// admin is mapped with this server's own admins list and decided with its
// own roles; the command may not be relayed further.
func (c *channel) runRelayed(ctx context.Context, raw string) {
	stderr := c.ch.Stderr()
	req, err := federation.ParseRequest(raw)
	if err != nil {
		fmt.Fprintf(stderr, "tsadmin: a peer may only send relayed commands\n")
		c.exit(shell.StatusUsage)
		return
	}
	peer := c.v.id.Peer
	audit := func(status int, reason string) {
		c.srv.audit.Event("relayed", slog.String("peer", peer), slog.String("admin", req.Admin),
			slog.String("fingerprint", req.Fingerprint), slog.String("line", shell.Clean(req.Line)),
			slog.Int("status", status), slog.String("reason", reason))
	}
	if !strings.EqualFold(req.Via, peer) {
		audit(shell.StatusDenied, "via does not name the authenticated peer")
		fmt.Fprintf(stderr, "tsadmin: access denied: the relay is %s, not %s\n", peer, shell.Clean(req.Via))
		c.exit(shell.StatusDenied)
		return
	}
	id, err := c.srv.policy.Load().Relayed(req.Vouched(), time.Now())
	if err != nil {
		audit(shell.StatusDenied, err.Error())
		fmt.Fprintf(stderr, "tsadmin: access denied on %s: %s\n", c.srv.env.Server, shell.Clean(err.Error()))
		c.exit(shell.StatusDenied)
		return
	}
	caller := shell.Caller{Identity: *id, Via: peer, Mode: shell.ModeExec}
	cmd, err := shell.Parse(req.Line)
	if err != nil {
		audit(shell.ExitStatus(err), err.Error())
		fmt.Fprintf(stderr, "tsadmin: %s\n", err)
		c.exit(shell.ExitStatus(err))
		return
	}
	out := c.srv.env.Run(ctx, caller, cmd, c.ch, stderr)
	audit(out.Status, "")
	c.exit(out.Status)
}

// runScript is `ssh host < commands.txt`: every line runs, in order, even
// after one fails; the status is that of the first failure, or 0.
func (c *channel) runScript(ctx context.Context) {
	r := bufio.NewReaderSize(c.ch, shell.MaxLineBytes+2)
	status := 0
	var last shell.Outcome
	// A script that stops sending without closing its input is ended
	// after the idle timeout, like an interactive session.
	idle := c.srv.cfg.Load().Limits.IdleTimeout.Duration
	timer := time.AfterFunc(idle, func() {
		c.notify("tsadmin: idle timeout; closing the session")
		c.ch.Close()
	})
	defer timer.Stop()
	for {
		line, err := readScriptLine(r)
		timer.Reset(idle)
		if errors.Is(err, errLineTooLong) {
			fmt.Fprintf(c.ch.Stderr(), "tsadmin: the line is longer than %d bytes\n", shell.MaxLineBytes)
			if status == 0 {
				status = shell.StatusUsage
			}
			continue
		}
		if line == "" && err != nil {
			break
		}
		last = c.runLine(ctx, shell.ModeScript, line, c.ch, c.ch.Stderr())
		if last.Status != 0 && status == 0 {
			status = last.Status
		}
		if last.End || err != nil || ctx.Err() != nil {
			break
		}
	}
	c.finish(last, status)
}

var errLineTooLong = errors.New("line too long")

// readScriptLine reads one line of a script, without its newline (and a
// CR before it). The last line needs no newline. An over-long line is
// skipped up to its newline and reported as errLineTooLong.
func readScriptLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = r.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		return "", errLineTooLong
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	return s, err
}

// crlf turns \n into \r\n for a terminal in raw mode.
func crlf(w io.Writer) io.Writer { return crlfWriter{w} }

type crlfWriter struct{ w io.Writer }

func (c crlfWriter) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// runInteractive is the shell with a PTY: prompt, editing, history.
func (c *channel) runInteractive(ctx context.Context) {
	cfg := c.srv.cfg.Load()
	in := newInputGuard(c.ch, cfg.Limits.IdleTimeout.Duration, func() {
		c.notify("tsadmin: idle timeout; closing the session")
		c.exit(0)
	})
	defer in.stop()
	t := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{in, c.ch}, fmt.Sprintf("%s@%s> ", c.v.id.Name, c.srv.env.Server))
	c.mu.Lock()
	p := c.pty
	c.winch = func(w, h int) { t.SetSize(w, h) }
	c.notifyFn = func(text string) { fmt.Fprintf(t, "\n%s\n", text) }
	c.mu.Unlock()
	if p.Columns > 0 && p.Rows > 0 {
		t.SetSize(clampDim(p.Columns), clampDim(p.Rows))
	}
	comp := &completer{c: c, t: t}
	t.AutoCompleteCallback = comp.complete

	role := c.v.id.Role
	fmt.Fprintf(t, "tsadmin on %s: you are %s (%s), session %d. Type help, or exit to leave.\n",
		c.srv.env.Server, c.v.id.Name, role, c.shell.ID())
	// The session's exit status is 0 for exit, Ctrl-D and logoff, whatever
	// the last command's was; 2 when the input itself was refused.
	var out shell.Outcome
	status := 0
	for {
		line, err := t.ReadLine()
		if errors.Is(err, term.ErrPasteIndicator) {
			// A pasted block arrives as lines that would each run: a
			// pasted logoff list must not end sessions unseen.
			fmt.Fprintf(t, "tsadmin: pasted lines are not run; type the command\n")
			continue
		}
		if err != nil {
			// Ctrl-D, the client went away, or the input was refused.
			if msg := in.failure(); msg != "" {
				fmt.Fprintf(t, "tsadmin: %s\n", msg)
				status = shell.StatusUsage
			}
			break
		}
		out = c.runLine(ctx, shell.ModeInteractive, line, t, t)
		if out.End || ctx.Err() != nil {
			break
		}
	}
	c.finish(out, status)
}

// inputGuard wraps the channel for x/term. It turns the traps of
// x/term's ReadLine into errors that end the session: a zero-length read
// (x/term asks for zero bytes after an escape sequence longer than its
// buffer, and would spin), and a line longer than any command. It also
// counts idle time, and turns Ctrl-C into "drop the line".
type inputGuard struct {
	r        io.Reader
	idle     time.Duration
	timer    *time.Timer
	mu       sync.Mutex
	pending  int    // bytes since the last CR or LF
	carry    []byte // translated input not yet handed to x/term
	failMsg  string
	stopOnce sync.Once
}

// maxPending is how many bytes may arrive without a newline: a command
// line plus room for escape sequences of editing keys.
const maxPending = 4 * shell.MaxLineBytes

var errInput = errors.New("input refused")

func newInputGuard(r io.Reader, idle time.Duration, onIdle func()) *inputGuard {
	g := &inputGuard{r: r, idle: idle}
	if idle > 0 {
		g.timer = time.AfterFunc(idle, onIdle)
	}
	return g
}

func (g *inputGuard) stop() {
	g.stopOnce.Do(func() {
		if g.timer != nil {
			g.timer.Stop()
		}
	})
}

func (g *inputGuard) fail(msg string) (int, error) {
	g.mu.Lock()
	g.failMsg = msg
	g.mu.Unlock()
	return 0, errInput
}

func (g *inputGuard) failure() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failMsg
}

// ctrlCKey is what Ctrl-C is turned into on its way to x/term: a rune
// that x/term hands to the completion callback, which clears the line.
// x/term itself would end ReadLine with io.EOF, the same as Ctrl-D.
const ctrlCKey = '\uE003'

func (g *inputGuard) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return g.fail("an escape sequence was too long")
	}
	if len(g.carry) > 0 {
		n := copy(p, g.carry)
		g.carry = g.carry[n:]
		return n, nil
	}
	buf := make([]byte, len(p))
	n, err := g.r.Read(buf)
	if n == 0 && err == nil {
		return g.fail("empty read")
	}
	if n > 0 && g.timer != nil {
		g.timer.Reset(g.idle)
	}
	out := make([]byte, 0, n+8)
	for _, b := range buf[:n] {
		switch b {
		case '\r', '\n':
			g.pending = 0
		case 3:
			g.pending = 0
			out = append(out, string(ctrlCKey)...)
			continue
		default:
			g.pending++
		}
		out = append(out, b)
	}
	if g.pending > maxPending {
		return g.fail(fmt.Sprintf("the line is longer than %d bytes", maxPending))
	}
	k := copy(p, out)
	g.carry = out[k:]
	return k, err
}
