package shell

import (
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

func BenchmarkWriteTable1000(b *testing.B) {
	rows := benchRows(1000)
	b.ReportAllocs()
	for b.Loop() {
		WriteTable(io.Discard, VerbQuerySession, rows, false, 0)
	}
}

func BenchmarkWriteJSON1000(b *testing.B) {
	rows := benchRows(1000)
	b.ReportAllocs()
	for b.Loop() {
		WriteJSON(io.Discard, rows)
	}
}
