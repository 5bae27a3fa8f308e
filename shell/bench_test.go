package shell

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(`logoff "TERM 04" /server:WF12 /v`); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParsePlain is the usual line: no quote, escape or #.
func BenchmarkParsePlain(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("query session /server:WF12"); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRows(n int) []Row {
	rows := make([]Row, n)
	now := time.Now()
	for i := range rows {
		rows[i] = Row{Session: sessions.Session{
			ID: i + 1, Name: fmt.Sprintf("pts/%d", i), User: fmt.Sprintf("student%04d", i),
			State: sessions.Active, Type: "sshd", Device: "198.51.100.9", LogonTime: now,
		}, Server: "WF12"}
	}
	return rows
}

func benchWriteTable(b *testing.B, n int) {
	rows := benchRows(n)
	b.ReportAllocs()
	for b.Loop() {
		WriteTable(io.Discard, VerbQuerySession, rows, false, 0)
	}
}

func BenchmarkWriteTable1000(b *testing.B)  { benchWriteTable(b, 1000) }
func BenchmarkWriteTable10000(b *testing.B) { benchWriteTable(b, 10000) }

func benchWriteJSON(b *testing.B, n int) {
	rows := benchRows(n)
	b.ReportAllocs()
	for b.Loop() {
		WriteJSON(io.Discard, rows)
	}
}

func BenchmarkWriteJSON1000(b *testing.B)  { benchWriteJSON(b, 1000) }
func BenchmarkWriteJSON10000(b *testing.B) { benchWriteJSON(b, 10000) }

type nopShellControl struct{}

func (nopShellControl) Kick(string)   {}
func (nopShellControl) Notify(string) {}

// benchExecQuery runs line through Env.Exec (parse, listing, table, audit
// record) with n of tsadmin's own sessions present, writing to the
// escaping printer as a session does. With churn, one session ends and
// one starts between queries, as under the one-shot load. With spread,
// each session is allocated between 8 KiB kept for its connection, as
// in a server, so that the sessions are not side by side in memory.
func benchExecQuery(b *testing.B, line string, n int, churn, spread bool) {
	env, id := testEnv(b)
	var open []*sessions.ShellSession
	var conns [][]byte
	for range n {
		if spread {
			conns = append(conns, make([]byte, 8<<10))
		}
		open = append(open, env.Shells.Add("bob", "198.51.100.9", nopShellControl{}))
	}
	c := Caller{Identity: id, Session: 1, Mode: ModeExec}
	ctx := context.Background()
	stdout, stderr := EscapeWriter(io.Discard), EscapeWriter(io.Discard)
	b.ReportAllocs()
	for b.Loop() {
		if churn {
			open[0].Close()
			open = append(open[1:], env.Shells.Add("bob", "198.51.100.9", nopShellControl{}))
		}
		if out := env.Exec(ctx, c, line, stdout, stderr); out.Status != StatusOK {
			b.Fatal(out.Err)
		}
	}
	runtime.KeepAlive(conns)
}

func BenchmarkExecQuerySession0(b *testing.B) { benchExecQuery(b, "query session", 0, false, false) }
func BenchmarkExecQuerySession1000(b *testing.B) {
	benchExecQuery(b, "query session", 1000, false, false)
}
func BenchmarkExecQuerySession10000(b *testing.B) {
	benchExecQuery(b, "query session", 10000, false, false)
}
func BenchmarkExecQuerySessionChurn10000(b *testing.B) {
	benchExecQuery(b, "query session", 10000, true, false)
}
func BenchmarkExecQuerySessionSpread10000(b *testing.B) {
	benchExecQuery(b, "query session", 10000, true, true)
}
func BenchmarkExecQueryUser10000(b *testing.B) { benchExecQuery(b, "query user", 10000, false, false) }
