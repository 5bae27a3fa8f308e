package shell

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

// hostSource is a source of host sessions whose IDs the registry gives
// (by key, at the first listing that sees them), like the host source.
type hostSource struct {
	mu   sync.Mutex
	list []sessions.Session
}

func (h *hostSource) Name() string { return "host" }

func (h *hostSource) List(context.Context) ([]sessions.Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.list), nil
}

func (h *hostSource) Logoff(context.Context, sessions.Session, sessions.LogoffRequest) error {
	return sessions.ErrNotFound
}

func (h *hostSource) add(name, user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.list = append(h.list, sessions.Session{Key: name, Name: name, User: user, State: sessions.Disc, Type: "sshd"})
}

// linesEnv is testEnv with a host source added after the shell source.
func linesEnv(t *testing.T) (*Env, *hostSource, Caller) {
	env, id := testEnv(t)
	host := new(hostSource)
	env.Registry.AddSource(host)
	return env, host, Caller{Identity: id, Mode: ModeExec}
}

// freshTable is the query session table formatted afresh from a listing
// of the registry, every row made anew (no memo, no kept line): what
// the table printed before any line was kept.
func freshTable(t *testing.T, env *Env, current int) string {
	t.Helper()
	list, errs := env.Registry.List(context.Background())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	rows := make([]Row, len(list))
	for i, s := range list {
		s.Memo = nil
		rows[i] = Row{Session: s, Current: s.ID == current}
	}
	var b bytes.Buffer
	if err := WriteTable(&b, VerbQuerySession, rows, false, 0); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func execQuery(t *testing.T, env *Env, c Caller, w io.Writer) {
	t.Helper()
	var stderr bytes.Buffer
	if out := env.Exec(context.Background(), c, "query session", w, &stderr); out.Status != StatusOK || stderr.Len() > 0 {
		t.Fatalf("query session: status %d, %v, stderr %q", out.Status, out.Err, stderr.String())
	}
}

// lineChecker is a client that checks every write of a table: it ends at
// a line's end (the escaping printer cleans whole lines) and is at most a
// chunk.
type lineChecker struct {
	t     *testing.T
	b     bytes.Buffer
	sizes []int
}

func (c *lineChecker) Write(p []byte) (int, error) {
	if len(p) > tableChunk || len(p) > 0 && p[len(p)-1] != '\n' {
		c.t.Errorf("a write of %d bytes ending %q", len(p), p[max(len(p)-8, 0):])
	}
	c.sizes = append(c.sizes, len(p))
	return c.b.Write(p)
}

// full checks that every write but the last was a full chunk, short of
// less than a line: a short write costs a packet and a wake-up of the
// client for a few lines.
func (c *lineChecker) full(step int) {
	c.t.Helper()
	for i, n := range c.sizes[:max(len(c.sizes)-1, 0)] {
		if n < tableChunk-maxLineBytes {
			c.t.Fatalf("step %d: write %d of %d was %d bytes, not a full chunk (writes %v)", step, i+1, len(c.sizes), n, c.sizes)
		}
	}
}

// maxLineBytes bounds a line of the test's tables.
const maxLineBytes = 256

// After random adds and closes of shell sessions, with host sessions
// between them by ID, the caller's own session among them or not, and
// the shell slots compacted again and again, query session prints
// exactly the table formatted afresh, whole lines at a time; the kept
// lines are carried over at each compaction, never formatted twice.
func TestShellLinesMatchFreshTableUnderChurn(t *testing.T) {
	env, host, c := linesEnv(t)
	rnd := rand.New(rand.NewPCG(15, 3))
	var open []*sessions.ShellSession
	added := 0
	add := func() {
		admin, device := "bob", "198.51.100."+strconv.Itoa(rnd.IntN(256))
		switch rnd.IntN(50) {
		case 0:
			admin = "名前" // not ASCII: the line is not checked clean
		case 1:
			device = "198.51.100.9\x1b]0;owned\x07" // escaped by Clean
		}
		open = append(open, env.Shells.Add(admin, device, nopShellControl{}))
		added++
	}
	for range 600 {
		add()
	}
	sawBad := false
	for step := range 300 {
		switch r := rnd.IntN(10); {
		case r < 4 && len(open) > 0:
			i := rnd.IntN(len(open))
			open[i].Close()
			open = slices.Delete(open, i, i+1)
		case r < 7:
			add()
		case r < 8:
			host.add("pts/"+strconv.Itoa(step), "carol")
		default: // a burst of closes: more than half go, the slots are compacted
			for len(open) > 40 && rnd.IntN(8) != 0 {
				i := rnd.IntN(len(open))
				open[i].Close()
				open = slices.Delete(open, i, i+1)
			}
		}
		// The caller's own session: none, the first, the last (each
		// in a long run of live lines), or any.
		c.Session = 0
		if len(open) > 0 {
			c.Session = []int{0, open[0].ID(), open[len(open)-1].ID(), open[rnd.IntN(len(open))].ID()}[step%4]
		}
		want := freshTable(t, env, c.Session)
		got := &lineChecker{t: t}
		execQuery(t, env, c, EscapeWriter(got))
		if got.b.String() != want {
			t.Fatalf("step %d: query session\n%s\nwant\n%s", step, got.b.String(), want)
		}
		got.full(step)
		if strings.ContainsAny(got.b.String(), "\x1b\x07") {
			t.Fatal("a control character reached the client")
		}
		sawBad = sawBad || strings.Contains(want, "名前")
	}
	if !sawBad {
		t.Error("no listing had a line that is not clean ASCII")
	}
	l := &env.shellLines
	if l.carried == 0 || l.gen == 0 {
		t.Errorf("slots renumbered %d times, %d lines carried over; want both", l.gen, l.carried)
	}
	// A session is formatted once, when first listed (or never, if it
	// closed first), then carried over.
	if l.formatted > added {
		t.Errorf("%d lines formatted for %d sessions", l.formatted, added)
	}
}

// The kept lines follow the shell source's compaction: once more than
// half the sessions have closed, the arrays hold only the live sessions'
// lines, carried over (not formatted again), and a listing started on
// the old arrays reads them unchanged.
func TestShellLinesCompact(t *testing.T) {
	env, _, c := linesEnv(t)
	var open []*sessions.ShellSession
	for range 100 {
		open = append(open, env.Shells.Add("bob", "198.51.100.9", nopShellControl{}))
	}
	before := env.shellLines.sync(env.Shells)
	oldLines := slices.Clone(before.lines)
	if n := len(before.offs) - 1; n != 100 {
		t.Fatalf("%d slots synced, want 100", n)
	}
	for i, s := range open {
		if i%2 == 1 {
			s.Close() // 50 of 100: not yet more than half
		}
	}
	if mid := env.shellLines.sync(env.Shells); mid.slots.Gen != before.slots.Gen || len(mid.offs) != 101 {
		t.Fatalf("renumbered with half the sessions closed")
	}
	open[0].Close() // 51: the source compacts
	after := env.shellLines.sync(env.Shells)
	if after.slots.Gen == before.slots.Gen {
		t.Fatal("closing 75 of 100 sessions did not renumber the slots")
	}
	if n := len(after.offs) - 1; n != 49 || len(after.slots.IDs) != 49 {
		t.Fatalf("%d lines for %d slots after compaction, want 49", n, len(after.slots.IDs))
	}
	for i, id := range after.slots.IDs {
		if want := open[2*i+2].ID(); id != want {
			t.Fatalf("slot %d is ID %d, want %d", i, id, want)
		}
		line := string(after.lines[after.offs[i]:after.offs[i+1]])
		if want := fmt.Sprintf(" ssh#%d ", id); !strings.HasPrefix(line, want) {
			t.Fatalf("slot %d (ID %d) holds the line %q", i, id, line)
		}
	}
	if env.shellLines.formatted != 100 || env.shellLines.carried != 49 {
		t.Errorf("%d lines formatted and %d carried, want 100 and 49", env.shellLines.formatted, env.shellLines.carried)
	}
	if !bytes.Equal(before.lines, oldLines) {
		t.Error("compaction changed the lines an earlier listing reads")
	}
	want := freshTable(t, env, 0)
	var got bytes.Buffer
	execQuery(t, env, c, &got)
	if got.String() != want {
		t.Fatalf("after compaction:\n%s\nwant\n%s", got.String(), want)
	}
}

// shellLine is the query session line of shell session id of user from
// device, formatted afresh.
func shellLine(id int, user, device string) string {
	var b strings.Builder
	WriteTable(&b, VerbQuerySession, []Row{{Session: sessions.Session{ID: id, Name: "ssh#" + strconv.Itoa(id),
		User: user, State: sessions.Active, Type: sessions.ShellType, Device: device}}}, false, 0)
	_, line, _ := strings.Cut(strings.TrimSuffix(b.String(), "\n"), "\n")
	return line
}

// Listings that run at once, while sessions are added and closed (and
// the slots compacted), each list every session open throughout exactly
// once, never one closed before the listing began, in ID order, each
// line the session's own.
func TestShellLinesWhileSessionsComeAndGo(t *testing.T) {
	env, host, c := linesEnv(t)
	for range 30 {
		defer env.Shells.Add("alice", "192.0.2.7", nopShellControl{}).Close()
	}
	host.add("pts/1", "carol")
	want := map[int]string{} // the sessions open throughout: ID -> line
	for _, line := range strings.Split(strings.TrimSuffix(freshTable(t, env, 0), "\n"), "\n")[1:] {
		id, _ := strconv.Atoi(strings.Fields(line)[2])
		want[id] = line
	}
	if len(want) != 31 {
		t.Fatalf("%d sessions listed, want 31", len(want))
	}
	quit := make(chan struct{})
	var churners sync.WaitGroup
	for range 2 { // many adds and closes: the slots compact often
		churners.Go(func() {
			for {
				select {
				case <-quit:
					return
				default:
					env.Shells.Add("bob", "198.51.100.9", nopShellControl{}).Close()
				}
			}
		})
	}
	errs := make(chan error, 2)
	var listings sync.WaitGroup
	for range 2 {
		listings.Go(func() { errs <- listRepeatedly(env, c, want) })
	}
	listings.Wait()
	close(quit)
	churners.Wait()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// listRepeatedly lists 200 times, each time just after a session closed,
// and checks each listing against want (the sessions open throughout).
func listRepeatedly(env *Env, c Caller, want map[int]string) error {
	for range 200 {
		gone := env.Shells.Add("dave", "203.0.113.1", nopShellControl{})
		gone.Close()
		var out, stderr bytes.Buffer
		if o := env.Exec(context.Background(), c, "query session", &out, &stderr); o.Status != StatusOK {
			return fmt.Errorf("status %d: %v", o.Status, o.Err)
		}
		listed, last := map[int]int{}, 0
		for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")[1:] {
			id, err := strconv.Atoi(strings.Fields(line)[2])
			if err != nil || id <= last {
				return fmt.Errorf("line %q out of ID order after %d", line, last)
			}
			last = id
			listed[id]++
			w, ok := want[id]
			if !ok { // a churner's, or the other listing's
				w = shellLine(id, "bob", "198.51.100.9")
				if strings.Contains(line, " dave ") {
					w = shellLine(id, "dave", "203.0.113.1")
				}
			}
			if line != w {
				return fmt.Errorf("ID %d: line %q, want %q", id, line, w)
			}
		}
		for id := range want {
			if listed[id] != 1 {
				return fmt.Errorf("session %d, open throughout, listed %d times", id, listed[id])
			}
		}
		if listed[gone.ID()] != 0 {
			return fmt.Errorf("session %d, closed before the listing, is listed", gone.ID())
		}
	}
	return nil
}

// A run of kept lines exactly as long as the room left plus a chunk, or a
// byte either side, with the caller's line at the first or last slot, at
// the chunk boundary or not there, is written byte for byte, and every
// write but the last is a full chunk.
func TestShellRunsAtChunkBoundaries(t *testing.T) {
	src := sessions.NewShellSource(sessions.NewRegistry())
	for range 1200 {
		src.Add("bob", "x", nopShellControl{})
	}
	slots := src.Slots()
	var h table
	h.start(io.Discard, VerbQuerySession, false, 0, nil)
	hdr := len(h.buf)
	for x := 1; x <= 130; x++ {
		for _, extra := range []int{-64, -1, 0, 1, 64} {
			total := 2*tableChunk - hdr + extra
			n := 1 + (total-x)/64
			if (total-x)%64 != 0 {
				continue
			}
			lens := []int{x}
			for range n - 1 {
				lens = append(lens, 64)
			}
			for _, mine := range []int{-1, 0, 1, n / 2, n - 2, n - 1, n, (tableChunk - hdr - x) / 64, (tableChunk-hdr-x)/64 + 1} {
				v := linesView{slots: slots, offs: []int{0}}
				for i := range slots.IDs {
					if i < len(lens) {
						v.lines = append(v.lines, ' ')
						v.lines = append(v.lines, bytes.Repeat([]byte("a"), lens[i]-2)...)
						v.lines = append(v.lines, '\n')
					}
					v.offs = append(v.offs, len(v.lines))
				}
				var got rawChecker
				var tb table
				tb.start(EscapeWriter(&got), VerbQuerySession, false, 0, nil)
				want := append([]byte(nil), tb.buf...)
				tb.shellRuns(&v, 0, len(lens), mine)
				tb.finish()
				for i := range lens {
					l := v.lines[v.offs[i]:v.offs[i+1]]
					if i == mine {
						want = append(want, '>')
						l = l[1:]
					}
					want = append(want, l...)
				}
				if !bytes.Equal(got.b.Bytes(), want) {
					t.Fatalf("x=%d extra=%d mine=%d: differs", x, extra, mine)
				}
				for i, s := range got.sizes[:len(got.sizes)-1] {
					if s > tableChunk || s < tableChunk-64 {
						t.Fatalf("x=%d extra=%d mine=%d: write %d of %v", x, extra, mine, i, got.sizes)
					}
				}
			}
		}
	}
}

// rawChecker records a table's writes as they come.
type rawChecker struct {
	b     bytes.Buffer
	sizes []int
}

func (c *rawChecker) Write(p []byte) (int, error) {
	c.sizes = append(c.sizes, len(p))
	return c.b.Write(p)
}
