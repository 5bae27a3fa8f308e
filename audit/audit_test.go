package audit

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecordsAreJSONLinesWithTheirFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Accepted("127.0.0.1:5", "root\x1b[2J", "publickey", "SHA256:x", "alice", "key")
	l.Command(Command{Admin: "alice", Session: "4", Server: "WF12", Words: []string{"logoff", "12"}})
	rec := Logoff{Admin: "alice", Server: "WF12", SessionID: 12, SessionName: "pts/3", SessionUser: "bob", SessionSource: "host", Rule: "role operator: *"}
	if err := l.LogoffIntent(rec); err != nil {
		t.Fatal(err)
	}
	l.LogoffOutcome(rec, errors.New("the session did not end"))
	l.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v", st.Mode())
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 records, got %d:\n%s", len(lines), data)
	}
	var recs []map[string]any
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		recs = append(recs, m)
	}
	// A hostile login name stays inside its field, escaped, with its length.
	if recs[0]["login"] != `root\x1b[2J` || recs[0]["login_len"] != 8.0 || strings.Contains(lines[0], "\x1b") {
		t.Errorf("auth record: %q", lines[0])
	}
	if recs[2]["msg"] != "logoff.intent" || recs[2]["session_user"] != "bob" || recs[2]["rule"] != "role operator: *" {
		t.Errorf("intent: %v", recs[2])
	}
	if recs[3]["msg"] != "logoff.outcome" || recs[3]["result"] != "the session did not end" {
		t.Errorf("outcome: %v", recs[3])
	}
}

func TestAnUnwritableLogFailsAndIsReportedOnce(t *testing.T) {
	l, err := Open("/dev/full")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var reported []error
	l.OnFailure = func(err error) { reported = append(reported, err) }
	for i := 0; i < 3; i++ {
		if err := l.LogoffIntent(Logoff{Admin: "alice"}); !errors.Is(err, ErrAudit) {
			t.Fatalf("a logoff intent on a full disk: %v", err)
		}
	}
	if len(reported) != 1 {
		t.Errorf("the failure was reported %d times, want once a minute", len(reported))
	}
}

// The audit log is never opened through a symlink, nor when another user
// could change it: root appends to whatever the path names.
func TestAuditLogRefusesSymlinksAndFilesOthersCanChange(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "shadow")
	if err := os.WriteFile(target, []byte("root only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "audit.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if l, err := Open(link); err == nil {
		l.Close()
		t.Fatal("the audit log was opened through a symlink")
	}
	if data, _ := os.ReadFile(target); string(data) != "root only\n" {
		t.Fatalf("the symlink's target was written: %q", data)
	}
	open := filepath.Join(dir, "open.log")
	if err := os.WriteFile(open, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o666)
	if l, err := Open(open); err == nil {
		l.Close()
		t.Fatal("a world-writable audit log was accepted")
	}
}
