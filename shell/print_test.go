package shell

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The headers Windows prints, copied from quser and qwinsta: the golden
// files must begin with them exactly.
const (
	windowsQuserHeader   = " USERNAME              SESSIONNAME        ID  STATE   IDLE TIME  LOGON TIME"
	windowsQwinstaHeader = " SESSIONNAME       USERNAME                 ID  STATE   TYPE        DEVICE"
)

// goldenRows has the caller's own row, a Disc row, idle times of each
// form, a user name of exactly 20 characters, over-long user, session
// and type names, and IDs of one to six digits.
func goldenRows() []Row {
	at := func(h, m int) time.Time { return time.Date(2026, 11, 24, h, m, 0, 0, time.Local) }
	return []Row{
		{Session: sessions.Session{ID: 4, Name: "ssh#4", User: "alice", State: sessions.Active, Type: "tsadmin",
			Device: "192.0.2.7", LogonTime: at(9, 14), IdleTime: 20 * time.Second}, Current: true},
		{Session: sessions.Session{ID: 12, Name: "pts/3", User: "bob", State: sessions.Disc, Type: "sshd",
			Device: "198.51.100.9", LogonTime: at(8, 2), IdleTime: 65 * time.Minute}},
		{Session: sessions.Session{ID: 7, Name: "tty1", User: "carol", State: sessions.Active, Type: "login",
			LogonTime: at(7, 30), IdleTime: 7*time.Minute + 59*time.Second}},
		{Session: sessions.Session{ID: 99999, Name: "session-c1", User: "exactly-twenty-chars", State: sessions.Active,
			Type: "cron", LogonTime: at(6, 0), IdleTime: 2*24*time.Hour + 3*time.Hour + 4*time.Minute}},
		{Session: sessions.Session{ID: 123456, Name: "a-session-name-of-25-char", User: "administrator-of-the-night-shift",
			State: sessions.Disc, Type: "a-long-type-name", Device: "host.example.com", LogonTime: at(23, 59),
			IdleTime: 123*24*time.Hour + 23*time.Hour + 59*time.Minute}},
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./shell -run Golden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

// The tables match the golden files, which begin with Windows' headers.
func TestTablesGolden(t *testing.T) {
	for _, tc := range []struct {
		verb, file, header string
		withServer         bool
	}{
		{VerbQueryUser, "quser.golden", windowsQuserHeader, false},
		{VerbQuerySession, "qwinsta.golden", windowsQwinstaHeader, false},
		{VerbQuerySession, "qwinsta-server.golden", "", true},
	} {
		rows := goldenRows()
		for i := range rows {
			rows[i].Server = "WF" + strconv.Itoa(10+i)
		}
		var b bytes.Buffer
		if err := WriteTable(&b, tc.verb, rows, tc.withServer, 0); err != nil {
			t.Fatal(err)
		}
		if first, _, _ := strings.Cut(b.String(), "\n"); tc.header != "" && first != tc.header {
			t.Errorf("%s header:\n%q\nwant Windows'\n%q", tc.verb, first, tc.header)
		}
		checkGolden(t, tc.file, b.Bytes())
	}
}

// field is one field as a PowerShell script cuts it out of a line:
// Substring(from, to-from).Trim(), or to the end of the line for to < 0.
type field struct {
	name     string
	from, to int
}

// The fixed offsets the PowerShell modules use, taken from Windows'
// headers (the ID ends at column 43 in quser, 45 in qwinsta).
var (
	quserFields = []field{{"user", 1, 21}, {"session", 23, 38}, {"id", 38, 44}, {"state", 46, 52},
		{"idle", 54, 63}, {"logon", 65, -1}}
	qwinstaFields = []field{{"session", 1, 16}, {"user", 19, 39}, {"id", 39, 46}, {"state", 48, 54},
		{"type", 56, 66}, {"device", 68, -1}}
)

// parseFixed cuts a table's rows at fixed columns, as the PowerShell
// modules do; the marker is column 0.
func parseFixed(t *testing.T, table string, fields []field) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	var out []map[string]string
	for _, line := range lines[1:] {
		m := map[string]string{"current": strconv.FormatBool(line[0] == '>')}
		for _, f := range fields {
			to := f.to
			if to < 0 || to > len(line) {
				to = len(line)
			}
			if f.from < to {
				m[f.name] = strings.TrimSpace(line[f.from:to])
			}
		}
		out = append(out, m)
	}
	return out
}

// A script that cuts the lines at Windows' offsets gets every field back:
// IDs and states whole, names whole or cut with a ~; the JSON form has the
// same state.
func TestTablesParseAtWindowsOffsets(t *testing.T) {
	rows := goldenRows()
	cut := func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n-1] + "~"
	}
	for _, tc := range []struct {
		verb   string
		fields []field
	}{{VerbQueryUser, quserFields}, {VerbQuerySession, qwinstaFields}} {
		var b bytes.Buffer
		if err := WriteTable(&b, tc.verb, rows, false, 0); err != nil {
			t.Fatal(err)
		}
		got := parseFixed(t, b.String(), tc.fields)
		if len(got) != len(rows) {
			t.Fatalf("%s: %d rows, want %d:\n%s", tc.verb, len(got), len(rows), b.String())
		}
		for i, r := range rows {
			// The six-digit ID takes one character from the session name.
			nameWidth := 15
			if r.ID > 99999 && tc.verb == VerbQueryUser {
				nameWidth = 14
			}
			want := map[string]string{
				"current": strconv.FormatBool(r.Current), "user": cut(r.User, 20), "session": cut(r.Name, nameWidth),
				"id": strconv.Itoa(r.ID), "state": string(r.State),
			}
			if tc.verb == VerbQueryUser {
				want["idle"] = idleText(r.IdleTime)
				want["logon"] = r.LogonTime.Format("2006-01-02 15:04")
			} else {
				want["type"] = cut(r.Type, 10)
				want["device"] = r.Device
			}
			if j := ToJSON(r); j.State != got[i]["state"] || j.IdleSeconds != int64(r.IdleTime/time.Second) {
				t.Errorf("%s row %d: JSON state %q idle_seconds %d, the table's state %q", tc.verb, i, j.State, j.IdleSeconds, got[i]["state"])
			}
			for k, w := range want {
				if got[i][k] != w {
					t.Errorf("%s row %d: %s = %q, want %q\n%s", tc.verb, i, k, got[i][k], w, b.String())
				}
			}
		}
	}
}

