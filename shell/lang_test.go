package shell

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/shlex"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

func TestParseCommands(t *testing.T) {
	cases := []struct {
		line string
		want Command
	}{
		{"logoff", Command{Verb: VerbLogoff}},
		{"LOGOFF 12", Command{Verb: VerbLogoff, Target: "12"}},
		{"logoff 0012", Command{Verb: VerbLogoff, Target: "0012"}},
		{"logoff TERM04 /server:WF12", Command{Verb: VerbLogoff, Target: "TERM04", Server: "WF12"}},
		{"logoff /V 3", Command{Verb: VerbLogoff, Target: "3", Verbose: true}},
		{"logoff -v 3", Command{Verb: VerbLogoff, Target: "3", Verbose: true}},
		{"logoff /SERVER:wf12 4", Command{Verb: VerbLogoff, Target: "4", Server: "wf12"}},
		{`logoff "TERM 04"`, Command{Verb: VerbLogoff, Target: "TERM 04"}},
		{`logoff 'TERM 04'`, Command{Verb: VerbLogoff, Target: "TERM 04"}},
		{`logoff TERM\ 04`, Command{Verb: VerbLogoff, Target: "TERM 04"}},
		{`logoff '#12'`, Command{Verb: VerbLogoff, Target: "#12"}},
		{`logoff \#12`, Command{Verb: VerbLogoff, Target: "#12"}},
		{`logoff a#b`, Command{Verb: VerbLogoff, Target: "a#b"}},
		{`logoff 3 /msg:"Save your work" /delay:30`, Command{Verb: VerbLogoff, Target: "3", Message: "Save your work", Delay: 30}},
		{"logoff /?", Command{Verb: VerbLogoff, Help: true}},
		{"logoff -?", Command{Verb: VerbLogoff, Help: true}},
		{"query session", Command{Verb: VerbQuerySession}},
		{"Query Session bob /fo:JSON", Command{Verb: VerbQuerySession, Target: "bob", Format: FormatJSON}},
		{"qwinsta /server:*", Command{Verb: VerbQuerySession, Server: "*"}},
		{"query user", Command{Verb: VerbQueryUser}},
		{"quser alice /fo:table", Command{Verb: VerbQueryUser, Target: "alice"}},
		{"query /?", Command{Verb: VerbHelp, Help: true, Topic: "query"}},
		{"logoff /user:tsstu42", Command{Verb: VerbLogoff, User: "tsstu42"}},
		{"LOGOFF /USER:Bob /server:* /v /now", Command{Verb: VerbLogoff, User: "Bob", Server: "*", Verbose: true, Now: true}},
		{`logoff /user:bob /msg:"Lab closes" /delay:2 /server:WF12`, Command{Verb: VerbLogoff, User: "bob", Server: "WF12", Message: "Lab closes", Delay: 2}},
		{"logoff 12 /now", Command{Verb: VerbLogoff, Target: "12", Now: true}},
		{"logoff -NOW", Command{Verb: VerbLogoff, Now: true}},
		{"query process", Command{Verb: VerbQueryProcess}},
		{"Query Process * /fo:json", Command{Verb: VerbQueryProcess, Target: "*", Format: FormatJSON}},
		{"query process /id:0012 /server:WF12", Command{Verb: VerbQueryProcess, ID: 12, HasID: true, Server: "WF12"}},
		{"query process 4242", Command{Verb: VerbQueryProcess, Target: "4242"}},
		{"query process /?", Command{Verb: VerbQueryProcess, Help: true}},
		{"help query process", Command{Verb: VerbHelp, Topic: "query process"}},
		{"help", Command{Verb: VerbHelp}},
		{"help query session", Command{Verb: VerbHelp, Topic: "query session"}},
		{"HELP Logoff", Command{Verb: VerbHelp, Topic: "logoff"}},
		{"exit", Command{Verb: VerbExit}},
		{"QUIT", Command{Verb: VerbExit}},
		{"", Command{Verb: VerbNone}},
		{"   \t ", Command{Verb: VerbNone}},
		{"# a comment line", Command{Verb: VerbNone}},
		{"  # indented comment", Command{Verb: VerbNone}},
	}
	for _, c := range cases {
		got, err := Parse(c.line)
		if err != nil {
			t.Errorf("%q: %v", c.line, err)
			continue
		}
		if c.want.Format == "" && c.want.Verb != VerbNone && c.want.Verb != VerbHelp && c.want.Verb != VerbExit {
			c.want.Format = FormatTable
		}
		if got.Verb != c.want.Verb || got.Target != c.want.Target || got.Server != c.want.Server ||
			got.Verbose != c.want.Verbose || got.Help != c.want.Help || got.Topic != c.want.Topic ||
			got.Message != c.want.Message || got.Delay != c.want.Delay ||
			got.User != c.want.User || got.Now != c.want.Now || got.ID != c.want.ID || got.HasID != c.want.HasID ||
			(c.want.Format != "" && got.Format != c.want.Format) {
			t.Errorf("%q:\n got  %+v\n want %+v", c.line, got, c.want)
		}
	}
}

