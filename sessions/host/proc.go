package host

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// noSession is /proc/PID/sessionid when pam_loginuid never set it.
const noSession = 4294967295

// proc is what the source needs to know of one process.
type proc struct {
	pid       int
	ppid      int
	sid       int // the kernel session (setsid), stat field 6
	state     byte
	tty       uint64 // tty_nr: the controlling terminal's device number
	start     uint64 // start time in clock ticks since boot
	cpu       uint64 // user and system CPU time (utime + stime), in clock ticks
	comm      string
	sessionID uint64 // kernel audit session id; noSession if unset
	kthread   bool   // a kernel thread (PF_KTHREAD in stat's flags)
}

// pfKthread is the kernel's PF_KTHREAD process flag.
const pfKthread = 0x00200000

// procTable is one reading of /proc.
type procTable map[int]*proc

// readProc reads one process; ok is false when it has gone.
func readProc(root string, pid int) (*proc, bool) {
	var buf [1024]byte
	return readProcBuf(root, pid, buf[:])
}

// readProcBuf reads one process into buf (for stat, then sessionid), with
// plain system calls: a listing reads every process, and os.ReadFile's
// stat and allocations were most of its cost.
func readProcBuf(root string, pid int, buf []byte) (*proc, bool) {
	dir := root + "/" + strconv.Itoa(pid)
	n, ok := readSmall(dir+"/stat", buf)
	if !ok {
		return nil, false
	}
	p, ok := parseStat(buf[:n])
	if !ok || p.pid != pid {
		return nil, false
	}
	p.sessionID = noSession
	// A kernel thread has no audit session: on a server, often half the
	// processes, and a read each saved at every listing.
	if p.kthread {
		return p, true
	}
	if n, ok := readSmall(dir+"/sessionid", buf); ok {
		if v, ok := parseUint(bytes.TrimSpace(buf[:n])); ok {
			p.sessionID = v
		}
	}
	return p, true
}

// readSmall reads a small /proc file into buf.
func readSmall(path string, buf []byte) (int, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	total := 0
	for total < len(buf) {
		n, err := unix.Read(fd, buf[total:])
		if err != nil || n <= 0 {
			break
		}
		total += n
	}
	return total, total > 0
}

func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

func parseInt(b []byte) (int64, bool) {
	if len(b) > 0 && b[0] == '-' {
		n, ok := parseUint(b[1:])
		return -int64(n), ok
	}
	n, ok := parseUint(b)
	return int64(n), ok
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
	pid, ok := parseUint(bytes.TrimSpace(data[:open]))
	if !ok {
		return nil, false
	}
	p := &proc{pid: int(pid), comm: string(data[open+1 : end])}
	// Fields from 3 (state) on, separated by single spaces.
	rest := data[end+2:]
	var utime uint64
	for field := 3; field <= 22; field++ {
		i := bytes.IndexByte(rest, ' ')
		var f []byte
		if i < 0 {
			f, rest = bytes.TrimSpace(rest), nil
		} else {
			f, rest = rest[:i], rest[i+1:]
		}
		if len(f) == 0 {
			return nil, false
		}
		switch field {
		case 3:
			p.state = f[0]
		case 4:
			v, _ := parseInt(f)
			p.ppid = int(v)
		case 6:
			v, _ := parseInt(f)
			p.sid = int(v)
		case 7:
			v, _ := parseInt(f)
			p.tty = uint64(uint32(v))
		case 9:
			v, _ := parseUint(f)
			p.kthread = v&pfKthread != 0
		case 14:
			utime, _ = parseUint(f)
		case 15:
			stime, _ := parseUint(f)
			p.cpu = utime + stime
		case 22:
			p.start, _ = parseUint(f)
		}
		if rest == nil && field < 22 {
			return nil, false
		}
	}
	return p, true
}

// readProcs reads every process.
func readProcs(root string) procTable {
	t, _ := readProcsComplete(root)
	return t
}

// readProcsComplete is readProcs, and reports whether the reading can
// have missed no process born while it ran. A process listed at the start
// may fork and end before it is read: its child, born after the listing,
// is not in it, and a chain that forks and exits in a loop would slip
// through every reading (a logoff would report its session ended while it
// lives on). A child is born with a PID allocated since the listing
// began: the PIDs allocated meanwhile (ns_last_pid) are read too, round
// after round until one allocates none. Where the PIDs wrap, or the host
// forks in every round, the reading is not complete.
func readProcsComplete(root string) (procTable, bool) {
	last, lastOK := lastPID(root)
	d, err := os.Open(root)
	if err != nil {
		return procTable{}, false
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	t := make(procTable, len(names))
	var buf [1024]byte
	add := func(pid int) {
		// A zombie has ended: it belongs to no live session (and where
		// PID 1 does not reap, it lingers with its old session id).
		if p, ok := readProcBuf(root, pid, buf[:]); ok && p.state != 'Z' && p.state != 'X' {
			t[pid] = p
		}
	}
	for _, name := range names {
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		if pid, err := strconv.Atoi(name); err == nil {
			add(pid)
		}
	}
	if !lastOK {
		// A kernel without ns_last_pid (CONFIG_CHECKPOINT_RESTORE): the
		// reading is as good as it gets, and taking it as incomplete
		// would make every logoff report survivors.
		return t, true
	}
	for range 8 {
		now, ok := lastPID(root)
		switch {
		case !ok || now < last || now-last > maxNewPIDs:
			return t, false
		case now == last:
			return t, true
		}
		for pid := last + 1; pid <= now; pid++ {
			if _, seen := t[pid]; !seen {
				add(pid)
			}
		}
		last = now
	}
	return t, false
}

// maxNewPIDs bounds the PIDs born during one reading that it reads one by
// one; past it the reading is incomplete.
const maxNewPIDs = 4096

// lastPID reads the last PID the kernel allocated in this PID namespace.
func lastPID(root string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(root, "sys/kernel/ns_last_pid"))
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return n, err == nil
}

