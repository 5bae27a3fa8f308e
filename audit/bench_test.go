package audit

import (
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkConnectionRecords writes what one connection that runs one
// command costs the audit log: an accepted authentication and a command
// record, to a real file.
func BenchmarkConnectionRecords(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.ReportAllocs()
	for b.Loop() {
		l.Accepted("127.0.0.1:40522", "bench", "publickey", "SHA256:2Vbrl1gCrCkZcK5mbgZBBPnNRdVFVb3oQ8CIe5vN5wA", "bench", "key")
		l.Command(Command{Admin: "bench", Session: "17", Server: "BENCH", Words: []string{"query", "session"}, Took: 75 * time.Microsecond})
	}
}
