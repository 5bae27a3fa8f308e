// Package shell is tsadmin's command language: Parse turns one line into a
// Command, Run carries a Command out for an identity and says what it
// printed and its exit status, and the printers render sessions as the
// classic table or as JSON. The same parser serves one-shot commands,
// scripts on stdin and the interactive shell; there is no shell behind it.
package shell

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/shlex"

	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/sessions"
)

// MaxLineBytes is the longest command line accepted.
const MaxLineBytes = 1024

// The verbs, as Command.Verb holds them.
const (
	VerbNone         = ""
	VerbLogoff       = "logoff"
	VerbQuerySession = "query session"
	VerbQueryUser    = "query user"
	VerbQueryProcess = "query process"
	VerbHelp         = "help"
	VerbExit         = "exit"
)

// Formats of query output.
const (
	FormatTable = "table"
	FormatJSON  = "json"
)

// Command is one parsed line.
type Command struct {
	Verb    string // one of the Verb constants; VerbNone for a blank line
	Target  string // session ID, session name or user name, if given
	Server  string // /server:NAME, "" for this server, "*" for all
	Verbose bool   // /v
	Help    bool   // /?
	Format  string // /fo:table (default) or /fo:json
	Topic   string // help's argument
	Message string // logoff /msg:"text"
	Delay   int    // logoff /delay:SECONDS
	User    string // logoff /user:NAME: every session of that user
	Now     bool   // logoff /now: SIGKILL at once, no SIGHUP and no grace
	// ID is query process /id:nn, the session whose processes to list;
	// HasID says it was given.
	ID    int
	HasID bool
	// Words is the line as split, for the audit log.
	Words []string
	// Line is the line as typed, for relaying to a peer, which parses it
	// again itself.
	Line string
}

// UsageError is a line that cannot run: unknown verb or option, bad
// argument, or a line that does not split cleanly. Exit status 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// MaxDelay bounds logoff /delay:SECONDS.
const MaxDelay = 3600

// MaxMessage bounds logoff /msg: text, in bytes.
const MaxMessage = 256

// Parse splits one line and builds the Command it asks for. Any failure is
// a *UsageError and nothing of the line may run. A blank line, or a line
// whose first word starts a comment, is VerbNone.
func Parse(line string) (Command, error) {
	words, err := Split(line)
	if err != nil {
		return Command{}, err
	}
	if len(words) == 0 {
		return Command{Verb: VerbNone}, nil
	}
	cmd := Command{Format: FormatTable, Words: words, Line: line}
	verb := strings.ToLower(words[0])
	args := words[1:]
	switch verb {
	case "logoff":
		cmd.Verb = VerbLogoff
	case "query":
		if len(args) == 0 || isOption(args[0]) {
			if len(args) > 0 && isHelpOption(args[0]) {
				cmd.Verb, cmd.Help = VerbHelp, true
				cmd.Topic = "query"
				return cmd, nil
			}
			return Command{}, usagef("query: say what to query: query session, query user or query process")
		}
		switch strings.ToLower(args[0]) {
		case "session":
			cmd.Verb = VerbQuerySession
		case "user":
			cmd.Verb = VerbQueryUser
		case "process":
			cmd.Verb = VerbQueryProcess
		default:
			return Command{}, usagef("query: unknown object %s: use query session, query user or query process", quoteWord(args[0]))
		}
		args = args[1:]
	case "qwinsta":
		cmd.Verb = VerbQuerySession
	case "quser":
		cmd.Verb = VerbQueryUser
	case "help":
		cmd.Verb = VerbHelp
		cmd.Topic = strings.ToLower(strings.Join(args, " "))
		if _, ok := helpTopics[cmd.Topic]; !ok {
			return Command{}, usagef("help: no help on %s; the topics are logoff, query session, query user, query process", quoteWord(cmd.Topic))
		}
		return cmd, nil
	case "exit", "quit":
		if len(args) > 0 {
			return Command{}, usagef("%s takes no arguments", verb)
		}
		cmd.Verb = VerbExit
		return cmd, nil
	default:
		return Command{}, usagef("unknown command %s: the commands are logoff, query session, query user, query process, help, exit", quoteWord(words[0]))
	}
	return parseArgs(cmd, args)
}

