package shell

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// Channel is the subset of an SSH session channel that an admin's session
// uses. The transport (server/) implements it; the shell never sees SSH.
type Channel interface {
	io.ReadWriter
	// Stderr is the channel's extended data stream.
	Stderr() io.Writer
	// Exit sends the exit status and closes the channel. Only the first
	// call counts.
	Exit(status int)
	// Hangup closes the SSH connection the channel belongs to.
	Hangup()
}

// PTY is the terminal a client asked for with pty-req.
type PTY struct {
	Term          string
	Width, Height int
}

// noticeTimeout bounds how long a notice to a client (a logoff, a
// reload, a shutdown, /msg) may hold whoever sends it: a client that stops
// reading must never block a control path.
const noticeTimeout = 250 * time.Millisecond

// Session is one admin's tsadmin session: a command (exec), a script
// (stdin without a terminal) or the interactive shell. It is listed by
// the shell source while it runs.
type Session struct {
	env    *Env
	ch     Channel
	id     keys.Identity
	device string
	pty    *PTY
	row    *sessions.ShellSession
	out    io.Writer // stdout, escaped
	errOut io.Writer // stderr, escaped

	width    atomic.Int32
	noticing atomic.Bool // a notice is being written

	mu     sync.Mutex
	editor *editor // the interactive line editor, once it runs
	// size is the newest window size not yet given to the editor (when
	// resized is set); resizing is set while a goroutine gives it.
	size              [2]int
	resized, resizing bool
	// exited is set when the session has left the listing and sent its
	// exit status (exit); busy while one of its lines runs. The idle
	// timeout ends a session only when no line runs (expire), and no
	// line runs once it has ended (begin).
	exited, busy bool
}

// NewSession registers a session of the identity id, connected from
// device, on ch. pty is nil without a terminal. Run starts it.
func (e *Env) NewSession(ch Channel, id keys.Identity, device string, pty *PTY) *Session {
	s := &Session{env: e, ch: ch, id: id, device: device, pty: pty}
	var stdout, stderr io.Writer = ch, ch.Stderr()
	if pty != nil {
		stdout, stderr = crlf(stdout), crlf(stderr)
		s.width.Store(int32(pty.Width))
	}
	s.out, s.errOut = EscapeWriter(stdout), EscapeWriter(stderr)
	s.row = e.Shells.Add(id.Name, device, s)
	return s
}

// ID is the session's registry ID.
func (s *Session) ID() int { return s.row.ID() }

// Resize follows a window-change of the client's terminal. It never
// waits for the client: the editor's redraw is a write, which waits for
// window space, and Resize is called by the goroutine that serves the
// channel's requests. While that goroutine waits, x/crypto's mux cannot
// hand it the next request, so it stops reading the connection, and the
// window adjust (or the close) that would end the wait never arrives. The
// redraw runs on a goroutine of its own, one at a time, with the newest
// size.
func (s *Session) Resize(width, height int) {
	if s.pty == nil {
		return
	}
	s.width.Store(int32(width))
	s.mu.Lock()
	ed := s.editor
	s.size, s.resized = [2]int{width, height}, true
	start := ed != nil && !s.resizing
	s.resizing = s.resizing || start
	s.mu.Unlock()
	if start {
		go s.redraw(ed)
	}
}

