package host

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

// Source is the host session source.
type Source struct {
	utmp   string        // utmp file, /var/run/utmp
	size   int           // utmp record size
	proc   string        // /proc
	dev    string        // /dev
	grace  time.Duration // SIGHUP to SIGKILL
	self   int           // this process, never signalled
	clkTck int64
	claims Claims // sessions another source (logind) is the authority for

	// A listing is reused for listFresh: a burst of commands (automation
	// runs thousands) then reads /proc a few times a second, not once per
	// command. A logoff always reads afresh, and drops the cached listing.
	mu       sync.Mutex
	cached   []session
	cachedAt time.Time
	// scanning is the scan under way, if any: listings that find the
	// cached one stale while it runs wait for it rather than read /proc
	// again each (a burst of connections would otherwise all scan at
	// once). forgot counts forget calls: a scan that started before
	// the latest is neither joined nor cached.
	scanning *scanCall
	forgot   uint64
	reported map[string]bool // suspicious records already reported

	// OnSuspicious, when set, is told of login records that lie about
	// their user (a record naming one user whose process belongs to
	// another: a forged or stale record over a reused PID) and of
	// processes a logoff refused to signal because another user owns
	// them. Each record is reported once, not at every listing. main
	// writes these to the audit log. Set it before the first List.
	OnSuspicious func(reason string, attrs ...slog.Attr)
}

// listFresh is how long a listing of the host is reused.
const listFresh = 250 * time.Millisecond

// Claims returns the terminals and leader PIDs of sessions that another
// source lists, so that this source leaves them out.
type Claims func(ctx context.Context) (ttys map[string]bool, leaders map[int]bool, err error)

// DeferTo makes the source leave out the sessions that claims names:
// where logind runs, it is the authority for the sessions it knows.
func (s *Source) DeferTo(claims Claims) {
	s.claims = claims
	s.forget()
}

// New returns the host source reading utmpPath, ending sessions with the
// given grace between SIGHUP and SIGKILL.
func New(utmpPath string, grace time.Duration) *Source {
	return &Source{utmp: utmpPath, size: NativeSize(), proc: "/proc", dev: "/dev", grace: grace,
		self: os.Getpid(), clkTck: 100}
}

// Name implements sessions.Source.
func (s *Source) Name() string { return "host" }

// session is a host session with what the source needs to end it.
type session struct {
	sessions.Session
	leader    int    // the login manager's process (sshd, login), else the utmp pid or the root of a no-tty session
	leaderAt  uint64 // its start time
	owner     int    // the uid the session's processes act for; only they are signalled
	sessionID uint64 // audit session id, or noSession
	tty       uint64 // the terminal's device number, 0 if none
	// trusted: the session's loginuid was set by a root-owned login
	// manager (see vouches), so a process's loginuid ties it to the
	// session's user; otherwise only its real uid does.
	trusted bool
}

// lineRE is what a utmp line may be for the source to touch its device.
var lineRE = regexp.MustCompile(`^(pts/[0-9]{1,6}|tty[A-Za-z0-9]{1,8}|console)$`)

