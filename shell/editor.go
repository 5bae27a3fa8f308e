package shell

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/term"
)

// editor is the interactive line editor: x/term's Terminal behind an
// input guard, with Tab completion and Ctrl-C.
//
// x/term releases its lock while it calls the reader and the completion
// callback; a panic there would unwind through ReadLine and kill the whole
// process with "sync: unlock of unlocked mutex", which recover cannot
// catch. So both are wrapped to turn a panic into an error or a no-op
// before it reaches x/term.
type editor struct {
	s    *Session
	t    *term.Terminal
	in   *inputGuard
	comp *completer
}

var errPasted = errors.New("pasted lines")

func newEditor(s *Session, onIdle func()) *editor {
	ed := &editor{s: s}
	ed.in = newInputGuard(s.ch, s.env.Idle(), onIdle)
	ed.t = term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{panicFreeReader{ed.in}, s.ch}, fmt.Sprintf("%s@%s> ", s.id.Name, s.env.Server))
	if p := s.pty; p != nil && p.Width > 0 && p.Height > 0 {
		ed.t.SetSize(p.Width, p.Height)
	}
	ed.comp = &completer{env: s.env, id: s.id, out: ed.t}
	ed.t.AutoCompleteCallback = ed.complete
	return ed
}

func (ed *editor) stop() { ed.in.stop() }

func (ed *editor) resize(w, h int) { ed.t.SetSize(w, h) }

// notice writes a line above the prompt.
func (ed *editor) notice(text string) { fmt.Fprintf(ed.t, "\n%s\n", text) }

// readLine reads one line; errPasted for a pasted block.
func (ed *editor) readLine() (string, error) {
	line, err := ed.t.ReadLine()
	if errors.Is(err, term.ErrPasteIndicator) {
		return "", errPasted
	}
	return line, err
}

// complete is x/term's AutoCompleteCallback, made panic-free.
func (ed *editor) complete(line string, pos int, key rune) (newLine string, newPos int, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ed.s.env.Log.Error("panic in completion recovered", "admin", ed.s.id.Name, "panic", fmt.Sprint(r))
			newLine, newPos, ok = "", 0, false
		}
	}()
	return ed.comp.complete(line, pos, key)
}

// panicFreeReader turns a panic in the input guard into an error, so that
// it never unwinds through x/term (see editor).
type panicFreeReader struct{ r io.Reader }

func (p panicFreeReader) Read(b []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("internal error: %v", r)
		}
	}()
	return p.r.Read(b)
}

// inputGuard wraps the channel for x/term. It turns the traps of
// x/term's ReadLine into errors that end the session: a zero-length read
// (x/term asks for zero bytes after an escape sequence longer than its
// buffer, and would spin), and a line longer than any command. It also
// counts idle time, and turns Ctrl-C into "drop the line".
type inputGuard struct {
	r       io.Reader
	idle    time.Duration
	timer   *time.Timer
	mu      sync.Mutex
	pending int    // bytes since the last CR or LF
	carry   []byte // translated input not yet handed to x/term
	failMsg string
}

// maxPending is how many bytes may arrive without a newline: a command
// line plus room for escape sequences of editing keys.
const maxPending = 4 * MaxLineBytes

var errInput = errors.New("input refused")

func newInputGuard(r io.Reader, idle time.Duration, onIdle func()) *inputGuard {
	g := &inputGuard{r: r, idle: idle}
	if idle > 0 {
		g.timer = time.AfterFunc(idle, onIdle)
	}
	return g
}

// stop stops the idle timer; calling it again does nothing.
func (g *inputGuard) stop() { g.pause() }

// pause stops the idle timer while a command runs; resume starts it anew.
func (g *inputGuard) pause() {
	if g.timer != nil {
		g.timer.Stop()
	}
}

func (g *inputGuard) resume() {
	if g.timer != nil {
		g.timer.Reset(g.idle)
	}
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
		if len(g.carry) == 0 {
			g.carry = nil // the array goes with it
		}
		return n, nil
	}
	// Read straight into x/term's buffer: an idle session, blocked here,
	// then holds no buffer of its own, and a keystroke allocates nothing
	// unless it is a Ctrl-C to translate.
	n, err := g.r.Read(p)
	if n == 0 && err == nil {
		return g.fail("empty read")
	}
	if n > 0 && g.timer != nil {
		g.timer.Reset(g.idle)
	}
	ctrlC := false
	for _, b := range p[:n] {
		switch b {
		case '\r', '\n':
			g.pending = 0
		case 3:
			g.pending = 0
			ctrlC = true
		default:
			g.pending++
		}
	}
	if g.pending > maxPending {
		return g.fail(fmt.Sprintf("the line is longer than %d bytes", maxPending))
	}
	if !ctrlC {
		return n, err
	}
	out := make([]byte, 0, n+8)
	for _, b := range p[:n] {
		if b == 3 {
			out = append(out, string(ctrlCKey)...)
			continue
		}
		out = append(out, b)
	}
	k := copy(p, out)
	if k < len(out) {
		g.carry = out[k:]
	}
	return k, err
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
