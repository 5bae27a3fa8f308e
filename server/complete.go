package server

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/tsadmin-dev/tsadmin/shell"
)

// completer is the interactive shell's Tab completion, and its Ctrl-C.
type completer struct {
	c       *channel
	t       *term.Terminal
	lastTab string // the line at the last Tab, to list choices on a second
}

// complete is x/term's AutoCompleteCallback. x/term calls it for every key
// with its lock released; it answers only for Tab and Ctrl-C. pos is a
// byte offset.
func (m *completer) complete(line string, pos int, key rune) (string, int, bool) {
	switch key {
	case ctrlCKey:
		// Drop the line, as a shell does; the session goes on.
		fmt.Fprintf(m.t, "%s^C\n", line)
		m.lastTab = ""
		return "", 0, true
	case '\t':
	default:
		m.lastTab = ""
		return "", 0, false
	}
	if pos > len(line) {
		pos = len(line)
	}
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
		fmt.Fprintf(m.t, "%s\n%s\n", line, strings.Join(choices, "  "))
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
			return []string{"session", "user"}
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
		return append(append([]string{"/v", "/?", "/msg:", "/delay:"}, servers...), m.loggableSessions()...)
	case "query session", "query user", "qwinsta", "quser":
		return append([]string{"/fo:table", "/fo:json", "/?"}, servers...)
	}
	return nil
}

func (m *completer) serverOptions() []string {
	names := []string{"/server:" + m.c.srv.env.Server}
	if peers := m.c.srv.env.Peers; peers != nil {
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
	list, _ := m.c.srv.registry.List(ctx)
	policy := m.c.srv.policy.Load()
	var out []string
	for _, s := range list {
		if !policy.Allow(m.c.v.id, s).Allowed {
			continue
		}
		out = append(out, strconv.Itoa(s.ID))
		// Only names that are safe to type back in.
		if s.Name != "" && shell.Clean(s.Name) == s.Name && !strings.ContainsAny(s.Name, " \t'\"\\#") {
			out = append(out, s.Name)
		}
	}
	return out
}

func matching(candidates []string, prefix string) []string {
	var out []string
	seen := map[string]bool{}
	lower := strings.ToLower(prefix)
	for _, c := range candidates {
		if strings.HasPrefix(strings.ToLower(c), lower) && !seen[c] {
			seen[c] = true
			out = append(out, prefix+c[len(prefix):])
		}
	}
	sort.Strings(out)
	return out
}

func commonPrefix(list []string) string {
	p := list[0]
	for _, s := range list[1:] {
		for !strings.HasPrefix(s, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}