// List implements sessions.Source.
func (s *Source) List(ctx context.Context) ([]sessions.Session, error) {
	s.mu.Lock()
	list, at := s.cached, s.cachedAt
	if time.Since(at) > listFresh {
		c := s.scanning
		if c == nil || c.forgot != s.forgot {
			c = &scanCall{done: make(chan struct{}), forgot: s.forgot}
			s.scanning = c
			s.mu.Unlock()
			s.runScan(ctx, c)
		} else {
			s.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if c.err != nil {
			return nil, c.err
		}
		list = c.list
	} else {
		s.mu.Unlock()
	}
	out := make([]sessions.Session, len(list))
	for i, h := range list {
		out[i] = h.Session
	}
	return out, nil
}

// scan reads utmp and /proc into the current sessions.
func (s *Source) scan(ctx context.Context) ([]session, error) {
	recs, err := ReadFile(s.utmp, s.size)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.utmp, err)
	}
	var ttys map[string]bool
	var leaders map[int]bool
	if s.claims != nil {
		// If the authority cannot answer, list everything rather than
		// hide sessions.
		ttys, leaders, _ = s.claims(ctx)
	}
	procs := readProcs(s.proc)
	roots := s.auditRoots(procs)
	boot := bootTime(s.proc)
	now := time.Now()
	var out []session
	claimed := map[uint64]bool{} // audit session ids of utmp sessions
	suspicious := map[string]func(){}
	for _, r := range recs {
		p := procs[int(r.PID)]
		if p == nil {
			continue // stale record: its process has gone
		}
		uid, ok := s.verify(r, p, procs, roots, boot, suspicious)
		if !ok {
			continue
		}
		leader := s.loginManagerOf(p, procs, roots, uid)
		if ttys[r.Line] || leaders[leader.pid] || leaders[p.pid] {
			continue // logind lists it
		}
		h := session{leader: leader.pid, leaderAt: leader.start, sessionID: leader.sessionID, owner: uid,
			trusted: roots.vouch(leader.sessionID) == uid}
		h.Name = r.Line
		h.User = userName(uid)
		h.Device = r.Host
		h.LogonTime = r.Time
		h.Type = loginManager(leader.comm)
		h.Key = fmt.Sprintf("utmp:%s:%d:%d", r.Line, leader.pid, leader.start)
		h.State = sessions.Disc
		if lineRE.MatchString(r.Line) {
			// The line is the session's terminal only while its user owns
			// it and a process of the session has it as its controlling
			// terminal: a record outlives its pty (utempter, a closed
			// tmux pane), and the next pty of that number may be anyone's.
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(s.dev, r.Line), &st); err == nil &&
				st.Mode&syscall.S_IFMT == syscall.S_IFCHR && int(st.Uid) == uid && s.controls(h, procs, st.Rdev) {
				h.tty = st.Rdev
				h.IdleTime = max(0, now.Sub(time.Unix(st.Atim.Sec, st.Atim.Nsec)))
				h.State = sessions.Active
			}
		}
		if h.sessionID != noSession {
			claimed[h.sessionID] = true
		}
		out = append(out, h)
	}
	for _, h := range s.noTTY(procs, roots, claimed, suspicious) {
		if !leaders[h.leader] {
			out = append(out, h)
		}
	}
	s.report(suspicious)
	return out, nil
}

// startSlack is how much later than its record a process may seem to have
// started: /proc gives start times in clock ticks after a boot time that
// is rounded to the second.
const startSlack = 2

// verify decides whether a utmp record is a live session, and returns the
// uid the session belongs to. The record's PID must be the process the
// record describes: one that started no later than the record was written
// and that acts for the record's user (logged in as that user, or running
// as that user). Any local user can have a record written (libutempter's
// setgid helper writes one naming the caller, with its parent's PID); once
// that PID has died and been reused by another user's process, a record
// taken at its word would hand that process, and its whole login, to
// whoever may end the record's user. A record whose process belongs to
// another user is noted in suspicious, keyed by record.
//
// A record must also name a process that can lead a login: not PID 1, not
// tsadmin, not the listening sshd, and a session leader (setsid) unless
// its parent is the login manager of the same login. A forged record over
// PID 1 or a daemon would otherwise make every process under it a member.
func (s *Source) verify(r Record, p *proc, procs procTable, roots auditRoots, boot int64, suspicious map[string]func()) (int, bool) {
	started := int64(-1)
	if boot > 0 {
		started = boot + int64(p.start)/s.clkTck
	}
	fresh := started >= 0 && !r.Time.IsZero() && started <= r.Time.Unix()+startSlack
	attrs := []slog.Attr{slog.String("line", r.Line), slog.String("record_user", r.User),
		slog.Int("pid", p.pid), slog.String("process", p.comm), slog.Bool("started_after_record", !fresh)}
	note := func(reason string, more ...slog.Attr) {
		key := fmt.Sprintf("%d:%d:%d:%s:%s", r.RecordOff, r.PID, r.Time.UnixNano(), r.Line, r.User)
		all := slices.Concat(attrs, more)
		suspicious[key] = func() { s.OnSuspicious(reason, all...) }
	}
	u, err := user.Lookup(r.User)
	if err != nil {
		note("a login record names a user that does not exist; it is not listed")
		return 0, false
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, false
	}
	o, ok := readOwner(s.proc, p.pid)
	if !ok {
		return 0, false // gone meanwhile
	}
	if !o.actsFor(uid, roots.vouch(p.sessionID) == uid) {
		note("a login record names another user than the owner of its process; it is not listed",
			slog.Int("record_uid", uid), slog.Int("process_uid", o.uid), slog.Int("process_loginuid", o.loginUID))
		return 0, false
	}
	if !fresh {
		return 0, false // the record's process has gone and its PID was reused by the same user
	}
	if p.pid == 1 || p.pid == s.self || isListener(s.proc, p, procs) ||
		p.sid != p.pid && s.loginManagerOf(p, procs, roots, uid) == p {
		note("a login record names a process that does not lead a login (PID 1, tsadmin, the listening sshd, or no session leader); it is not listed")
		return 0, false
	}
	return uid, true
}

