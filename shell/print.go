package shell

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
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
	var t table
	t.start(w, verb, withServer, width, nil)
	for i := range rows {
		t.row(&rows[i].Session, rows[i].Current, &rows[i])
	}
	return t.finish()
}

// writeSessions is WriteTable for this server's own listing, without a
// SERVER column, straight from the sessions: a Row is made only for a
// session whose line is not in its memo. current is the caller's session
// ID (0 for none); buf is a buffer to reuse, or nil.
func writeSessions(w io.Writer, verb string, list []sessions.Session, current, width int, buf []byte) ([]byte, error) {
	var t table
	t.start(w, verb, false, width, buf)
	for i := range list {
		t.row(&list[i], current != 0 && list[i].ID == current, nil)
	}
	return t.buf, t.finish()
}

// tableChunk is how much of a table is formatted before it is written:
// a table of thousands of rows is never held whole, and an SSH packet
// carries 32 KiB.
const tableChunk = 32 << 10

// table writes a table a chunk at a time. A session's line is formatted
// once and kept in the session's memo (sessions.Memo), with the mark
// column blank: the caller's own session gets its > when it is written.
type table struct {
	w                   io.Writer
	verb                string
	cols                []column
	withServer          bool
	width               int
	texts               [maxTableColumns]string
	gaps, widths        [maxTableColumns]int
	line                []byte // the line being formatted
	scratch             *Row   // the row of a session listed without one
	buf                 []byte // the chunk being filled
	checked             bool   // every line in buf passed clean
	err                 error
	memoSlot            int // which of memoLines this table's lines go in; -1 for none
	formatted, reusable int // lines made, and taken from memos (for tests)
}

// maxTableColumns is the most columns a table has: query session's six
// and SERVER.
const maxTableColumns = 7

// start begins the table with its header; buf is a buffer to reuse, or nil.
func (t *table) start(w io.Writer, verb string, withServer bool, width int, buf []byte) {
	*t = table{w: w, buf: buf[:0], checked: true}
	if cap(t.buf) < tableChunk {
		t.buf = make([]byte, 0, tableChunk)
	}
	t.shape(verb, withServer, width)
	for i, c := range t.cols {
		t.texts[i] = c.title
	}
	t.formatLine()
	t.add(t.line, clean(t.line), false)
}

// shape sets the table's columns, for a verb's table with or without a
// SERVER column, cut to width.
func (t *table) shape(verb string, withServer bool, width int) {
	t.verb, t.withServer, t.width, t.cols = verb, withServer, width, nil
	table := qwinstaColumns
	t.memoSlot = 0
	switch verb {
	case VerbQueryUser:
		table, t.memoSlot = quserColumns, 1
	case VerbQueryProcess:
		table, t.memoSlot = qprocessColumns, -1 // a line per process, not per session
	}
	if withServer {
		t.cols = append(t.cols, colServer, table[0].after(2))
		t.cols = append(t.cols, table[1:]...)
	} else {
		t.cols = table
	}
}

// memoLines is what a table keeps in a session's memo (as a pointer): its
// line in the query session table, and in the query user table. It is
// never changed once stored: a new line makes a new memoLines.
type memoLines [2]*memoLine

type memoLine struct {
	key     lineKey
	line    []byte // with a blank mark, and the newline
	checked bool   // line passed clean: the escaping printer writes it unchanged
}

// lineKey is what a session's line depends on besides the cells that a
// memo's session keeps for the memo's life (sessions.Memo): the table's
// shape, the SERVER cell, and query user's idle minutes. The ID, which
// never changes either, is checked as well: a memo that reached another
// session by mistake costs a format, not a wrong line.
type lineKey struct {
	server      string
	id          int
	idleMinutes int // query user only: IDLE TIME shows minutes
	withServer  bool
	width       int
}

func (t *table) key(s *sessions.Session, server string) lineKey {
	k := lineKey{id: s.ID, withServer: t.withServer, width: t.width}
	if t.withServer {
		k.server = server
	}
	if t.memoSlot == 1 {
		k.idleMinutes = int(s.IdleTime / time.Minute)
	}
	return k
}

