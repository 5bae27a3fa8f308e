package audit

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestClipEscapesThenCuts(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"alice", "alice"},
		{"root\x1b[2J", `root\x1b[2J`},
		{"a\\b", `a\\b`},
		{"evil\u202etxt", `evil\u202etxt`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"café", "café"},
		{strings.Repeat("A", 40), strings.Repeat("A", 32) + "..."},
		// Escapes count at their escaped length: the result never
		// exceeds the bound, whatever the input.
		{strings.Repeat("\x1b", 20), strings.Repeat(`\x1b`, 8) + "..."},
	} {
		if got := Clip(c.in, MaxLogin); got != c.want {
			t.Errorf("Clip(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	for _, in := range []string{strings.Repeat("\x00\xff\u202e", 100_000), strings.Repeat("é", 100_000)} {
		got := Clip(in, MaxLogin)
		if len(got) > MaxLogin+len("...") || !utf8.ValidString(got) {
			t.Errorf("Clip of %d bytes gave %d bytes: %q", len(in), len(got), got)
		}
	}
}

// However many attempts, methods and keys a connection makes, with
// whatever names, its record stays a few hundred bytes.
func TestRefusedRecordIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var none Refusals
	l.Refused("127.0.0.1:1", &none) // no attempt: no record
	var r Refusals
	huge := strings.Repeat("\x1b[2J", 60_000)
	for i := 0; i < 1000; i++ {
		r.Attempt(huge, string(rune('a'+i%26))+huge, huge)
		r.Key("SHA256:"+strings.Repeat(string(rune('A'+i%26)), 43), huge)
	}
	l.Refused("[2001:db8::1]:65535", &r)
	l.Refused("[2001:db8::1]:65535", &r) // already recorded: nothing more
	l.Close()
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 record, got %d", len(lines))
	}
	if len(data) > 700 { // a few hundred bytes, whatever the client sends
		t.Errorf("the record is %d bytes: %s", len(data), data)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m["attempts"] != 1000.0 || m["login_len"] != float64(len(huge)) ||
		len(m["methods"].([]any)) != MaxMethods || len(m["fingerprints"].([]any)) != MaxFingerprints {
		t.Errorf("record: %s", data)
	}
}

// What something outside tsadmin can make it record (a local user forging
// login records by the thousand) is throttled: a burst per interval in
// full, the rest as one counted record.
func TestThrottleBoundsRecordsAndCountsTheRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	th := &Throttle{Log: l, Event: "host.suspicious", Burst: 20, Interval: time.Hour}
	for i := range 4096 {
		th.Write(slog.Int("pid", i))
	}
	th.Flush()
	l.Close()
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 21 {
		t.Fatalf("want 20 records and one count, got %d lines", len(lines))
	}
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[20]), &last); err != nil {
		t.Fatal(err)
	}
	if last["msg"] != "host.suspicious.suppressed" || last["count"] != float64(4076) {
		t.Fatalf("the count record: %v", last)
	}
}