// loginManagerOf returns the process that manages the login of a utmp
// record's process p: p itself when it is sshd or login (OpenSSH's
// privileged monitor, login(1)); else its parent when that is sshd or
// login of the same login (same audit session, acting for the same user),
// as where OpenSSH records the PID of the user's shell; else p (tmux and
// screen record their own PID).
func (s *Source) loginManagerOf(p *proc, procs procTable, roots auditRoots, uid int) *proc {
	if isLoginManager(p.comm) {
		return p // never walk up to the listening sshd
	}
	parent := procs[p.ppid]
	if parent == nil || parent.pid == 1 || parent.pid == s.self || !isLoginManager(parent.comm) ||
		parent.sessionID != p.sessionID {
		return p
	}
	if o, ok := readOwner(s.proc, parent.pid); ok && o.actsFor(uid, roots.vouch(parent.sessionID) == uid) {
		return parent
	}
	return p
}

// report passes the suspicious records of one scan to OnSuspicious, each
// once: a record is reported again only after it has been gone from a
// scan.
func (s *Source) report(suspicious map[string]func()) {
	s.mu.Lock()
	var calls []func()
	for key, call := range suspicious {
		if !s.reported[key] {
			calls = append(calls, call)
		}
	}
	s.reported = make(map[string]bool, len(suspicious))
	for key := range suspicious {
		s.reported[key] = true
	}
	s.mu.Unlock()
	if s.OnSuspicious == nil {
		return
	}
	for _, call := range calls {
		call()
	}
}

// userName is the name of uid, or the number when it has none.
func userName(uid int) string {
	id := strconv.Itoa(uid)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}

// auditRoots holds, for each audit session id, the root of its group of
// processes (the oldest member whose parent is not in the group) and the
// loginuid that root vouches for (-1 when it vouches for none).
type auditRoots map[uint64]auditRoot

type auditRoot struct {
	p     *proc
	vouch int
}

// auditRoots groups the processes of procs by audit session id.
func (s *Source) auditRoots(procs procTable) auditRoots {
	groups := map[uint64][]*proc{}
	for _, p := range procs {
		if p.sessionID != noSession && p.sessionID != 0 {
			groups[p.sessionID] = append(groups[p.sessionID], p)
		}
	}
	out := make(auditRoots, len(groups))
	for sid, members := range groups {
		slices.SortFunc(members, func(a, b *proc) int { return cmp.Compare(a.start, b.start) })
		root := members[0]
		for _, m := range members {
			if parent := procs[m.ppid]; parent == nil || parent.sessionID != sid {
				root = m
				break
			}
		}
		r := auditRoot{p: root, vouch: -1}
		if o, ok := readOwner(s.proc, root.pid); ok && vouches(root, o) {
			r.vouch = o.loginUID
		}
		out[sid] = r
	}
	return out
}

// vouch is the loginuid that the root of audit session sid vouches for,
// or -1.
func (a auditRoots) vouch(sid uint64) int {
	if r, ok := a[sid]; ok {
		return r.vouch
	}
	return -1
}

// controls reports whether a process of session h has the terminal tty as
// its controlling terminal.
func (s *Source) controls(h session, procs procTable, tty uint64) bool {
	if h.sessionID != noSession {
		for _, p := range procs {
			if p.sessionID == h.sessionID && p.tty == tty {
				return true
			}
		}
		return false
	}
	for _, p := range s.members(h, procs) {
		if p.tty == tty {
			return true
		}
	}
	return false
}