// Every hostile line class is a usage error (status 2) and nothing of it
// runs.
func TestHostileLinesAreUsageErrors(t *testing.T) {
	cases := []struct{ name, line, reason string }{
		{"over-long", "logoff " + strings.Repeat("x", MaxLineBytes), "longer than"},
		{"NUL", "logoff 1\x002", "control character"},
		{"ESC", "logoff \x1b[2J", "control character"},
		{"newline joins commands", "query session\nlogoff 3", "control character"},
		{"carriage return", "logoff 3\r", "control character"},
		{"DEL", "logoff 3\x7f", "control character"},
		{"C1 CSI", "logoff \u009b31m", "control character"},
		{"bidi override", "logoff \u202e21", "control character"},
		{"zero width joiner", "logoff 1\u200d2", "control character"},
		{"invalid UTF-8", "logoff \xff\xfe", "UTF-8"},
		{"comment swallows the ID", "logoff #12", "comment"},
		{"comment swallows an option", "logoff 3 #/v", "comment"},
		{"unterminated double quote", `logoff "TERM 04`, "unterminated quote"},
		{"unterminated single quote", `logoff 'TERM 04`, "unterminated quote"},
		{"trailing backslash", `logoff 3\`, "trailing backslash"},
		{"semicolon", "query session; id", "unknown object"},
		{"and-and", "query user && id", "one session at a time"},
		{"pipe", "query user | id", "one session at a time"},
		{"redirection", "query user > /etc/passwd", "unknown option"},
		{"redirection to a name", "query user > out", "one session at a time"},
		{"unknown verb", "shutdown -h now", "unknown command"},
		{"shell", "sh", "unknown command"},
		{"unknown option", "logoff 3 /force", "unknown option"},
		{"doubled slash", "logoff //v", "unknown option"},
		{"valued /v", "logoff /v:1", "unknown option"},
		{"empty server", "logoff /server:", "needs a name"},
		{"bare server", "logoff /server", "needs a name"},
		{"server with a path", "logoff /server:../x", "not a server name"},
		{"logoff everywhere", "logoff 3 /server:*", "only with /user:"},
		{"logoff everywhere, no user", "logoff /server:* /v", "only with /user:"},
		{"user and session", "logoff 3 /user:bob", "not both"},
		{"empty user", "logoff /user:", "needs a user name"},
		{"bare user", "logoff /user", "needs a user name"},
		{"user with a path", "logoff /user:../root", "needs a user name"},
		{"two users", "logoff /user:a /user:b", "given twice"},
		{"valued /now", "logoff 3 /now:1", "unknown option"},
		{"/now on query", "query session /now", "unknown option"},
		{"/user on query", "query session /user:bob", "unknown option"},
		{"/id on logoff", "logoff /id:3", "unknown option"},
		{"process everywhere", "query process /server:*", "name one server"},
		{"bad /id", "query process /id:x", "/id takes"},
		{"empty /id", "query process /id:", "/id takes"},
		{"two /id", "query process /id:1 /id:2", "given twice"},
		{"/id and a target", "query process /id:1 bash", "not both"},
		{"two process targets", "query process bash sh", "one session at a time"},
		{"two servers", "quser /server:a /server:b", "given twice"},
		{"bad format", "qwinsta /fo:xml", "table or json"},
		{"/fo on logoff", "logoff 3 /fo:json", "unknown option"},
		{"/v on query", "query session /v", "unknown option"},
		{"huge number", "logoff 99999999999", "out of range"},
		{"negative number", "logoff -5", "unknown option"},
		{"two targets", "logoff 3 4", "one session at a time"},
		{"query alone", "query", "say what"},
		{"query what", "query processes", "unknown object"},
		{"exit with words", "exit now", "no arguments"},
		{"help on nothing", "help me", "no help"},
		{"delay too long", "logoff 3 /delay:99999", "0 to 3600"},
		{"delay negative", "logoff 3 /delay:-1", "0 to 3600"},
		{"empty message", "logoff 3 /msg:", "needs text"},
		{"long message", "logoff 3 /msg:" + strings.Repeat("m", MaxMessage+1), "longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd, err := Parse(c.line)
			var usage *UsageError
			if !errors.As(err, &usage) {
				t.Fatalf("%q: want a usage error, got %+v, %v", c.line, cmd, err)
			}
			if ExitStatus(err) != StatusUsage {
				t.Errorf("%q: status %d", c.line, ExitStatus(err))
			}
			if !strings.Contains(err.Error(), c.reason) {
				t.Errorf("%q: reason %q lacks %q", c.line, err, c.reason)
			}
			if strings.ContainsAny(err.Error(), "\n\r\x1b") {
				t.Errorf("%q: the message is not one clean line: %q", c.line, err)
			}
		})
	}
}

func TestLineAtTheLimitIsAccepted(t *testing.T) {
	line := "logoff " + strings.Repeat("x", MaxLineBytes-len("logoff "))
	if _, err := Parse(line); err != nil {
		t.Fatalf("a line of exactly %d bytes: %v", MaxLineBytes, err)
	}
}

func TestExitStatusIsDecidedInOnePlace(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&UsageError{Msg: "x"}, 2},
		{&DeniedError{Msg: "x"}, 5},
		{&ServerError{Msg: "x"}, 7},
		{sessions.Errorf(sessions.ErrNotFound, "gone"), 1},
		{fmt.Errorf("wrapped: %w", sessions.ErrAmbiguous), 1},
		{sessions.ErrPrivilege, 5},
		{sessions.Errorf(sessions.ErrSurvived, "still there"), 3},
		{&PeerStatus{Server: "B", Status: 5}, 5},
		{&InternalError{Msg: "x"}, 70},
		// An error nobody typed is a fault of tsadmin, never "not found".
		{errors.New("anything else"), 70},
	}
	for _, c := range cases {
		if got := ExitStatus(c.err); got != c.want {
			t.Errorf("%v: %d, want %d", c.err, got, c.want)
		}
	}
}

var knownVerbs = map[string]bool{VerbNone: true, VerbLogoff: true, VerbQuerySession: true, VerbQueryUser: true, VerbQueryProcess: true, VerbHelp: true, VerbExit: true}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"logoff 12", "logoff #12", `logoff "TERM 04`, "query session /server:*", "quser alice /fo:json",
		"logoff 3 /msg:\"hi\" /delay:5", "help query session", "logoff \x1b[2J", "logoff \xff", "a\\", "'#'",
		"logoff 99999999999", "query session; id", "exit", "# comment", "logoff \u202e1",
		"logoff /user:tsstu42 /server:* /v", "logoff /user:bob /msg:\"bye\" /delay:1 /now", "logoff 12 /now",
		"logoff /server:* /user:", "logoff 3 /user:x", "query process", "query process * /fo:json",
		"query process /id:7 /server:WF12", "query process 4242", "query process bash", "query process /server:*",
		"query process /id:1 x", "help query process",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := Parse(line)
		if err != nil {
			var usage *UsageError
			if !errors.As(err, &usage) {
				t.Fatalf("%q: a failure that is not a usage error: %v", line, err)
			}
			return
		}
		// What parses is a line the admin could have meant.
		if !utf8.ValidString(line) || len(line) > MaxLineBytes {
			t.Fatalf("%q parsed although it is invalid UTF-8 or too long", line)
		}
		for _, r := range line {
			if r != '\t' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r)) {
				t.Fatalf("%q parsed although it has %U", line, r)
			}
		}
		if !knownVerbs[cmd.Verb] {
			t.Fatalf("%q: unknown verb %q", line, cmd.Verb)
		}
		// Nothing typed after a comment sign is ever dropped silently:
		// the words shlex returns, with # made plain, are the same.
		if cmd.Verb != VerbNone && strings.Contains(line, "#") {
			again, err := Split(line)
			if err != nil || len(again) != len(cmd.Words) {
				t.Fatalf("%q: split differs on a second look", line)
			}
		}
		if cmd.Verb == VerbLogoff && cmd.Server == "*" && cmd.User == "" {
			t.Fatalf("%q: logoff /server:* parsed without /user:", line)
		}
		if cmd.Verb == VerbLogoff && cmd.User != "" && cmd.Target != "" {
			t.Fatalf("%q: logoff with both a session and /user: parsed", line)
		}
		if cmd.Verb == VerbQueryProcess && cmd.Server == "*" {
			t.Fatalf("%q: query process /server:* parsed", line)
		}
	})
}

