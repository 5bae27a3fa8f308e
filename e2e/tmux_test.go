package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// tmuxTerm is the real ssh client in a real terminal (tmux), typed into
// with send-keys and read with capture-pane.
type tmuxTerm struct {
	t      *testing.T
	socket string
	name   string
}

func (s *Server) tmux(t *testing.T, key Key, width, height int) *tmuxTerm {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed: run scripts/install-deps")
	}
	tm := &tmuxTerm{t: t, socket: fmt.Sprintf("%s/tmux.sock", t.TempDir()), name: "tsadmin"}
	sshCmd := "ssh " + strings.Join(s.sshArgs(key), " ") + " admin@127.0.0.1"
	// remain-on-exit keeps the screen readable after ssh has exited.
	tm.run("new-session", "-d", "-s", tm.name, "-x", fmt.Sprint(width), "-y", fmt.Sprint(height), sshCmd,
		";", "set-option", "-t", tm.name, "remain-on-exit", "on")
	t.Cleanup(func() { exec.Command("tmux", "-S", tm.socket, "kill-server").Run() })
	if !tm.waitFor("@WF12>", 10*time.Second) {
		t.Fatalf("no prompt in tmux: %q", tm.screen())
	}
	return tm
}

func (tm *tmuxTerm) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v %s", args, err, out)
	}
	return string(out)
}

// keys types keys as tmux names them (Tab, Up, C-c, Enter, or text).
func (tm *tmuxTerm) keys(keys ...string) {
	tm.run(append([]string{"send-keys", "-t", tm.name}, keys...)...)
	time.Sleep(150 * time.Millisecond)
}

func (tm *tmuxTerm) screen() string {
	return tm.run("capture-pane", "-p", "-t", tm.name)
}

func (tm *tmuxTerm) waitFor(s string, d time.Duration) bool {
	return waitUntil(d, func() bool { return strings.Contains(tm.screen(), s) })
}

// lastLine is the line the cursor is on (the prompt and what is typed).
func (tm *tmuxTerm) lastLine() string {
	lines := strings.Split(strings.TrimRight(tm.screen(), "\n "), "\n")
	return lines[len(lines)-1]
}

func (tm *tmuxTerm) alive() bool {
	out, err := exec.Command("tmux", "-S", tm.socket, "list-panes", "-t", tm.name, "-F", "#{pane_dead}").CombinedOutput()
	return err == nil && strings.TrimSpace(string(out)) == "0"
}

func TestInteractiveCompletionHistoryAndResize(t *testing.T) {
	f := newFleet(t, "")
	bob := f.Open(f.bob)
	defer bob.Close()
	bobID := sessionsOf(f.List(f.alice), "bob")[0].ID
	tm := f.tmux(t, f.alice, 120, 30)

	// Tab completes a verb.
	tm.keys("lo", "Tab")
	if got := tm.lastLine(); !strings.HasSuffix(got, "alice@WF12> logoff") {
		t.Fatalf("lo<Tab>: %q", got)
	}
	// After logoff, Tab Tab lists options and the sessions alice may end.
	tm.keys("Tab", "Tab")
	if !tm.waitFor(fmt.Sprint(bobID), 3*time.Second) || !strings.Contains(tm.screen(), "/server:WF12") {
		t.Fatalf("logoff <Tab><Tab> lists no choices: %q", tm.screen())
	}
	tm.keys("C-c")
	// Ctrl-C dropped the line; the session goes on.
	if got := tm.lastLine(); !strings.HasSuffix(strings.TrimSpace(got), "alice@WF12>") {
		t.Fatalf("after Ctrl-C the line is not empty: %q", got)
	}
	// qwi<Tab> completes to qwinsta; /fo:j<Tab> to /fo:json.
	tm.keys("qwi", "Tab", "/fo:j", "Tab")
	if got := tm.lastLine(); !strings.HasSuffix(strings.TrimSpace(got), "qwinsta /fo:json") {
		t.Fatalf("completion: %q", got)
	}
	tm.keys("C-u", "quser", "Enter")
	if !tm.waitFor("LOGON TIME", 3*time.Second) {
		t.Fatalf("quser did not run: %q", tm.screen())
	}
	// History: Up brings quser back.
	tm.keys("Up")
	if got := tm.lastLine(); !strings.HasSuffix(strings.TrimSpace(got), "alice@WF12> quser") {
		t.Fatalf("Up: %q", got)
	}
	tm.keys("C-u")

	// Resize: the table follows the window and never wraps.
	tm.run("resize-window", "-t", tm.name, "-x", "40", "-y", "30")
	time.Sleep(300 * time.Millisecond)
	tm.keys("C-l", "query session", "Enter")
	if !tm.waitFor(" SESSIONNAME", 3*time.Second) {
		t.Fatalf("query session printed no table: %q", tm.screen())
	}
	for _, l := range strings.Split(tm.screen(), "\n") {
		if len([]rune(l)) > 40 {
			t.Errorf("a line is wider than the window: %q", l)
		}
		if strings.HasPrefix(l, " SESSIONNAME") && !strings.Contains(l, "~") {
			t.Errorf("the header was not cut to the width: %q", l)
		}
	}
	// Ctrl-D on an empty line ends the session.
	tm.keys("C-u", "C-d")
	deadline := time.Now().Add(5 * time.Second)
	for tm.alive() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if tm.alive() {
		t.Fatalf("Ctrl-D did not end the session: %q", tm.screen())
	}
}

// logoff /msg writes to the target's terminal, /delay waits, then the
// logoff happens.
func TestLogoffWarnsTheTargetFirst(t *testing.T) {
	f := newFleet(t, "")
	tm := f.tmux(t, f.bob, 100, 20)
	id := sessionsOf(f.List(f.alice), "bob")[0].ID
	start := time.Now()
	r := f.Run(f.alice, "", fmt.Sprintf(`logoff %d /msg:"Save your work, the lab closes" /delay:2 /v`, id))
	took := time.Since(start)
	if r.Status != 0 {
		t.Fatalf("logoff /msg /delay: %d %q", r.Status, r.Stderr)
	}
	if took < 2*time.Second {
		t.Errorf("the logoff did not wait /delay: %s", took)
	}
	if !strings.Contains(r.Stdout, "message written") || !strings.Contains(r.Stdout, "waiting 2 seconds") {
		t.Errorf("/v does not report the warning: %q", r.Stdout)
	}
	screen := tm.screen()
	if !strings.Contains(screen, "Message from alice (tsadmin on WF12): Save your work, the lab closes") {
		t.Errorf("the message did not reach bob's terminal: %q", screen)
	}
	if !strings.Contains(screen, "logged off by alice") {
		t.Errorf("bob's terminal does not say he was logged off: %q", screen)
	}
}