// noTTY finds sessions that have no utmp record (OpenSSH writes none for
// ssh -T and scp, cron writes none): groups of processes sharing an audit
// session id that no utmp session claims. A group belongs to the loginuid
// of its root only when that root vouches for it (a root-owned sshd,
// login or cron that set it); any process whose loginuid was unset may
// set one itself, so a group whose root does not vouch is listed under
// the real uid of its root, and reported when it claims another user.
func (s *Source) noTTY(procs procTable, roots auditRoots, claimed map[uint64]bool, suspicious map[string]func()) []session {
	boot := bootTime(s.proc)
	var out []session
	for sid, r := range roots {
		root := r.p
		if claimed[sid] || root.pid == s.self {
			continue // tsadmin itself was started from a login
		}
		o, ok := readOwner(s.proc, root.pid)
		if !ok {
			continue // gone meanwhile
		}
		h := session{leader: root.pid, leaderAt: root.start, sessionID: sid, owner: o.uid}
		h.Name = "sess:" + strconv.FormatUint(sid, 10)
		h.Key = fmt.Sprintf("audit:%d:%d:%d", sid, root.pid, root.start)
		if r.vouch >= 0 {
			h.owner, h.trusted = r.vouch, true
		} else if o.uid != 0 && o.loginUID >= 0 && o.loginUID != o.uid {
			// (root may set any loginuid; a user's process only its own.)
			attrs := []slog.Attr{slog.String("session", h.Name), slog.Int("pid", root.pid), slog.String("process", root.comm),
				slog.Int("process_uid", o.uid), slog.Int("process_loginuid", o.loginUID)}
			suspicious[h.Key] = func() {
				s.OnSuspicious("a process that is no login manager set its own loginuid to another user; its session is listed under its real user", attrs...)
			}
		}
		h.Type = sessionType(root.comm)
		h.State = sessions.Active
		h.User = userName(h.owner)
		if boot > 0 {
			h.LogonTime = time.Unix(boot+int64(root.start)/s.clkTck, 0)
		}
		if h.trusted && isLoginManager(root.comm) {
			h.Device = s.sshPeer(sid, procs)
		}
		out = append(out, h)
	}
	return out
}

// sshPeer is the client address of the SSH login with audit session sid,
// from the environment sshd gave the process it started for the login (a
// member whose parent is a member sshd): only sshd writes that one.
func (s *Source) sshPeer(sid uint64, procs procTable) string {
	for _, p := range procs {
		parent := procs[p.ppid]
		if p.sessionID != sid || parent == nil || parent.sessionID != sid || !isLoginManager(parent.comm) || isLoginManager(p.comm) {
			continue
		}
		if c := environValue(s.proc, p.pid, "SSH_CONNECTION"); c != "" {
			addr, _, _ := strings.Cut(c, " ")
			return addr
		}
	}
	return ""
}

// find re-reads the host and returns the session with key.
func (s *Source) find(ctx context.Context, key string) (session, error) {
	list, err := s.scan(ctx)
	if err != nil {
		return session{}, err
	}
	for _, h := range list {
		if h.Key == key {
			return h, nil
		}
	}
	return session{}, sessions.Errorf(sessions.ErrNotFound, "the session has already ended")
}

// members returns the processes of a session: every process with its
// audit session id when that is set (setsid and nohup do not change it);
// otherwise the processes on its terminal and the tree under its leader
// down to where another kernel session starts. The leader comes first.
// tsadmin itself, PID 1 and the listening sshd are never members.
func (s *Source) members(h session, procs procTable) []*proc {
	in := map[int]bool{}
	if h.sessionID != noSession {
		for _, p := range procs {
			if p.sessionID == h.sessionID {
				in[p.pid] = true
			}
		}
	} else {
		for pid := range procs.sessionTree(h.leader) {
			in[pid] = true
		}
		if h.tty != 0 {
			for _, p := range procs {
				if p.tty == h.tty {
					in[p.pid] = true
				}
			}
		}
	}
	if l := procs[h.leader]; l != nil && l.start == h.leaderAt {
		in[h.leader] = true
	}
	delete(in, s.self)
	delete(in, 1)
	for pid := range in {
		if isListener(s.proc, procs[pid], procs) {
			delete(in, pid)
		}
	}
	var out []*proc
	if in[h.leader] {
		out = append(out, procs[h.leader])
	}
	for pid := range in {
		if pid != h.leader {
			out = append(out, procs[pid])
		}
	}
	return out
}

// handle is a process held by its pidfd, so that a signal can only ever
// reach the process that was checked, never a later one with its PID.
type handle struct {
	p   *proc // as read after the pidfd was opened
	fd  int
	uid int // the real uid it runs as
}