// quser's idle times: ".", minutes, H:MM, D+HH:MM.
func TestIdleText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		59 * time.Second: ".", time.Minute: "1", 59 * time.Minute: "59", time.Hour: "1:00",
		23*time.Hour + 59*time.Minute: "23:59", 24 * time.Hour: "1+00:00", 50*time.Hour + 5*time.Minute: "2+02:05",
	} {
		if got := idleText(d); got != want {
			t.Errorf("idleText(%v) = %q, want %q", d, got, want)
		}
	}
}

// The lines kept in sessions' memos print exactly what formatting every
// row afresh prints, in both tables, as rows change (with a new memo),
// become the caller's own, are cut to a terminal, get a SERVER column, go
// idle, or are listed as sessions alone; and a line is taken from the
// memo whenever nothing it depends on changed.
func TestMemoLinesMatchFreshOnes(t *testing.T) {
	rows := benchRows(50)
	rows[3].Name = "pts/\x1b[2J"          // a cell that Clean escapes
	rows[4].User = "名前が長いユーザーの名前です、とても長い" // cut by rune, not byte
	for i := range rows {
		rows[i].Memo = new(sessions.Memo)
	}
	fresh := func(rows []Row) []Row {
		out := slices.Clone(rows)
		for i := range out {
			out[i].Memo = nil
		}
		return out
	}
	check := func(step, verb string, rows []Row, withServer bool, width int) {
		t.Helper()
		var want, got bytes.Buffer
		if err := WriteTable(&want, verb, fresh(rows), withServer, width); err != nil {
			t.Fatal(err)
		}
		for pass := range 2 { // a miss, then a hit
			got.Reset()
			var tb table
			tb.start(&got, verb, withServer, width, nil)
			for i := range rows {
				tb.row(&rows[i].Session, rows[i].Current, &rows[i])
			}
			if err := tb.finish(); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("%s, %s, pass %d: table from memos\n%s\nwant\n%s", step, verb, pass, got.String(), want.String())
			}
			if pass == 1 && tb.reusable != len(rows) {
				t.Fatalf("%s, %s: %d of %d lines taken from memos on a second listing", step, verb, tb.reusable, len(rows))
			}
		}
	}
	for _, verb := range []string{VerbQuerySession, VerbQueryUser} {
		check("first", verb, rows, false, 0)
		// A source whose session's cells change gives it a new memo.
		rows[7].User, rows[8].State, rows[9].Device, rows[10].Type = "mallory"+verb, sessions.Disc, "203.0.113.5", "login"+verb
		rows[13].LogonTime = rows[13].LogonTime.Add(time.Hour)
		for _, i := range []int{7, 8, 9, 10, 13} {
			rows[i].Memo = new(sessions.Memo)
		}
		check("cells changed, with a new memo", verb, rows, false, 0)
		rows[14].IdleTime += 3 * time.Minute
		check("idle for longer", verb, rows, false, 0)
		rows[11].Current = true
		check("the caller's own", verb, rows, false, 0)
		check("cut to a terminal", verb, rows, false, 40)
		check("with a SERVER column", verb, rows, true, 0)
		rows[12].Server = "WF13"
		check("another server", verb, rows, true, 0)
		rows[11].Current = false
	}

	// Sessions alone, as a plain listing prints them: the same bytes as
	// their rows, with the caller's own marked by ID.
	list := make([]sessions.Session, len(rows))
	for i := range rows {
		list[i] = rows[i].Session
	}
	rows[20].Current = true
	for _, verb := range []string{VerbQuerySession, VerbQueryUser} {
		var want, got bytes.Buffer
		if err := WriteTable(&want, verb, fresh(rows), false, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := writeSessions(&got, verb, list, rows[20].ID, 0, nil); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Fatalf("%s from sessions:\n%s\nwant\n%s", verb, got.String(), want.String())
		}
	}
}

