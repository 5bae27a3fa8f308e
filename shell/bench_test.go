package shell

import (
	"context"
	"fmt"
	"io"
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

// benchExecQuery runs `query session` through Env.Exec (parse, listing,
// policy, table, audit record) with n of tsadmin's own sessions present.
func benchExecQuery(b *testing.B, n int) {
	env, id := testEnv(b)
	for range n {
		env.Shells.Add("bob", "198.51.100.9", nopShellControl{})
	}
	c := Caller{Identity: id, Session: 1, Mode: ModeExec}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if out := env.Exec(ctx, c, "query session", io.Discard, io.Discard); out.Status != StatusOK {
			b.Fatal(out.Err)
		}
	}
}

func BenchmarkExecQuerySession0(b *testing.B)     { benchExecQuery(b, 0) }
func BenchmarkExecQuerySession1000(b *testing.B)  { benchExecQuery(b, 1000) }
func BenchmarkExecQuerySession10000(b *testing.B) { benchExecQuery(b, 10000) }