// hold opens pidfds for the processes of session h and re-checks, after
// opening, that each is still the process that was read (same start time)
// and that it acts for the session's user: permission was decided against
// that user, so a process of anyone else is never signalled, whatever
// tied it to the session. Processes that have gone or been replaced are
// dropped; those of other users are returned in foreign.
func (s *Source) hold(h session, ps []*proc) (held []handle, foreign []*proc) {
	for _, p := range ps {
		fd, err := unix.PidfdOpen(p.pid, 0)
		if err != nil {
			continue // gone
		}
		now, ok := readProc(s.proc, p.pid)
		if !ok || now.start != p.start {
			unix.Close(fd)
			continue // the PID now names another process
		}
		// Read after the pidfd is open: the owner is that of the held
		// process (the start time check above ties the two).
		o, ok := readOwner(s.proc, p.pid)
		if !ok || !o.actsFor(h.owner, h.trusted) {
			unix.Close(fd)
			if ok {
				foreign = append(foreign, p)
			}
			continue
		}
		held = append(held, handle{p: now, fd: fd, uid: o.uid})
	}
	return held, foreign
}

// refuse reports the processes a logoff will not signal because another
// user owns them, each once (done holds those already reported).
func (s *Source) refuse(h session, foreign []*proc, done map[int]uint64, report sessions.Reporter) {
	for _, p := range foreign {
		if at, ok := done[p.pid]; ok && at == p.start {
			continue
		}
		done[p.pid] = p.start
		report.Report("not signalling process %d (%s): it does not belong to %s", p.pid, p.comm, h.User)
		if s.OnSuspicious != nil {
			s.OnSuspicious("a logoff found a process of another user in the session; it was not signalled",
				slog.String("session", h.Name), slog.String("user", h.User), slog.Int("uid", h.owner),
				slog.Int("pid", p.pid), slog.String("process", p.comm))
		}
	}
}

func release(hs []handle) {
	for _, h := range hs {
		unix.Close(h.fd)
	}
}

