package shell

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

// Row is one session as printed: the session, and what the caller may know
// about it.
type Row struct {
	sessions.Session
	Server    string // the server it is on, for /server:*
	Current   bool   // the caller's own current session
	CanLogoff bool   // Allow would let the caller log it off
	Idle      bool   // no input for sessions.idle_after or longer
	// Process is one process of the session, for query process; zero
	// for the session listings.
	Process sessions.Process
}

// Clean neutralises text from outside (user names, host names, terminal
// names, peers' output) so that it cannot move the admin's cursor, retitle
// their terminal or hide itself: control characters, escape sequences and
// invisible format characters are shown escaped (\x1b, \u202e), and invalid
// UTF-8 bytes as \xNN.
func Clean(s string) string {
	if printableASCII(s) {
		return s // the common case, without decoding runes
	}
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) && r != ' ' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == ' ' || unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

// printableASCII reports whether s is all printable ASCII (space to ~),
// which Clean leaves as it is and whose length in runes is its length.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// fit cuts s (already Clean) to width runes, marking a cut with ~ so that
// a truncated name is never mistaken for a whole one.
func fit(s string, width int) string {
	if len(s) <= width || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "~"
}

// column is one column of a table at a fixed place: the cells of every row
// start (or, right-aligned, end) at the header's own column, so that
// scripts written for Windows can cut the lines at fixed offsets.
type column struct {
	title string
	gap   int // spaces before the column (after the > marker for the first)
	width int // the cells' width; 0 for the last column (not padded)
	right bool
	value func(Row) string
}

// The columns of quser and qwinsta, at the offsets Windows prints them:
//
//	USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME
//	SESSIONNAME       USERNAME                 ID  STATE   TYPE        DEVICE
//
// A user name is cut to 20 characters, a session name to 15 and a type to
// 10, the last with a ~ so that a cut name is never taken for a whole one
// (Windows cuts silently; /fo:json has every name whole). An ID or idle
// time too long for its field is never cut: it takes the spaces to its
// left, then cuts the column before it, so that it still ends at its
// header's column.
var (
	colServer  = column{"SERVER", 0, 12, false, func(r Row) string { return r.Server }}
	colUser    = column{"USERNAME", 2, 20, false, func(r Row) string { return r.User }}
	colName    = column{"SESSIONNAME", 2, 15, false, func(r Row) string { return r.Name }}
	colID      = column{"ID", 1, 5, true, func(r Row) string { return strconv.Itoa(r.ID) }}
	colState   = column{"STATE", 2, 6, false, func(r Row) string { return string(r.State) }}
	colIdle    = column{"IDLE TIME", 2, 9, true, func(r Row) string { return idleText(r.IdleTime) }}
	colLogon   = column{"LOGON TIME", 2, 0, false, func(r Row) string { return r.LogonTime.Local().Format("2006-01-02 15:04") }}
	colType    = column{"TYPE", 2, 10, false, func(r Row) string { return r.Type }}
	colDevice  = column{"DEVICE", 2, 0, false, func(r Row) string { return r.Device }}
	colPUser   = column{"USERNAME", 0, 20, false, func(r Row) string { return r.Process.User }}
	colPID     = column{"PID", 2, 5, true, func(r Row) string { return strconv.Itoa(r.Process.PID) }}
	colImage   = column{"IMAGE", 2, 0, false, func(r Row) string { return r.Process.Command }}
	maxColumns = 40 // the last column is cut to this width

	quserColumns   = []column{colUser.after(0), colName, colID, colState, colIdle, colLogon}
	qwinstaColumns = []column{colName.after(0), colUser.after(3), colID.after(2), colState, colType, colDevice}
	// query process, as Windows prints it:
	//
	//	USERNAME              SESSIONNAME         ID    PID  IMAGE
	//
	// USERNAME is the process's user, IMAGE its name (comm).
	qprocessColumns = []column{colPUser, colName, colID.after(2), colPID, colImage}
)

// after returns c with gap spaces before it.
func (c column) after(gap int) column {
	c.gap = gap
	return c
}

// WriteTable prints rows as the `query session` table (verb
// VerbQuerySession) or the `query user` table, with a SERVER column first
// when withServer is set (the other columns then keep their places, 14
// further right). width is the terminal width (0 for no limit): when the
// rows are wider, they are cut so that they never wrap.
func WriteTable(w io.Writer, verb string, rows []Row, withServer bool, width int) error {
	return writeTable(w, verb, rows, withServer, width, nil)
}