// sessionTree returns pid and the processes below it that are of the
// same login: a child in another kernel session (setsid) than its parent
// is left out, unless its parent is a login manager, below which the
// login's own session starts. The tree never crosses into a session that
// some other login, or a daemon, started.
func (t procTable) sessionTree(pid int) map[int]bool {
	children := make(map[int][]int)
	for _, p := range t {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	out := map[int]bool{}
	stack := []int{pid}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		p := t[n]
		if out[n] || p == nil {
			continue
		}
		out[n] = true
		for _, c := range children[n] {
			if cp := t[c]; cp != nil && (cp.sid == p.sid || isLoginManager(p.comm)) {
				stack = append(stack, c)
			}
		}
	}
	return out
}

// isListener reports whether p is the listening sshd rather than one
// login's: OpenSSH titles it "[listener]"; an older one is an sshd under
// no sshd and without a loginuid (a login's sshd under init, after sshd
// was restarted, has its login's loginuid where pam_loginuid runs).
func isListener(root string, p *proc, procs procTable) bool {
	if p.comm != "sshd" {
		return false
	}
	if cmd, err := os.ReadFile(filepath.Join(root, strconv.Itoa(p.pid), "cmdline")); err == nil && bytes.Contains(cmd, []byte("[listener]")) {
		return true
	}
	if parent := procs[p.ppid]; parent != nil && isLoginManager(parent.comm) {
		return false
	}
	o, ok := readOwner(root, p.pid)
	return ok && o.loginUID < 0
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

// owner is whom a process acts for: the uid it runs as, and the uid its
// login was made for (pam_loginuid; inherited by every process of the login,
// and kept across su and sudo).
type owner struct {
	uid      int // real uid
	loginUID int // -1 when no login set it
}

// readOwner reads a process's real uid and loginuid.
func readOwner(root string, pid int) (owner, bool) {
	var buf [4096]byte
	n, ok := readSmall(root+"/"+strconv.Itoa(pid)+"/status", buf[:])
	if !ok {
		return owner{}, false
	}
	o := owner{uid: -1, loginUID: -1}
	for _, l := range bytes.Split(buf[:n], []byte("\n")) {
		if v, ok := bytes.CutPrefix(l, []byte("Uid:")); ok {
			if f := bytes.Fields(v); len(f) > 0 {
				if n, ok := parseUint(f[0]); ok {
					o.uid = int(n)
				}
			}
			break
		}
	}
	if o.uid < 0 {
		return owner{}, false
	}
	if uid, ok := loginUID(root, pid); ok {
		o.loginUID = uid
	}
	return o, true
}

// actsFor reports whether the process belongs to uid: running as uid, or
// logged in as uid where its loginuid can be believed (trusted: a
// root-owned sshd or login of that login is, as are su and sudo below
// it). A process whose loginuid was unset may write any uid into it
// itself, so a loginuid alone proves nothing. Root is never matched by
// the real uid alone: every daemon runs as root; a process acts for root
// only when it is of a trusted login of root.
func (o owner) actsFor(uid int, trusted bool) bool {
	switch {
	case uid < 0:
		return false
	case uid == 0:
		return trusted && o.loginUID == 0
	}
	return o.uid == uid || trusted && o.loginUID == uid
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

// sessionType names the type of a session without a utmp record from its
// root process: the job runners' sessions are background ones, shown as
// logind shows them (bg:cron), so that the two sources agree.
func sessionType(comm string) string {
	switch comm {
	case "cron", "crond", "atd", "anacron":
		return "bg:" + comm
	}
	return loginManager(comm)
}

// vouches reports whether the loginuid of p (read as o) was set by a
// privileged login program: p runs as root (real uid 0) and is a login
// manager or a job runner that opens PAM sessions. The kernel gives a
// process a new audit session id whenever its loginuid is written, so
// the root of an audit session that p vouches for vouches for the
// loginuid of every process of that session.
func vouches(p *proc, o owner) bool {
	if o.uid != 0 || o.loginUID < 0 {
		return false
	}
	switch p.comm {
	case "sshd", "sshd-session", "login", "cron", "crond", "atd":
		return true
	}
	return false
}

// isLoginManager reports whether comm is a program that writes utmp for
// a child it forks: OpenSSH records the PID of the user's shell for a pty
// login, its own process being the shell's parent.
func isLoginManager(comm string) bool {
	switch comm {
	case "sshd", "sshd-session", "login":
		return true
	}
	return false
}
