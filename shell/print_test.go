package shell

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
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

// The cached lines of query session print exactly what formatting every
// row afresh prints, as rows change under the same ID, become the
// caller's own, are cut to a terminal, get a SERVER column, or go; and
// the cache stays bounded by the sessions that exist.
func TestCachedQuerySessionLinesMatchFreshOnes(t *testing.T) {
	var lines lineCache
	rows := benchRows(50)
	rows[3].Name = "pts/\x1b[2J"          // a cell that Clean escapes
	rows[4].User = "名前が長いユーザーの名前です、とても長い" // cut by rune, not byte
	check := func(step string, rows []Row, withServer bool, width int) {
		t.Helper()
		var want, got bytes.Buffer
		if err := WriteTable(&want, VerbQuerySession, rows, withServer, width); err != nil {
			t.Fatal(err)
		}
		for range 2 { // a miss, then a hit
			got.Reset()
			if err := writeTable(&got, VerbQuerySession, rows, withServer, width, &lines); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("%s: cached table\n%s\nwant\n%s", step, got.String(), want.String())
			}
		}
	}
	check("first", rows, false, 0)
	rows[7].User, rows[8].State, rows[9].Device, rows[10].Type = "mallory", sessions.Disc, "203.0.113.5", "login"
	check("cells changed under the same IDs", rows, false, 0)
	rows[11].Current = true
	check("the caller's own", rows, false, 0)
	check("cut to a terminal", rows, false, 40)
	check("with a SERVER column", rows, true, 0)
	rows[12].Server = "WF13"
	check("another server", rows, true, 0)
	for round := range 30 {
		fresh := benchRows(50)
		for i := range fresh {
			fresh[i].ID += 1000 * (round + 1) // all new sessions
		}
		check("new sessions", fresh, false, 0)
	}
	if len(lines.m) > 2*50+1024+50 {
		t.Fatalf("the cache holds %d lines for tables of 50 rows", len(lines.m))
	}
}

// stuckWriter is a client that stopped reading: Write blocks until
// release is closed.
type stuckWriter struct{ release chan struct{} }

func (w stuckWriter) Write(p []byte) (int, error) { <-w.release; return len(p), nil }

// A listing whose client stopped reading holds the line cache only while
// it formats: another admin's listing is not held up by it.
func TestStuckClientDoesNotHoldOtherListings(t *testing.T) {
	var lines lineCache
	rows := benchRows(100)
	stuck := stuckWriter{release: make(chan struct{})}
	defer close(stuck.release)
	go writeTable(stuck, VerbQuerySession, rows, false, 0, &lines)
	time.Sleep(100 * time.Millisecond) // the stuck one is in Write
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeTable(io.Discard, VerbQuerySession, rows, false, 0, &lines)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a listing waited for another listing's stuck client")
	}
}
