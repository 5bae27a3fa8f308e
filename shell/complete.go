package shell

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/keys"
)

// completer is the interactive shell's Tab completion, and its Ctrl-C.
type completer struct {
	env     *Env
	id      keys.Identity
	out     io.Writer // the terminal, for ^C and the list of choices
	lastTab string    // the line at the last Tab, to list choices on a second
}

// complete is x/term's AutoCompleteCallback. x/term calls it for every key
// with its lock released; it answers only for Tab and Ctrl-C. pos is a
// byte offset.
func (m *completer) complete(line string, pos int, key rune) (string, int, bool) {
	switch key {
	case ctrlCKey:
		// Drop the line, as a shell does; the session goes on.
		fmt.Fprintf(m.out, "%s^C\n", Clean(line))
		m.lastTab = ""
		return "", 0, true
	case '\t':
	default:
		m.lastTab = ""
		return "", 0, false
	}
	pos = min(max(pos, 0), len(line))
	head, rest := line[:pos], line[pos:]
	start := strings.LastIndexAny(head, " \t") + 1
	word := head[start:]
	choices := matching(m.candidates(head[:start]), word)
	switch len(choices) {
	case 0:
		return "", 0, false
	case 1:
		add := choices[0][len(word):]
		if !strings.HasSuffix(choices[0], ":") {
			add += " "
		}
		m.lastTab = ""
		return head + add + rest, pos + len(add), true
	}
	// Several: complete their common prefix; on a second Tab, list them.
	common := commonPrefix(choices)
	if len(common) > len(word) {
		add := common[len(word):]
		m.lastTab = ""
		return head + add + rest, pos + len(add), true
	}
	if m.lastTab == line {
		fmt.Fprintf(m.out, "%s\n%s\n", line, strings.Join(choices, "  "))
	}
	m.lastTab = line
	return "", 0, false
}

// candidates are the words that may come after the words before.
func (m *completer) candidates(before string) []string {
	words := strings.Fields(strings.ToLower(before))
	if len(words) == 0 {
		return []string{"logoff", "query", "qwinsta", "quser", "help", "exit", "quit"}
	}
	verb := words[0]
	if verb == "query" {
		if len(words) == 1 {
			return []string{"session", "user", "process"}
		}
		verb = "query " + words[1]
	}
	servers := m.serverOptions()
	switch verb {
	case "help":
		if len(words) == 1 {
			return []string{"logoff", "query", "qwinsta", "quser"}
		}
	case "logoff":
		list := append([]string{"/v", "/?", "/msg:", "/delay:", "/now", "/user:"}, servers...)
		if m.env.Peers != nil && len(m.env.Peers.Names()) > 0 {
			list = append(list, "/server:*") // valid with /user: only
		}
		return append(list, m.loggableSessions()...)
	case "query session", "query user", "qwinsta", "quser":
		return append([]string{"/fo:table", "/fo:json", "/?"}, servers...)
	case "query process":
		return append([]string{"*", "/id:", "/fo:table", "/fo:json", "/?"}, servers...)
	}
	return nil
}

func (m *completer) serverOptions() []string {
	names := []string{"/server:" + m.env.Server}
	if peers := m.env.Peers; peers != nil {
		for _, n := range peers.Names() {
			names = append(names, "/server:"+n)
		}
	}
	return names
}

// loggableSessions are the IDs and names of the sessions the caller may
// log off: nothing they would be refused on.
func (m *completer) loggableSessions() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	list, _ := m.env.Registry.List(ctx)
	policy := m.env.Policy()
	var out []string
	for _, s := range list {
		if !policy.Allow(m.id, s).Allowed {
			continue
		}
		out = append(out, strconv.Itoa(s.ID))
		// Only names that are safe to type back in.
		if s.Name != "" && Clean(s.Name) == s.Name && !strings.ContainsAny(s.Name, " \t'\"\\#") {
			out = append(out, s.Name)
		}
		if config.ValidName(s.User) {
			out = append(out, "/user:"+s.User)
		}
	}
	return out
}

// matching returns the candidates that start with prefix, ignoring case,
// each spelt as prefix (as typed) followed by the rest of the candidate.
// Case is compared rune by rune: a rune's case forms can differ in length
// (İ, K, ſ), so a byte length of one string never indexes the other.
func matching(candidates []string, prefix string) []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range candidates {
		rest, ok := cutPrefixFold(c, prefix)
		if ok && !seen[prefix+rest] {
			seen[prefix+rest] = true
			out = append(out, prefix+rest)
		}
	}
	sort.Strings(out)
	return out
}

// cutPrefixFold reports whether s starts with prefix, ignoring case, and
// returns what follows the prefix in s.
func cutPrefixFold(s, prefix string) (string, bool) {
	for prefix != "" {
		if s == "" {
			return "", false
		}
		r1, n1 := utf8.DecodeRuneInString(s)
		r2, n2 := utf8.DecodeRuneInString(prefix)
		if r1 != r2 && !strings.EqualFold(s[:n1], prefix[:n2]) {
			return "", false
		}
		s, prefix = s[n1:], prefix[n2:]
	}
	return s, true
}

// commonPrefix is the longest common prefix of the list, cut at a rune
// boundary.
func commonPrefix(list []string) string {
	p := list[0]
	for _, s := range list[1:] {
		n := 0
		for n < len(p) && n < len(s) && p[n] == s[n] {
			n++
		}
		p = p[:n]
	}
	for len(p) > 0 && !utf8.ValidString(p) {
		p = p[:len(p)-1]
	}
	return p
}