// writeTable is WriteTable, taking the lines of query session rows from
// lines when it has them (nil for none).
func writeTable(w io.Writer, verb string, rows []Row, withServer bool, width int, lines *lineCache) error {
	if verb != VerbQuerySession {
		lines = nil // only qwinsta's cells are all in lineKey
	}
	table := qwinstaColumns
	switch verb {
	case VerbQueryUser:
		table = quserColumns
	case VerbQueryProcess:
		table = qprocessColumns
	}
	var cols []column
	if withServer {
		cols = append(cols, colServer, table[0].after(2))
		cols = append(cols, table[1:]...)
	} else {
		cols = table
	}
	var b bytes.Buffer
	b.Grow((len(rows) + 1) * 96) // a query session line of ssh#N is about 85 bytes
	var line []byte
	texts := make([]string, len(cols))
	gaps := make([]int, len(cols))
	widths := make([]int, len(cols))
	writeLine := func(mark byte) {
		for i, c := range cols {
			gaps[i], widths[i] = c.gap, c.width
		}
		// A right-aligned value too long for its field takes the spaces
		// before it (keeping one), then cuts the column before it.
		for i := 1; i < len(cols); i++ {
			over := utf8.RuneCountInString(texts[i]) - widths[i]
			if !cols[i].right || over <= 0 {
				continue
			}
			take := min(over, gaps[i]-1)
			gaps[i] -= take
			widths[i] += take
			over -= take
			widths[i-1] -= over
			widths[i] += over
		}
		line = append(line[:0], mark)
		for i, c := range cols {
			line = appendSpaces(line, gaps[i])
			v := texts[i]
			if widths[i] > 0 {
				v = fit(v, max(widths[i], 1))
			} else {
				v = fit(v, maxColumns)
			}
			pad := widths[i] - utf8.RuneCountInString(v)
			if c.right {
				line = appendSpaces(line, pad)
			}
			line = append(line, v...)
			if !c.right {
				line = appendSpaces(line, pad)
			}
		}
		line = bytes.TrimRight(line, " ")
		if width > 0 && utf8.RuneCount(line) > width {
			// Cut to the terminal: rows never wrap.
			cut, n := 0, 0
			for cut < len(line) && n < width-1 {
				_, size := utf8.DecodeRune(line[cut:])
				cut += size
				n++
			}
			line = append(line[:cut], '~')
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	// The cache is held while the lines are formatted, never while they
	// are written: a client that stops reading must not hold up the
	// listings of others.
	func() {
		if lines != nil {
			lines.mu.Lock()
			defer lines.mu.Unlock()
			lines.gen++
		}
		for i, c := range cols {
			texts[i] = c.title
		}
		writeLine(' ')
		for _, row := range rows {
			var key lineKey
			if lines != nil {
				key = lineKey{row.Server, row.Name, row.User, row.ID, row.State, row.Type, row.Device, row.Current, withServer, width}
				if l, ok := lines.m[key.slot()]; ok && l.key == key {
					l.gen = lines.gen
					b.Write(l.line)
					continue
				}
			}
			mark := byte(' ')
			if row.Current {
				mark = '>'
			}
			for i, c := range cols {
				texts[i] = Clean(c.value(row))
			}
			start := b.Len()
			writeLine(mark)
			if lines != nil {
				lines.put(key, b.Bytes()[start:], len(rows))
			}
		}
	}()
	_, err := w.Write(b.Bytes())
	return err
}

// lineCache keeps the printed lines of query session rows, so that a
// listing of thousands of sessions formats only those that changed: the
// table has no column that changes with time (no idle time), so a
// session's line stays the same until one of its cells does.
type lineCache struct {
	mu  sync.Mutex
	gen uint64 // tables written so far
	m   map[lineSlot]*cachedLine
}

// lineKey is everything a query session line depends on: the cells of
// qwinstaColumns and colServer, the > mark, and the table's shape.
type lineKey struct {
	server, name, user  string
	id                  int
	state               sessions.State
	typ, device         string
	current, withServer bool
	width               int
}

// lineSlot is where a line is kept: the row's identity and the table's
// shape, a few words to hash. The line is used only if its whole lineKey
// matches; comparing the cells is cheaper than hashing them (the strings
// are usually the very same ones, compared by pointer), and a session
// whose cells changed takes over its own slot.
type lineSlot struct {
	server              string
	id                  int
	current, withServer bool
	width               int
}

func (k lineKey) slot() lineSlot {
	return lineSlot{k.server, k.id, k.current, k.withServer, k.width}
}

type cachedLine struct {
	key  lineKey
	line []byte
	gen  uint64 // the newest table that used it
}

// put keeps a copy of line. When the cache holds more than twice the
// lines of the table being written (rows) and some room, the lines that
// the newest table has not used are dropped, so that it stays bounded by
// the sessions that exist.
func (c *lineCache) put(key lineKey, line []byte, rows int) {
	if c.m == nil {
		c.m = make(map[lineSlot]*cachedLine)
	}
	if len(c.m) > 2*rows+1024 {
		for k, l := range c.m {
			if l.gen != c.gen {
				delete(c.m, k)
			}
		}
	}
	c.m[key.slot()] = &cachedLine{key: key, line: bytes.Clone(line), gen: c.gen}
}

const spaces = "                                                                "

func appendSpaces(b []byte, n int) []byte {
	for n > 0 {
		k := min(n, len(spaces))
		b = append(b, spaces[:k]...)
		n -= k
	}
	return b
}

// idleText formats an idle time as quser does: "." for under a minute,
// minutes, hours:minutes, or days+hours:minutes.
func idleText(d time.Duration) string {
	m := int(d / time.Minute)
	switch {
	case m < 1:
		return "."
	case m < 60:
		return strconv.Itoa(m)
	case m < 24*60:
		return fmt.Sprintf("%d:%02d", m/60, m%60)
	default:
		return fmt.Sprintf("%d+%02d:%02d", m/(24*60), (m/60)%24, m%60)
	}
}

// JSONSession is the stable JSON form of a session (/fo:json). Field names
// are part of the contract; add fields, never rename them.
type JSONSession struct {
	Server      string `json:"server"`
	ID          int    `json:"id"`
	Name        string `json:"name"`
	User        string `json:"user"`
	State       string `json:"state"`
	Type        string `json:"type"`
	Source      string `json:"source"`
	Device      string `json:"device"`
	LogonTime   string `json:"logon_time"`
	IdleSeconds int64  `json:"idle_seconds"`
	Current     bool   `json:"current"`
	CanLogoff   bool   `json:"can_logoff"`
	Idle        bool   `json:"idle"`
}

// ToJSON converts a row to its JSON form. Strings are kept as they are:
// JSON escapes control characters itself.
func ToJSON(r Row) JSONSession {
	logon := ""
	if !r.LogonTime.IsZero() {
		logon = r.LogonTime.UTC().Format(time.RFC3339)
	}
	return JSONSession{
		Server: r.Server, ID: r.ID, Name: r.Name, User: r.User, State: string(r.State),
		Type: r.Type, Source: r.Source, Device: r.Device, LogonTime: logon,
		IdleSeconds: int64(r.IdleTime / time.Second), Current: r.Current, CanLogoff: r.CanLogoff,
		Idle: r.Idle,
	}
}

// WriteJSON prints rows as a JSON array of JSONSession.
func WriteJSON(w io.Writer, rows []Row) error {
	out := make([]JSONSession, len(rows))
	for i, r := range rows {
		out[i] = ToJSON(r)
	}
	return writeJSON(w, out)
}

// writeJSON prints v indented, with nothing a terminal acts on.
func writeJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(terminalSafeJSON(data), '\n'))
	return err
}

// terminalSafeJSON escapes, as \uXXXX, the characters that encoding/json
// leaves raw but a terminal may act on (DEL, C1 controls, bidi and other
// format characters). The JSON value is unchanged.
func terminalSafeJSON(data []byte) []byte {
	safe := true
	for _, r := range string(data) {
		if r != '\n' && r != ' ' && !unicode.IsPrint(r) {
			safe = false
			break
		}
	}
	if safe {
		return data
	}
	var b strings.Builder
	for _, r := range string(data) {
		if r != '\n' && r != ' ' && !unicode.IsPrint(r) {
			if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
				continue
			}
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return []byte(b.String())
}