func parseArgs(cmd Command, args []string) (Command, error) {
	name := cmd.Verb
	for _, a := range args {
		if !isOption(a) {
			if a == "" {
				// logoff "$NAME" with NAME empty must not become a bare
				// logoff, which ends the caller's own session.
				return Command{}, usagef("%s: an empty argument; name a session, or give none", name)
			}
			if cmd.Target != "" {
				return Command{}, usagef("%s: one session at a time (got %s and %s)", name, quoteWord(cmd.Target), quoteWord(a))
			}
			cmd.Target = a
			continue
		}
		key, value, hasValue := strings.Cut(a[1:], ":")
		key = strings.ToLower(key)
		switch {
		case key == "?" && !hasValue:
			cmd.Help = true
		case key == "v" && !hasValue && cmd.Verb == VerbLogoff:
			cmd.Verbose = true
		case key == "server":
			if !hasValue || value == "" {
				return Command{}, usagef("%s: /server needs a name: /server:NAME", name)
			}
			if value == "*" && cmd.Verb == VerbQueryProcess {
				return Command{}, usagef("query process: /server:* is not supported; name one server")
			}
			if value != "*" && !config.ValidName(value) {
				return Command{}, usagef("%s: %s is not a server name", name, quoteWord(value))
			}
			if cmd.Server != "" {
				return Command{}, usagef("%s: /server given twice", name)
			}
			cmd.Server = value
		case key == "fo" && cmd.Verb != VerbLogoff:
			switch strings.ToLower(value) {
			case FormatTable, FormatJSON:
				cmd.Format = strings.ToLower(value)
			default:
				return Command{}, usagef("%s: /fo takes table or json", name)
			}
		case key == "msg" && cmd.Verb == VerbLogoff:
			if !hasValue || value == "" {
				return Command{}, usagef("logoff: /msg needs text: /msg:\"text\"")
			}
			if len(value) > MaxMessage {
				return Command{}, usagef("logoff: /msg is longer than %d bytes", MaxMessage)
			}
			cmd.Message = value
		case key == "delay" && cmd.Verb == VerbLogoff:
			n, ok := sessions.ParseNumber(value)
			if !hasValue || !ok || n > MaxDelay {
				return Command{}, usagef("logoff: /delay takes seconds from 0 to %d", MaxDelay)
			}
			cmd.Delay = n
		case key == "now" && !hasValue && cmd.Verb == VerbLogoff:
			cmd.Now = true
		case key == "user" && cmd.Verb == VerbLogoff:
			if !hasValue || !config.ValidName(value) {
				return Command{}, usagef("logoff: /user needs a user name: /user:NAME")
			}
			if cmd.User != "" {
				return Command{}, usagef("logoff: /user given twice")
			}
			cmd.User = value
		case key == "id" && cmd.Verb == VerbQueryProcess:
			n, ok := sessions.ParseNumber(value)
			if !hasValue || !ok {
				return Command{}, usagef("query process: /id takes a session ID: /id:nn")
			}
			if cmd.HasID {
				return Command{}, usagef("query process: /id given twice")
			}
			cmd.ID, cmd.HasID = n, true
		default:
			return Command{}, usagef("%s: unknown option %s (see %s /?)", name, quoteWord(a), name)
		}
	}
	if cmd.Verb == VerbLogoff && cmd.User != "" && cmd.Target != "" {
		return Command{}, usagef("logoff: name a session or /user:NAME, not both")
	}
	if cmd.Verb == VerbLogoff && cmd.Server == "*" && cmd.User == "" {
		return Command{}, usagef("logoff: /server:* is allowed only with /user:NAME; name one server")
	}
	if cmd.Verb == VerbQueryProcess && cmd.HasID && cmd.Target != "" {
		return Command{}, usagef("query process: give /id:nn or a process, user, session or program, not both")
	}
	if cmd.Verb == VerbLogoff && sessions.AllDigits(cmd.Target) {
		if _, ok := sessions.ParseNumber(cmd.Target); !ok {
			return Command{}, usagef("logoff: session ID %s is out of range", quoteWord(cmd.Target))
		}
	}
	return cmd, nil
}

