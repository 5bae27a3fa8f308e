package host

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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
	leader    int    // utmp pid: the login manager's process, or the root of a no-tty session
	leaderAt  uint64 // its start time
	sessionID uint64 // audit session id, or noSession
	tty       uint64 // the terminal's device number, 0 if none
}

// lineRE is what a utmp line may be for the source to touch its device.
var lineRE = regexp.MustCompile(`^(pts/[0-9]{1,6}|tty[A-Za-z0-9]{1,8}|console)$`)

// List implements sessions.Source.
func (s *Source) List(ctx context.Context) ([]sessions.Session, error) {
	s.mu.Lock()
	list, at := s.cached, s.cachedAt
	s.mu.Unlock()
	if time.Since(at) > listFresh {
		var err error
		if list, err = s.scan(ctx); err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.cached, s.cachedAt = list, time.Now()
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
	now := time.Now()
	var out []session
	claimed := map[uint64]bool{} // audit session ids of utmp sessions
	for _, r := range recs {
		leader := procs[int(r.PID)]
		if leader == nil {
			continue // stale record: its login manager has gone
		}
		if ttys[r.Line] || leaders[leader.pid] {
			continue // logind lists it
		}
		h := session{leader: leader.pid, leaderAt: leader.start, sessionID: leader.sessionID}
		h.Name = r.Line
		h.User = r.User
		h.Device = r.Host
		h.LogonTime = r.Time
		h.Type = loginManager(leader.comm)
		h.Key = fmt.Sprintf("utmp:%s:%d:%d", r.Line, leader.pid, leader.start)
		h.State = sessions.Disc
		if lineRE.MatchString(r.Line) {
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(s.dev, r.Line), &st); err == nil {
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
	for _, h := range s.noTTY(procs, claimed) {
		if !leaders[h.leader] {
			out = append(out, h)
		}
	}
	return out, nil
}

// noTTY finds sessions that have no utmp record (OpenSSH writes none for
// ssh -T and scp, cron writes none): groups of processes sharing an audit
// session id that no utmp session claims.
func (s *Source) noTTY(procs procTable, claimed map[uint64]bool) []session {
	groups := map[uint64][]*proc{}
	for _, p := range procs {
		if p.sessionID != noSession && p.sessionID != 0 && !claimed[p.sessionID] {
			groups[p.sessionID] = append(groups[p.sessionID], p)
		}
	}
	boot := bootTime(s.proc)
	var out []session
	for sid, members := range groups {
		// The root is the oldest member whose parent is not in the group.
		slices.SortFunc(members, func(a, b *proc) int { return cmp.Compare(a.start, b.start) })
		root := members[0]
		for _, m := range members {
			if parent := procs[m.ppid]; parent == nil || parent.sessionID != sid {
				root = m
				break
			}
		}
		if root.pid == s.self {
			continue // tsadmin itself was started from a login
		}
		h := session{leader: root.pid, leaderAt: root.start, sessionID: sid}
		h.Name = "sess:" + strconv.FormatUint(sid, 10)
		h.Type = loginManager(root.comm)
		h.State = sessions.Active
		h.Key = fmt.Sprintf("audit:%d:%d:%d", sid, root.pid, root.start)
		if uid, ok := loginUID(s.proc, root.pid); ok {
			h.User = strconv.Itoa(uid)
			if u, err := user.LookupId(h.User); err == nil {
				h.User = u.Username
			}
		}
		if boot > 0 {
			h.LogonTime = time.Unix(boot+int64(root.start)/s.clkTck, 0)
		}
		// The remote address, where sshd put it in the environment of
		// the user's processes.
		for _, m := range members {
			if c := environValue(s.proc, m.pid, "SSH_CONNECTION"); c != "" {
				h.Device, _, _ = strings.Cut(c, " ")
				break
			}
		}
		out = append(out, h)
	}
	return out
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
// otherwise the processes on its terminal and the tree under its leader.
// The leader comes first. tsadmin itself and PID 1 are never members.
func (s *Source) members(h session, procs procTable) []*proc {
	in := map[int]bool{}
	if h.sessionID != noSession {
		for _, p := range procs {
			if p.sessionID == h.sessionID {
				in[p.pid] = true
			}
		}
	} else {
		for pid := range procs.descendants(h.leader) {
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
	p  *proc
	fd int
}

// hold opens pidfds for the processes and re-checks, after opening, that
// each is still the process that was read (same start time). Processes
// that have gone or been replaced are dropped.
func (s *Source) hold(ps []*proc) []handle {
	var out []handle
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
		out = append(out, handle{p: p, fd: fd})
	}
	return out
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
// fresh reading of /proc at each step.
func (s *Source) Logoff(ctx context.Context, target sessions.Session, _ string, report sessions.Reporter) error {
	defer s.forget()
	h, err := s.find(ctx, target.Key)
	if err != nil {
		return err
	}
	held := s.hold(s.members(h, readProcs(s.proc)))
	defer func() { release(held) }()
	if len(held) == 0 {
		return sessions.Errorf(sessions.ErrNotFound, "session %d has no processes left", target.ID)
	}
	report.Report("session %s of %s: %d processes: %s", h.Name, h.User, len(held), describe(held))
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
	if err := hup(held); err != nil {
		return err
	}
	report.Report("sent SIGHUP to %d processes, the login manager (%d) first", len(held), h.leader)

	remaining := func() []handle {
		var left []handle
		for _, p := range held {
			if !exited(p) {
				left = append(left, p)
			}
		}
		return left
	}
	deadline := time.Now().Add(s.grace)
	for time.Now().Before(deadline) {
		// Children forked since the last look are the session's too.
		procs := readProcs(s.proc)
		if fresh := s.newMembers(h, procs, held); len(fresh) > 0 {
			held = append(held, fresh...)
			if err := hup(fresh); err != nil {
				return err
			}
		}
		if len(remaining()) == 0 {
			report.Report("all processes ended after SIGHUP")
			return nil
		}
		select {
		case <-ctx.Done():
			return sessions.Errorf(sessions.ErrSurvived, "cancelled while waiting: %s remain", describe(remaining()))
		case <-time.After(50 * time.Millisecond):
		}
	}
	held = append(held, s.newMembers(h, readProcs(s.proc), held)...)
	left := remaining()
	report.Report("after %s, %d processes remain: %s; sending SIGKILL", s.grace, len(left), describe(left))
	for _, p := range left {
		if err := signal(p, unix.SIGKILL); err != nil {
			return err
		}
	}
	for i := 0; i < 40; i++ {
		if len(remaining()) == 0 {
			report.Report("all processes ended after SIGKILL")
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sessions.Errorf(sessions.ErrSurvived, "session %d: processes survived SIGKILL: %s", target.ID, describe(remaining()))
}

// forget drops the cached listing.
func (s *Source) forget() {
	s.mu.Lock()
	s.cached, s.cachedAt = nil, time.Time{}
	s.mu.Unlock()
}

// newMembers holds the session's processes that are not held yet.
func (s *Source) newMembers(h session, procs procTable, held []handle) []handle {
	known := map[int]uint64{}
	for _, p := range held {
		known[p.p.pid] = p.p.start
	}
	var fresh []*proc
	for _, p := range s.members(h, procs) {
		if at, ok := known[p.pid]; !ok || at != p.start {
			fresh = append(fresh, p)
		}
	}
	return s.hold(fresh)
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
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != h.tty {
		return fmt.Errorf("%s is not the session's terminal", h.Name)
	}
	_, err = f.WriteString("\r\n\a" + text + "\r\n")
	return err
}