// Cut to a terminal of any width, the caller's own line and every other
// line are the whole line (as printed with no terminal) cut to the width,
// with a ~ where it was cut, and the > mark stays where it fits.
func TestLinesCutToAnyTerminalWidth(t *testing.T) {
	rows := goldenRows()
	for i := range rows {
		rows[i].Memo = new(sessions.Memo)
	}
	for _, verb := range []string{VerbQuerySession, VerbQueryUser} {
		var whole bytes.Buffer
		if err := WriteTable(&whole, verb, rows, false, 0); err != nil {
			t.Fatal(err)
		}
		full := strings.Split(strings.TrimSuffix(whole.String(), "\n"), "\n")
		for width := 1; width <= 100; width++ {
			var got bytes.Buffer
			if err := WriteTable(&got, verb, rows, false, width); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(got.String(), "\n"), "\n")
			if len(lines) != len(full) {
				t.Fatalf("%s at width %d: %d lines, want %d", verb, width, len(lines), len(full))
			}
			for i, l := range full {
				want := l
				if r := []rune(l); len(r) > width {
					want = string(r[:width-1]) + "~"
				}
				if lines[i] != want {
					t.Fatalf("%s at width %d, line %d: %q, want %q", verb, width, i, lines[i], want)
				}
			}
		}
	}
}

// A table of thousands of lines is written in chunks that end at line
// ends, each through the escaping printer unless every byte of it was
// checked: lines with a name that Clean escapes, or non-ASCII names,
// print the same either way.
func TestTableChunksPrintTheSameThroughTheEscapingPrinter(t *testing.T) {
	rows := benchRows(3000)
	rows[1500].User = "名前"
	rows[2000].Name = "pts/\x1b]0;owned\x07"
	for i := range rows {
		rows[i].Memo = new(sessions.Memo)
	}
	var want bytes.Buffer
	if err := WriteTable(&want, VerbQuerySession, rows, false, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var got bytes.Buffer
		if err := WriteTable(EscapeWriter(&got), VerbQuerySession, rows, false, 0); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Fatal("a table through the escaping printer differs from the table")
		}
		if strings.ContainsAny(got.String(), "\x1b\x07") {
			t.Fatal("a control character reached the client")
		}
	}
}

// stuckWriter is a client that stopped reading: Write blocks until
// release is closed.
type stuckWriter struct{ release chan struct{} }

func (w stuckWriter) Write(p []byte) (int, error) { <-w.release; return len(p), nil }

// A listing whose client stopped reading holds nothing that another
// listing of the same sessions (sharing their memos) waits for.
func TestStuckClientDoesNotHoldOtherListings(t *testing.T) {
	rows := benchRows(100)
	for i := range rows {
		rows[i].Memo = new(sessions.Memo)
	}
	stuck := stuckWriter{release: make(chan struct{})}
	defer close(stuck.release)
	go WriteTable(stuck, VerbQuerySession, rows, false, 0)
	time.Sleep(100 * time.Millisecond) // the stuck one is in Write
	done := make(chan struct{})
	go func() {
		defer close(done)
		WriteTable(io.Discard, VerbQuerySession, rows, false, 0)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a listing waited for another listing's stuck client")
	}
}