// isOption reports whether a word is an option: it starts with / or -.
// A bare "-" or "/" is not an option.
func isOption(w string) bool {
	return len(w) > 1 && (w[0] == '/' || w[0] == '-')
}

func isHelpOption(w string) bool {
	return isOption(w) && w[1:] == "?"
}

// Split checks a line and splits it into words with google/shlex (a line
// with no quote, backslash or #, the usual one, is split as shlex would
// without it: plainWords). It refuses, as a *UsageError, everything that shlex would take in a way the
// admin did not mean: invalid UTF-8 (shlex would make it U+FFFD), control
// characters (a newline would join two commands), an unterminated quote or
// trailing escape (shlex returns the words so far), and a # that starts a
// comment after a word (`logoff #12` would become a bare logoff). A line
// whose first word is a comment is an empty line.
func Split(line string) ([]string, error) {
	if len(line) > MaxLineBytes {
		return nil, usagef("the line is longer than %d bytes", MaxLineBytes)
	}
	if !utf8.ValidString(line) {
		return nil, usagef("the line is not valid UTF-8")
	}
	for _, r := range line {
		if r != '\t' && (unicode.IsControl(r) || isFormatChar(r)) {
			return nil, usagef("the line has a control character (%U); type it as text", r)
		}
	}
	if !strings.ContainsAny(line, shlexSpecial) {
		return plainWords(line), nil
	}
	words, err := shlex.Split(line)
	if err != nil {
		return nil, usagef("the line does not split: %s (close every quote; no trailing backslash)", shlexReason(err))
	}
	// Comments: shlex drops a # that starts a word and everything after
	// it. Split again with # made plain; if the words differ, a comment
	// swallowed something.
	if strings.Contains(line, "#") {
		plain, err := shlex.Split(strings.ReplaceAll(line, "#", "\x1a"))
		if err != nil {
			return nil, usagef("the line does not split: %s", shlexReason(err))
		}
		same := len(plain) == len(words)
		for i := 0; same && i < len(words); i++ {
			same = strings.ReplaceAll(words[i], "#", "\x1a") == plain[i]
		}
		if !same {
			if len(words) == 0 {
				return nil, nil // the whole line is a comment
			}
			return nil, usagef("a word starts with #, which would begin a comment; quote it: '#...'")
		}
	}
	return words, nil
}

// shlexSpecial are the characters that shlex gives a meaning beyond a
// word's text: escape, quotes, comment.
const shlexSpecial = `\"'#`

// plainWords splits a checked line with none of shlexSpecial as shlex
// would, at runs of the only spaces a checked line can hold (space and
// tab: newline and return are control characters), without shlex's
// 4 KB reader for every command.
func plainWords(line string) []string {
	return strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
}

func shlexReason(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "EOF found when expecting closing quote"):
		return "unterminated quote"
	case strings.Contains(msg, "EOF found after escape character"):
		return "trailing backslash"
	}
	return msg
}

// isFormatChar reports invisible format characters (bidi overrides, zero
// width joiners) that can make a line read differently than it runs.
func isFormatChar(r rune) bool {
	return unicode.Is(unicode.Cf, r)
}

// quoteWord shows a word from the admin in an error message, quoted and
// with anything unprintable escaped.
func quoteWord(w string) string {
	if len(w) > 64 {
		w = w[:64] + "..."
	}
	return fmt.Sprintf("%q", w)
}