// exited reports whether a held process has ended (a zombie has).
func exited(h handle) bool {
	fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// signal sends sig through the pidfd. ESRCH (already gone) is no error;
// EPERM is the server's missing privilege.
func signal(h handle, sig unix.Signal) error {
	err := unix.PidfdSendSignal(h.fd, sig, nil, 0)
	switch {
	case err == nil, errors.Is(err, unix.ESRCH):
		return nil
	case errors.Is(err, unix.EPERM):
		return sessions.Errorf(sessions.ErrPrivilege, "the server lacks the privilege to signal process %d (%s): run it as root or with CAP_KILL", h.p.pid, h.p.comm)
	}
	return fmt.Errorf("signalling process %d: %w", h.p.pid, err)
}

// describe lists processes for /v and for what survived.
func describe(hs []handle) string {
	parts := make([]string, 0, len(hs))
	for _, h := range hs {
		parts = append(parts, fmt.Sprintf("%d (%s)", h.p.pid, h.p.comm))
	}
	return strings.Join(parts, ", ")
}

// Logoff implements sessions.Source: SIGHUP to every process of the
// session, the login manager first so that the client sees a clean close;
// after the grace period, SIGKILL to whatever remains. Processes that join
// the session meanwhile (children forked during the grace) are found by a
// fresh reading of /proc at each step. With req.Now (logoff /now) there is
// no SIGHUP and no grace: SIGKILL at once.
func (s *Source) Logoff(ctx context.Context, target sessions.Session, req sessions.LogoffRequest) error {
	defer s.forget()
	h, err := s.find(ctx, target.Key)
	if err != nil {
		return err
	}
	return s.end(ctx, h, target.ID, req)
}

// end signals the processes of session h that act for its user.
func (s *Source) end(ctx context.Context, h session, id int, req sessions.LogoffRequest) error {
	report := req.Report
	held, foreign := s.hold(h, s.members(h, readProcs(s.proc)))
	defer func() { release(held) }()
	refused := map[int]uint64{}
	s.refuse(h, foreign, refused, report)
	if len(held) == 0 {
		return sessions.Errorf(sessions.ErrNotFound, "session %d has no processes of %s left", id, h.User)
	}
	report.Report("session %s of %s: %d processes: %s", h.Name, h.User, len(held), describe(held))
	remaining := func() []handle {
		var left []handle
		for _, p := range held {
			if !exited(p) {
				left = append(left, p)
			}
		}
		return left
	}
	// rescan holds the session's processes not held yet (children forked
	// since the last look), and reports whether the session is empty:
	// every process held so far had ended before a fresh reading of /proc
	// that found no other. The order matters: a child forked by a held
	// process exists before its parent has ended, so that reading has it;
	// "the processes held so far ended" alone is no proof, as a process
	// that forks and exits in a loop shows.
	// A process the reading found counts even if it is gone before it
	// could be held: it may have forked first.
	// The reading must also be complete: one that may have missed a
	// child born while it ran (readProcsComplete) proves nothing.
	rescan := func() (fresh []handle, empty bool) {
		ended := len(remaining()) == 0
		procs, complete := readProcsComplete(s.proc)
		fresh, foreign, found := s.newMembers(h, procs, held)
		s.refuse(h, foreign, refused, report)
		held = append(held, fresh...)
		return fresh, ended && found == 0 && complete
	}
	wait := func() error {
		select {
		case <-ctx.Done():
			return sessions.Errorf(sessions.ErrSurvived, "cancelled while waiting: %s remain", describe(remaining()))
		case <-time.After(50 * time.Millisecond):
			return nil
		}
	}
	signalled := map[int]uint64{}
	hup := func(hs []handle) error {
		for _, p := range hs {
			if at, done := signalled[p.p.pid]; done && at == p.p.start {
				continue
			}
			if err := signal(p, unix.SIGHUP); err != nil {
				return err
			}
			// As the kernel does on a hangup: a stopped process must run
			// to see its SIGHUP.
			signal(p, unix.SIGCONT)
			signalled[p.p.pid] = p.p.start
		}
		return nil
	}
	if req.Now {
		report.Report("/now: sending SIGKILL to %d processes, with no SIGHUP and no grace", len(held))
		return s.kill(h, id, report, remaining, rescan, wait)
	}
	if err := hup(held); err != nil {
		return err
	}
	if first := held[0].p; first.pid == h.leader && isLoginManager(first.comm) {
		report.Report("sent SIGHUP to %d processes, the login manager %s (%d) first", len(held), first.comm, first.pid)
	} else {
		report.Report("sent SIGHUP to %d processes", len(held))
	}

	deadline := time.Now().Add(s.grace)
	for time.Now().Before(deadline) {
		fresh, empty := rescan()
		if empty {
			report.Report("all processes ended after SIGHUP")
			return nil
		}
		if err := hup(fresh); err != nil {
			return err
		}
		if err := wait(); err != nil {
			return err
		}
	}
	rescan()
	left := remaining()
	report.Report("after %s, %d processes remain: %s; sending SIGKILL", s.grace, len(left), describe(left))
	return s.kill(h, id, report, remaining, rescan, wait)
}

// kill ends what is left of a session: each round sends SIGKILL to what is
// held and looks again, until a reading finds the session empty. A killed
// process forks no more, but one may have forked just before its SIGKILL.
func (s *Source) kill(h session, id int, report sessions.Reporter, remaining func() []handle,
	rescan func() ([]handle, bool), wait func() error) error {
	for round := 0; round < killRounds; round++ {
		// The login managers (sshd, the user's sshd-session that holds
		// the terminal) are killed last: killing one hangs up the
		// terminal, and the SIGHUP of that hangup would reach a shell
		// not yet killed, which could run its HUP trap (seen under load):
		// /now promises no SIGHUP.
		left := remaining()
		for _, managers := range []bool{false, true} {
			for _, p := range left {
				if isLoginManager(p.p.comm) != managers {
					continue
				}
				if err := signal(p, unix.SIGKILL); err != nil {
					return err
				}
			}
		}
		if err := wait(); err != nil {
			return err
		}
		if _, empty := rescan(); empty {
			report.Report("all processes ended after SIGKILL")
			return nil
		}
	}
	return sessions.Errorf(sessions.ErrSurvived, "session %d: processes survived SIGKILL: %s", id, describe(remaining()))
}

// Processes implements sessions.ProcessLister: for each session, the
// processes a logoff of it would signal now (its members that act for
// its user), each read through a pidfd held while it is read, so that a
// PID reused meanwhile is never shown as the session's. The session's
// login manager comes first.
func (s *Source) Processes(ctx context.Context, list []sessions.Session) (map[string][]sessions.Process, error) {
	current, err := s.scan(ctx)
	if err != nil {
		return nil, err
	}
	byKey := make(map[string]session, len(current))
	for _, h := range current {
		byKey[h.Key] = h
	}
	procs := readProcs(s.proc)
	boot := bootTime(s.proc)
	names := map[int]string{}
	out := make(map[string][]sessions.Process, len(list))
	for _, target := range list {
		h, ok := byKey[target.Key]
		if !ok {
			continue // ended meanwhile
		}
		held, _ := s.hold(h, s.members(h, procs))
		ps := make([]sessions.Process, 0, len(held))
		for _, p := range held {
			if names[p.uid] == "" {
				names[p.uid] = userName(p.uid)
			}
			var start time.Time
			if boot > 0 {
				start = time.Unix(boot, 0).Add(s.ticks(p.p.start))
			}
			ps = append(ps, sessions.Process{
				PID: p.p.pid, User: names[p.uid], Command: p.p.comm, Start: start,
				CPU: s.ticks(p.p.cpu),
			})
		}
		release(held)
		// The leader first, then by PID: a stable order to read.
		slices.SortStableFunc(ps, func(a, b sessions.Process) int {
			switch {
			case a.PID == h.leader:
				return -1
			case b.PID == h.leader:
				return 1
			}
			return cmp.Compare(a.PID, b.PID)
		})
		out[target.Key] = ps
	}
	return out, nil
}

// ticks converts clock ticks to a duration, whole seconds first so that
// years of uptime do not overflow.
func (s *Source) ticks(n uint64) time.Duration {
	hz := uint64(s.clkTck)
	return time.Duration(n/hz)*time.Second + time.Duration(n%hz)*time.Second/time.Duration(hz)
}

// killRounds bounds the SIGKILL rounds of a logoff (50 ms apart).
const killRounds = 40

// forget drops the cached listing, and any scan under way from being
// joined or cached: the next listing reads afresh.
func (s *Source) forget() {
	s.mu.Lock()
	s.cached, s.cachedAt = nil, time.Time{}
	s.forgot++
	s.mu.Unlock()
}

// runScan runs c's scan and caches it unless forget was called meanwhile.
// Those waiting for it are released even if the scan panics (the
// registry turns the panic into this source's error).
func (s *Source) runScan(ctx context.Context, c *scanCall) {
	c.err = errors.New("the scan of the host failed")
	defer func() {
		s.mu.Lock()
		if s.scanning == c {
			s.scanning = nil
		}
		if c.err == nil && c.forgot == s.forgot {
			s.cached, s.cachedAt = c.list, time.Now()
		}
		s.mu.Unlock()
		close(c.done)
	}()
	c.list, c.err = s.scan(ctx)
}

// scanCall is one scan that concurrent listings share.
type scanCall struct {
	done   chan struct{} // closed when list and err are set
	forgot uint64        // Source.forgot when it started
	list   []session
	err    error
}

// newMembers holds the session's processes that are not held yet; found
// is how many of the session's user procs has, held or gone meanwhile.
func (s *Source) newMembers(h session, procs procTable, held []handle) (fresh []handle, foreign []*proc, found int) {
	known := map[int]uint64{}
	for _, p := range held {
		known[p.p.pid] = p.p.start
	}
	var ps []*proc
	for _, p := range s.members(h, procs) {
		if at, ok := known[p.pid]; !ok || at != p.start {
			ps = append(ps, p)
		}
	}
	fresh, foreign = s.hold(h, ps)
	// Another user's processes are never signalled, so they do not keep
	// the session from being empty.
	return fresh, foreign, len(ps) - len(foreign)
}

// Message implements sessions.Messenger: it writes text to the session's
// terminal, as write(1) does.
func (s *Source) Message(ctx context.Context, target sessions.Session, text string) error {
	h, err := s.find(ctx, target.Key)
	if err != nil {
		return err
	}
	if h.tty == 0 || !lineRE.MatchString(h.Name) {
		return sessions.ErrNoMessage
	}
	f, err := os.OpenFile(filepath.Join(s.dev, h.Name), os.O_WRONLY|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var st syscall.Stat_t
	// Checked on the opened file: the pty may have been closed and its
	// number given to another user since the listing.
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != h.tty ||
		int(st.Uid) != h.owner {
		return fmt.Errorf("%s is not the session's terminal", h.Name)
	}
	_, err = f.WriteString("\r\n\a" + text + "\r\n")
	return err
}