// The status of a command of several outcomes (logoff /user:, /server:*).
func TestCombineStatus(t *testing.T) {
	cases := []struct {
		in   []int
		want int
	}{
		{[]int{StatusOK}, StatusOK},
		{[]int{StatusOK, StatusOK}, StatusOK},
		{[]int{StatusOK, StatusDenied}, StatusDenied},
		{[]int{StatusDenied, StatusNotEnded, StatusOK}, StatusNotEnded},
		{[]int{StatusServer, StatusDenied}, StatusServer},
		{[]int{StatusNotEnded, StatusServer}, StatusNotEnded},
		{[]int{StatusNotFound, StatusOK}, StatusOK},             // found and ended somewhere
		{[]int{StatusNotFound, StatusNotFound}, StatusNotFound}, // nowhere
		{[]int{StatusNotFound, StatusDenied}, StatusDenied},
		{[]int{StatusInternal, StatusNotEnded}, StatusInternal},
		{[]int{StatusUsage, StatusNotEnded}, StatusUsage}, // a peer that cannot run the line
		{[]int{StatusOK, 9}, 9},                           // a peer's own status passes
	}
	for _, c := range cases {
		if got := CombineStatus(c.in...); got != c.want {
			t.Errorf("CombineStatus(%v) = %d, want %d", c.in, got, c.want)
		}
	}
	if got := ExitStatus(&StatusError{Status: StatusNotEnded}); got != StatusNotEnded {
		t.Errorf("a summary's status: %d", got)
	}
}