// row writes the line of session s, the caller's own if current. row is
// its Row, or nil when the table was given sessions alone.
func (t *table) row(s *sessions.Session, current bool, row *Row) {
	if t.err != nil {
		return // the client is gone: the rest would be written nowhere
	}
	server := ""
	if row != nil {
		server = row.Server
	}
	var key lineKey
	var kept *memoLines
	memo := s.Memo
	if t.memoSlot < 0 {
		memo = nil
	}
	if memo != nil {
		key = t.key(s, server)
		kept, _ = memo.Load().(*memoLines)
		if kept == nil {
			kept = &memoLines{}
		}
		if l := kept[t.memoSlot]; l != nil && l.key == key {
			t.reusable++
			t.add(l.line, l.checked, current)
			return
		}
	}
	if row == nil {
		if t.scratch == nil {
			t.scratch = new(Row)
		}
		t.scratch.Session = *s
		row = t.scratch
	}
	checked := t.format(row)
	t.add(t.line, checked, current)
	if memo != nil {
		update := *kept
		update[t.memoSlot] = &memoLine{key: key, line: bytes.Clone(t.line), checked: checked}
		memo.Store(&update)
	}
}

// format formats row's line into t.line and reports whether it passed
// clean.
func (t *table) format(row *Row) (checked bool) {
	for i, c := range t.cols {
		t.texts[i] = Clean(c.value(*row))
	}
	t.formatLine()
	t.formatted++
	return clean(t.line)
}

// formatLine formats t.texts (already Clean) into t.line, with a blank
// mark and a newline.
func (t *table) formatLine() {
	cols, gaps, widths := t.cols, t.gaps[:len(t.cols)], t.widths[:len(t.cols)]
	for i, c := range cols {
		gaps[i], widths[i] = c.gap, c.width
	}
	// A right-aligned value too long for its field takes the spaces
	// before it (keeping one), then cuts the column before it.
	for i := 1; i < len(cols); i++ {
		over := utf8.RuneCountInString(t.texts[i]) - widths[i]
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
	line := append(t.line[:0], ' ')
	for i, c := range cols {
		line = appendSpaces(line, gaps[i])
		v := t.texts[i]
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
	// A row's ID is never blank, so trimming never reaches its mark: the
	// line is the same with a > there.
	line = bytes.TrimRight(line, " ")
	if t.width > 0 && utf8.RuneCount(line) > t.width {
		// Cut to the terminal: rows never wrap.
		cut, n := 0, 0
		for cut < len(line) && n < t.width-1 {
			_, size := utf8.DecodeRune(line[cut:])
			cut += size
			n++
		}
		line = append(line[:cut], '~')
	}
	t.line = append(line, '\n')
}

// add puts line (checked: it passed clean) in the chunk, marked as the
// caller's own session if current, writing the chunk first if it is full.
func (t *table) add(line []byte, checked, current bool) {
	if len(t.buf)+len(line) > cap(t.buf) {
		t.flush()
	}
	if current && line[0] == ' ' { // else a terminal of one column cut the mark away
		t.buf = append(t.buf, '>')
		line = line[1:]
	}
	t.buf = append(t.buf, line...)
	t.checked = t.checked && checked
}

// flush writes the chunk. A chunk whose every line passed clean goes past
// the escaping printer's own scan, which would write it unchanged.
func (t *table) flush() {
	if len(t.buf) > 0 {
		t.write(t.buf, t.checked)
	}
	t.buf, t.checked = t.buf[:0], true
}

// write writes whole lines, p, to the client (checked: they passed
// clean), unless an earlier write failed.
func (t *table) write(p []byte, checked bool) {
	if t.err != nil {
		return
	}
	if checked {
		_, t.err = writeChecked(t.w, p)
	} else {
		_, t.err = t.w.Write(p)
	}
}

func (t *table) finish() error {
	t.flush()
	return t.err
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