// redraw gives the editor the newest size until no newer one came.
func (s *Session) redraw(ed *editor) {
	defer func() {
		if r := recover(); r != nil {
			s.env.Log.Error("panic recovered", "in", "resize", "panic", fmt.Sprint(r))
			s.mu.Lock()
			s.resizing = false
			s.mu.Unlock()
		}
	}()
	for {
		s.mu.Lock()
		size, resized := s.size, s.resized
		s.resized = false
		if !resized {
			s.resizing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		ed.resize(size[0], size[1])
	}
}

// Run runs the session to its end: the exec line when exec is set, else
// the interactive shell with a PTY, else a script. It sends the exit
// status and leaves the listing. A panic ends this session only, with
// StatusInternal and a line in the server log.
func (s *Session) Run(ctx context.Context, exec bool, line string) {
	defer s.row.Close()
	defer func() {
		if r := recover(); r != nil {
			s.env.Log.Error("panic recovered; the session ends", "admin", s.id.Name, "session", s.ID(),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			io.WriteString(s.errOut, "tsadmin: internal error; the session ends\n")
			s.exit(StatusInternal)
		}
	}()
	switch {
	case exec:
		s.runExec(ctx, line)
	case s.pty != nil:
		s.runInteractive(ctx)
	default:
		s.runScript(ctx)
	}
}

func (s *Session) caller(mode Mode) Caller {
	return Caller{Identity: s.id, Session: s.ID(), Mode: mode, Width: int(s.width.Load())}
}

// exec runs one line of this session.
func (s *Session) exec(ctx context.Context, mode Mode, line string, stdout, stderr io.Writer) Outcome {
	s.row.Touch()
	return s.env.Exec(ctx, s.caller(mode), line, stdout, stderr)
}

// exit leaves the listing, then sends the exit status: when the client
// sees the status (`ssh host cmd` returns), the session is no longer
// listed, and a listing run next does not show it.
func (s *Session) exit(status int) {
	s.mu.Lock()
	s.exited = true
	s.mu.Unlock()
	s.row.Close()
	s.ch.Exit(status)
}

// begin is called before a line of a script or of the shell runs: it
// reports false when the session has already ended, and the line must not
// run. The idle timeout may have ended it while the line arrived, and a
// client that ignores the exit status and the channel's close can go on
// sending: a session that is no longer listed must not act. end is
// called when the line has run.
func (s *Session) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy = !s.exited
	return s.busy
}

func (s *Session) end() {
	s.mu.Lock()
	s.busy = false
	s.mu.Unlock()
}

// expire is called by the idle timer: it reports whether the session
// ends now, which it does unless a line runs (the timer fired as the line
// arrived) or it has already ended.
func (s *Session) expire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := !s.busy && !s.exited
	s.exited = s.exited || ok
	return ok
}

// finish ends the session with status; when the command logged off the
// caller's own session, the connection closes too.
func (s *Session) finish(out Outcome, status int) {
	s.exit(status)
	if out.LoggedOff {
		s.ch.Hangup()
	}
}

// runExec is `ssh host logoff 12`: one line, its exit status.
func (s *Session) runExec(ctx context.Context, line string) {
	out := s.exec(ctx, ModeExec, line, s.out, s.errOut)
	s.finish(out, out.Status)
}

// runScript is `ssh host < commands.txt`: every line runs, in order, even
// after one fails; the status is that of the first failure, or 0.
func (s *Session) runScript(ctx context.Context) {
	in := &partialLine{r: s.ch}
	r := bufio.NewReaderSize(in, MaxLineBytes+2)
	status := StatusOK
	var sofar atomic.Int32 // status, for the idle timer
	var last Outcome
	// A script that stops sending without closing its input is ended
	// after the idle timeout, like an interactive session, with the
	// status it has so far. The timer does not run while a command does
	// (a logoff may wait out /delay).
	idle := s.env.Idle()
	timer := time.AfterFunc(idle, func() {
		if !s.expire() {
			return
		}
		status := int(sofar.Load())
		if n := in.pending.Load(); n > 0 {
			// A line that never ended is not run: the client may not
			// have finished it.
			s.Notify(fmt.Sprintf("tsadmin: idle timeout; the last line was not finished (%d bytes, not run)", n))
			status = ScriptStatus(status, StatusUsage)
		} else {
			s.Notify("tsadmin: idle timeout; closing the session")
		}
		s.exit(status)
	})
	defer timer.Stop()
	for {
		line, err := readScriptLine(r)
		timer.Stop()
		if errors.Is(err, errLineTooLong) {
			fmt.Fprintf(s.errOut, "tsadmin: the line is longer than %d bytes\n", MaxLineBytes)
			status = ScriptStatus(status, StatusUsage)
			sofar.Store(int32(status))
			timer.Reset(idle)
			continue
		}
		if line == "" && err != nil {
			break
		}
		if !s.begin() {
			return // the idle timeout ended the session
		}
		last = s.exec(ctx, ModeScript, line, s.out, s.errOut)
		s.end()
		status = ScriptStatus(status, last.Status)
		sofar.Store(int32(status))
		if last.End || err != nil || ctx.Err() != nil {
			break
		}
		timer.Reset(idle)
	}
	s.finish(last, status)
}

