package host

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// noSession is /proc/PID/sessionid when pam_loginuid never set it.
const noSession = 4294967295

// proc is what the source needs to know of one process.
type proc struct {
	pid       int
	ppid      int
	state     byte
	tty       uint64 // tty_nr: the controlling terminal's device number
	start     uint64 // start time in clock ticks since boot
	comm      string
	sessionID uint64 // kernel audit session id; noSession if unset
}

// procTable is one reading of /proc.
type procTable map[int]*proc

// readProc reads one process; ok is false when it has gone.
func readProc(root string, pid int) (*proc, bool) {
	dir := filepath.Join(root, strconv.Itoa(pid))
	data, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return nil, false
	}
	p, ok := parseStat(data)
	if !ok || p.pid != pid {
		return nil, false
	}
	p.sessionID = noSession
	if sid, err := os.ReadFile(filepath.Join(dir, "sessionid")); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(sid)), 10, 64); err == nil {
			p.sessionID = n
		}
	}
	return p, true
}

// parseStat reads /proc/PID/stat. The command name is in parentheses and
// may itself contain spaces and parentheses: the fields start after the
// last ')'.
func parseStat(data []byte) (*proc, bool) {
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open || end+2 > len(data) {
		return nil, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data[:open])))
	if err != nil {
		return nil, false
	}
	f := strings.Fields(string(data[end+2:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 20 {
		return nil, false
	}
	ppid, _ := strconv.Atoi(f[1])
	tty, _ := strconv.ParseInt(f[4], 10, 64)
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return &proc{
		pid: pid, ppid: ppid, state: f[0][0], tty: uint64(uint32(tty)), start: start,
		comm: string(data[open+1 : end]),
	}, true
}

// readProcs reads every process.
func readProcs(root string) procTable {
	ents, err := os.ReadDir(root)
	if err != nil {
		return procTable{}
	}
	t := make(procTable, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A zombie has ended: it belongs to no live session (and where
		// PID 1 does not reap, it lingers with its old session id).
		if p, ok := readProc(root, pid); ok && p.state != 'Z' && p.state != 'X' {
			t[pid] = p
		}
	}
	return t
}

// descendants returns pid and every process below it.
func (t procTable) descendants(pid int) map[int]bool {
	children := make(map[int][]int)
	for _, p := range t {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	out := map[int]bool{}
	stack := []int{pid}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if out[n] || t[n] == nil {
			continue
		}
		out[n] = true
		stack = append(stack, children[n]...)
	}
	return out
}

// environValue reads one variable from a process's environment (root can
// read any), for SSH_CONNECTION of sessions that have no utmp record.
func environValue(root string, pid int, name string) string {
	f, err := os.Open(filepath.Join(root, strconv.Itoa(pid), "environ"))
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	n, _ := f.Read(buf)
	for _, kv := range bytes.Split(buf[:n], []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte("=")); ok && string(k) == name {
			return string(v)
		}
	}
	return ""
}

// loginUID reads /proc/PID/loginuid.
func loginUID(root string, pid int) (int, bool) {
	data, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "loginuid"))
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 32)
	if err != nil || n == noSession {
		return 0, false
	}
	return int(n), true
}

// bootTime is when the machine booted, from /proc/stat btime, in seconds.
func bootTime(root string) int64 {
	data, err := os.ReadFile(filepath.Join(root, "stat"))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// loginManager names the type of a session from its leader's command.
func loginManager(comm string) string {
	switch comm {
	case "sshd", "sshd-session", "sshd-auth":
		return "sshd"
	case "":
		return "unknown"
	}
	return comm
}
