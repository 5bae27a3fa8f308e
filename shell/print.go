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
}

// Clean neutralises text from outside (user names, host names, terminal
// names, peers' output) so that it cannot move the admin's cursor, retitle
// their terminal or hide itself: control characters, escape sequences and
// invisible format characters are shown escaped (\x1b, \u202e), and invalid
// UTF-8 bytes as \xNN.
func Clean(s string) string {
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

// fit cleans s and cuts it to width runes, marking a cut with ~ so that a
// truncated name is never mistaken for a whole one.
func fit(s string, width int) string {
	s = Clean(s)
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "~"
}

type column struct {
	title string
	width int // minimum width; 0 for the last column (not padded)
	right bool
	value func(Row) string
}

var (
	colServer  = column{"SERVER", 12, false, func(r Row) string { return r.Server }}
	colName    = column{"SESSIONNAME", 17, false, func(r Row) string { return r.Name }}
	colUser    = column{"USERNAME", 20, false, func(r Row) string { return r.User }}
	colID      = column{"ID", 4, true, func(r Row) string { return strconv.Itoa(r.ID) }}
	colState   = column{"STATE", 6, false, func(r Row) string { return string(r.State) }}
	colType    = column{"TYPE", 8, false, func(r Row) string { return r.Type }}
	colDevice  = column{"DEVICE", 0, false, func(r Row) string { return r.Device }}
	colIdle    = column{"IDLE TIME", 9, true, func(r Row) string { return idleText(r.IdleTime) }}
	colLogon   = column{"LOGON TIME", 0, false, func(r Row) string { return r.LogonTime.Local().Format("2006-01-02 15:04") }}
	maxColumns = 40 // no field is shown wider than this
)

// WriteTable prints rows as the `query session` table (verb
// VerbQuerySession) or the `query user` table, with a SERVER column when
// withServer is set. width is the terminal width (0 for no limit): when
// the rows are wider, the last column is cut so that rows never wrap.
func WriteTable(w io.Writer, verb string, rows []Row, withServer bool, width int) error {
	var cols []column
	if withServer {
		cols = append(cols, colServer)
	}
	if verb == VerbQueryUser {
		cols = append(cols, colUser, colName, colID, colState, colIdle, colLogon)
	} else {
		cols = append(cols, colName, colUser, colID, colState, colType, colDevice)
	}
	// Widths: the widest cell, at least the minimum, at most maxColumns.
	// Cells are kept with their width in runes, counted once.
	type cell struct {
		text  string
		runes int
	}
	cells := make([]cell, len(rows)*len(cols))
	widths := make([]int, len(cols))
	for i, c := range cols {
		widths[i] = max(c.width, len(c.title))
	}
	for r, row := range rows {
		for i, c := range cols {
			v := fit(c.value(row), maxColumns)
			n := utf8.RuneCountInString(v)
			cells[r*len(cols)+i] = cell{v, n}
			widths[i] = max(widths[i], n)
		}
	}
	var b bytes.Buffer
	b.Grow((len(rows) + 1) * (sum(widths) + 2*len(cols) + 2))
	var line []byte
	writeLine := func(mark byte, vals []cell) {
		line = append(line[:0], mark)
		runes := 1
		for i, v := range vals {
			last := i == len(vals)-1
			pad := widths[i] - v.runes
			if cols[i].right {
				line = appendSpaces(line, pad)
			}
			line = append(line, v.text...)
			runes += v.runes + pad
			if !last {
				if !cols[i].right {
					line = appendSpaces(line, pad)
				}
				line = append(line, "  "...)
				runes += 2
			} else if !cols[i].right {
				runes -= pad
			}
		}
		if width > 0 && runes > width {
			// Cut to the terminal: rows never wrap.
			cut, n := 0, 0
			for cut < len(line) && n < width-1 {
				_, size := utf8.DecodeRune(line[cut:])
				cut += size
				n++
			}
			line = append(line[:cut], '~')
		}
		b.Write(bytes.TrimRight(line, " "))
		b.WriteByte('\n')
	}
	titles := make([]cell, len(cols))
	for i, c := range cols {
		titles[i] = cell{c.title, len(c.title)}
	}
	writeLine(' ', titles)
	for r, row := range rows {
		mark := byte(' ')
		if row.Current {
			mark = '>'
		}
		writeLine(mark, cells[r*len(cols):(r+1)*len(cols)])
	}
	_, err := w.Write(b.Bytes())
	return err
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

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
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
	}
}

// WriteJSON prints rows as a JSON array of JSONSession.
func WriteJSON(w io.Writer, rows []Row) error {
	out := make([]JSONSession, len(rows))
	for i, r := range rows {
		out[i] = ToJSON(r)
	}
	data, err := json.MarshalIndent(out, "", "  ")
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