// The line relayed to each peer of logoff /server:* splits back into the
// words typed, with the peer's name for *.
func TestRelayedLineSplitsBack(t *testing.T) {
	for _, line := range []string{
		`logoff /user:bob /server:* /msg:"it's 5 o'clock; save" /delay:2 /v`,
		`logoff /SERVER:* /user:bob /msg:'#1 $HOME \\ "x"'`,
	} {
		cmd, err := Parse(line)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(joinWords(replaceServer(cmd.Words, "WF13")))
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if again.Server != "WF13" || again.User != cmd.User || again.Message != cmd.Message ||
			again.Delay != cmd.Delay || again.Verbose != cmd.Verbose {
			t.Errorf("%q relayed as %q: %+v", line, joinWords(replaceServer(cmd.Words, "WF13")), again)
		}
	}
}

// FuzzPlainWords checks Split's shortcut against shlex itself: a checked
// line with no quote, escape or # splits into the same words either way.
// Its seeds run with the tests; `go test -fuzz PlainWords ./shell`
// searches further.
func FuzzPlainWords(f *testing.F) {
	for _, seed := range []string{
		"", " ", "\t", "logoff 12", "  logoff\t\t12  /v ", "query session /server:*", "logoff \u00a012",
		"logoff\u3000 12", "quser ålice /fo:json", "logoff 1 2 3", "a\tb c\t", "über\u2003user",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, shlexSpecial) || !utf8.ValidString(line) {
			return
		}
		for _, r := range line {
			if r != '\t' && (unicode.IsControl(r) || isFormatChar(r)) {
				return
			}
		}
		want, err := shlex.Split(line)
		if err != nil {
			t.Fatalf("%q: shlex: %v", line, err)
		}
		if got := plainWords(line); !slices.Equal(got, want) {
			t.Fatalf("%q: plainWords %q, shlex %q", line, got, want)
		}
	})
}