var errLineTooLong = errors.New("line too long")

// partialLine counts the bytes received since the last newline: a line
// the client has begun but not ended.
type partialLine struct {
	r       io.Reader
	pending atomic.Int64
}

func (p *partialLine) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if i := bytes.LastIndexByte(b[:n], '\n'); i >= 0 {
		p.pending.Store(int64(n - i - 1))
	} else {
		p.pending.Add(int64(n))
	}
	return n, err
}

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

// runInteractive is the shell with a PTY: prompt, editing, history,
// completion.
func (s *Session) runInteractive(ctx context.Context) {
	ed := newEditor(s, func() {
		if !s.expire() {
			return
		}
		s.Notify("tsadmin: idle timeout; closing the session")
		s.exit(StatusOK)
	})
	defer ed.stop()
	s.mu.Lock()
	s.editor = ed
	s.mu.Unlock()
	out := EscapeWriter(ed.t)
	fmt.Fprintf(out, "tsadmin on %s: you are %s (%s), session %d. Type help, or exit to leave.\n",
		s.env.Server, s.id.Name, s.id.Role, s.ID())
	var last Outcome
	for {
		line, err := ed.readLine()
		if errors.Is(err, errPasted) {
			// A pasted block arrives as lines that would each run: a
			// pasted logoff list must not end sessions unseen.
			fmt.Fprintf(out, "tsadmin: pasted lines are not run; type the command\n")
			continue
		}
		if err != nil {
			// Ctrl-D, the client went away, or the input was refused.
			msg := ed.in.failure()
			if msg != "" {
				fmt.Fprintf(out, "tsadmin: %s\n", msg)
			}
			s.finish(last, InteractiveStatus(msg != ""))
			return
		}
		if !s.begin() {
			return // the idle timeout ended the session
		}
		ed.in.pause() // no idle timeout while a command runs
		last = s.exec(ctx, ModeInteractive, line, out, out)
		s.end()
		ed.in.resume()
		if last.End || ctx.Err() != nil {
			break
		}
	}
	s.finish(last, InteractiveStatus(false))
}

// Kick implements sessions.ShellControl: another admin logged this
// session off. The notice is best effort; the connection closes
// regardless.
func (s *Session) Kick(by string) {
	msg := "tsadmin: this session was logged off"
	if by != "" {
		msg += " by " + by
	}
	s.Notify(msg)
	s.ch.Hangup()
}

// Notify implements sessions.ShellControl: it writes a line to the
// session's terminal (or stderr), best effort. It never holds the caller
// longer than noticeTimeout, even when the client has stopped reading,
// and a session has at most one notice in flight: the next is dropped.
func (s *Session) Notify(text string) {
	if !s.noticing.CompareAndSwap(false, true) {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer s.noticing.Store(false)
		defer func() { recover() }() // a write racing the channel's close
		s.mu.Lock()
		ed := s.editor
		s.mu.Unlock()
		if ed != nil {
			ed.notice(Clean(text))
			return
		}
		io.WriteString(s.errOut, text+"\n")
	}()
	select {
	case <-done:
	case <-time.After(noticeTimeout):
	}
}
