package shell

import (
	"io"
	"slices"
	"sync"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

// shellLines keeps the query session line (no SERVER column, no terminal
// width, a blank mark) of each of the shell source's sessions, one after
// another in one array, slot by slot as the source numbers them
// (sessions.ShellSlots). A table of thousands of sessions is then read
// from contiguous memory, a run of consecutive live sessions at a time,
// instead of being gathered from a session, its memo and its line, each
// elsewhere on the heap: at 10,000 sessions that was most of the cost of
// a listing. A slot's line is made when a listing first finds the slot
// and never changes (a shell session's cells never do); when the source
// compacts its slots, the lines are carried over by ID into new arrays.
// Lines are only appended in place, beyond what earlier listings read,
// so a listing reads the arrays it was given without the lock.
type shellLines struct {
	mu    sync.Mutex
	gen   uint64 // the source's slot numbering the arrays follow
	ids   []int  // the slots' IDs at the last sync (the source's array)
	lines []byte
	// offs: slot i's line is lines[offs[i]:offs[i+1]], empty for a slot
	// already closed when it was synced (it never becomes live again).
	offs []int
	bad  []int // the slots whose line did not pass clean, ascending
	f    table // formats the lines; its line is only used under mu

	formatted, carried int // lines made, and carried over to a new numbering (for tests)
}

// linesView is what one listing reads: the slots and their lines as
// synced, none of it changed by later syncs.
type linesView struct {
	slots sessions.ShellSlots
	lines []byte
	offs  []int
	bad   []int
}

// sync brings the lines up to the source's slots as they are now and
// returns them.
func (l *shellLines) sync(src *sessions.ShellSource) linesView {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The slots are taken under mu, so each sync's numbering and length
	// are at least the last one's: the arrays only move forward.
	slots := src.Slots()
	if l.f.cols == nil {
		l.f.shape(VerbQuerySession, false, 0)
	}
	if l.offs == nil || slots.Gen != l.gen {
		l.renumber(&slots)
	}
	for i := len(l.offs) - 1; i < len(slots.IDs); i++ {
		l.add(&slots, i)
	}
	l.ids = slots.IDs
	return linesView{slots: slots, lines: l.lines, offs: l.offs, bad: l.bad}
}

// renumber makes new arrays for the slots of a new numbering, carrying
// over, by ID, the lines of the sessions that kept a slot. Listings may
// still be reading the old arrays.
func (l *shellLines) renumber(slots *sessions.ShellSlots) {
	oldIDs, oldLines, oldOffs, oldBad := l.ids, l.lines, l.offs, l.bad
	l.gen = slots.Gen
	l.lines = make([]byte, 0, len(oldLines))
	l.offs = append(make([]int, 0, len(slots.IDs)+1), 0)
	l.bad = nil
	j, b := 0, 0
	for i, id := range slots.IDs {
		for j < len(oldIDs) && oldIDs[j] < id {
			j++
		}
		if j == len(oldIDs) || oldIDs[j] != id || oldOffs[j] == oldOffs[j+1] {
			l.add(slots, i) // new since the last sync, or closed at it
			continue
		}
		l.lines = append(l.lines, oldLines[oldOffs[j]:oldOffs[j+1]]...)
		l.offs = append(l.offs, len(l.lines))
		for b < len(oldBad) && oldBad[b] < j {
			b++
		}
		if b < len(oldBad) && oldBad[b] == j {
			l.bad = append(l.bad, i)
		}
		l.carried++
	}
}

// add appends slot i's line: empty if its session has closed already.
func (l *shellLines) add(slots *sessions.ShellSlots, i int) {
	if slots.Live(i) {
		row := Row{Session: slots.Session(i)}
		if !l.f.format(&row) {
			l.bad = append(l.bad, i)
		}
		l.lines = append(l.lines, l.f.line...)
		l.formatted++
	}
	l.offs = append(l.offs, len(l.lines))
}

// write prints the query session table of others (every other source's
// sessions, in ID order) and of the shell source's sessions, merged by
// ID, the caller's own session (current, 0 for none) marked; buf is a
// buffer to reuse, or nil.
func (l *shellLines) write(w io.Writer, others []sessions.Session, src *sessions.ShellSource, current int, buf []byte) ([]byte, error) {
	var t table
	t.start(w, VerbQuerySession, false, 0, buf)
	v := l.sync(src)
	ids := v.slots.IDs
	mine := -1
	if i, ok := slices.BinarySearch(ids, current); ok && current != 0 {
		mine = i
	}
	from := 0
	for k := range others {
		to, _ := slices.BinarySearch(ids, others[k].ID)
		to = max(to, from)
		t.shellRuns(&v, from, to, mine)
		from = to
		t.row(&others[k], current != 0 && others[k].ID == current, nil)
	}
	t.shellRuns(&v, from, len(ids), mine)
	return t.buf, t.finish()
}

// shellRuns adds the lines of v's live slots in [from, to), a run of
// consecutive live slots at a time. Every write but a listing's last is a
// full chunk: each write is a packet and a wake-up of the client, so a
// short one (a header, the caller's line, the end of a run) costs about
// as much as a full one. A run longer than the room left in the chunk
// plus a whole chunk tops the chunk up and sends it, then goes to the
// writer from the kept lines themselves, a chunk's worth of whole lines
// per write; what is left, less than a chunk, is copied into the chunk
// with the lines around it, as a short run is.
func (t *table) shellRuns(v *linesView, from, to, mine int) {
	offs := v.offs
	for i := from; i < to && t.err == nil; {
		start, stop := v.slots.NextRun(i, to)
		for start < stop && t.err == nil {
			end := stop
			if start <= mine && mine < stop {
				end = mine // the lines before the caller's
			}
			if room := cap(t.buf) - len(t.buf); offs[end]-offs[start] >= room+tableChunk {
				if len(t.buf) > 0 {
					start = t.copyLines(v, start, v.fit(start, end, room), mine)
					t.flush()
				}
				for offs[end]-offs[start] >= tableChunk && t.err == nil {
					k := max(v.fit(start, end, tableChunk), start+1)
					t.write(v.lines[offs[start]:offs[k]], !v.badIn(start, k))
					t.reusable += k - start
					start = k
				}
				continue
			}
			// The most lines from start that fit in the chunk.
			k := v.fit(start, stop, cap(t.buf)-len(t.buf))
			if k == start {
				if len(t.buf) > 0 {
					t.flush()
					continue
				}
				k++ // a line longer than a chunk (none is): it grows the chunk
			}
			start = t.copyLines(v, start, k, mine)
		}
		i = stop
	}
}

// copyLines copies the lines of the slots [start, k) into the chunk,
// with the caller's > if its line is among them, and returns k.
func (t *table) copyLines(v *linesView, start, k, mine int) int {
	offs := v.offs
	at := len(t.buf)
	t.buf = append(t.buf, v.lines[offs[start]:offs[k]]...)
	if start <= mine && mine < k {
		if p := at + offs[mine] - offs[start]; t.buf[p] == ' ' {
			t.buf[p] = '>'
		}
	}
	t.checked = t.checked && !v.badIn(start, k)
	t.reusable += k - start
	return k
}

// fit returns the most slots from start, up to end, whose lines fit in
// room bytes: start itself when not even the first fits (the callers
// then take one line, or flush first).
func (v *linesView) fit(start, end, room int) int {
	k, exact := slices.BinarySearch(v.offs[start:end+1], v.offs[start]+room)
	if !exact {
		k--
	}
	return start + k
}

// badIn reports whether a line of the slots [start, end) did not pass
// clean.
func (v *linesView) badIn(start, end int) bool {
	b, _ := slices.BinarySearch(v.bad, start)
	return b < len(v.bad) && v.bad[b] < end
}
