// Package logind is the `logind` session source: on hosts where
// systemd-logind runs, it lists sessions and ends them with
// TerminateSession over D-Bus (github.com/godbus/dbus/v5), checking every
// call's error. Where logind runs it is the authority for the sessions it
// knows: the host source defers to it (Claims), so that no session is
// listed twice.
//
// It lists the sessions the host source would list where logind does not
// run: user logins (Class user) and background ones (Class background:
// cron, at, systemd-run), the latter with TYPE bg:SERVICE (bg:cron), the
// TYPE the host source gives a job runner's session.
// Greeters, lock screens and the per-user service manager are not logins
// and are left out.
package logind

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/tsadmin-dev/tsadmin/sessions"
)

// D-Bus names of systemd-logind.
const (
	busName      = "org.freedesktop.login1"
	managerPath  = dbus.ObjectPath("/org/freedesktop/login1")
	managerIface = "org.freedesktop.login1.Manager"
	sessionIface = "org.freedesktop.login1.Session"
)

// callTimeout bounds every D-Bus call.
const callTimeout = 5 * time.Second

// Source is the logind session source.
type Source struct {
	conn  *dbus.Conn
	grace time.Duration
}

// New returns a source on an open bus connection (the system bus, or a
// private bus in tests).
func New(conn *dbus.Conn, grace time.Duration) *Source {
	return &Source{conn: conn, grace: grace}
}

// ConnectSystem connects to the system bus and checks that logind answers.
func ConnectSystem(ctx context.Context, grace time.Duration) (*Source, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, err
	}
	s := New(conn, grace)
	if err := s.Available(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

// Available reports whether logind answers on the bus.
func (s *Source) Available(ctx context.Context) error {
	_, err := s.listRaw(ctx)
	return err
}

// Name implements sessions.Source.
func (s *Source) Name() string { return "logind" }

type rawSession struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

func (s *Source) listRaw(ctx context.Context) ([]rawSession, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var out []rawSession
	err := s.conn.Object(busName, managerPath).CallWithContext(ctx, managerIface+".ListSessions", 0).Store(&out)
	if err != nil {
		return nil, classify(err)
	}
	return out, nil
}

// entry is one logind session with what the source needs.
type entry struct {
	sessions.Session
	id     string
	leader uint32
}

// read lists the user sessions with their properties.
func (s *Source) read(ctx context.Context) ([]entry, error) {
	raw, err := s.listRaw(ctx)
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, r := range raw {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		var props map[string]dbus.Variant
		err := s.conn.Object(busName, r.Path).CallWithContext(cctx, "org.freedesktop.DBus.Properties.GetAll", 0, sessionIface).Store(&props)
		cancel()
		if err != nil {
			if errors.Is(classify(err), sessions.ErrNotFound) {
				continue // it ended between the two calls
			}
			return nil, classify(err)
		}
		background, ok := listedClass(str(props, "Class"))
		if !ok {
			continue
		}
		e := entry{id: r.ID, leader: u32(props, "Leader")}
		e.User = r.User
		e.Name = str(props, "TTY")
		if e.Name == "" {
			e.Name = "session-" + r.ID
		}
		e.Type = str(props, "Service")
		if e.Type == "" {
			e.Type = str(props, "Type")
		}
		if background {
			e.Type = "bg:" + e.Type
		}
		e.Device = str(props, "RemoteHost")
		ts := u64(props, "Timestamp")
		if ts > 0 {
			e.LogonTime = time.UnixMicro(int64(ts))
		}
		e.State = sessions.Active
		if b, _ := props["IdleHint"].Value().(bool); b {
			if since := u64(props, "IdleSinceHint"); since > 0 {
				e.IdleTime = max(0, time.Since(time.UnixMicro(int64(since))))
			}
		}
		if str(props, "State") == "closing" {
			e.State = sessions.Disc
		}
		e.Key = fmt.Sprintf("logind:%s:%d", r.ID, ts)
		out = append(out, e)
	}
	return out, nil
}

// listedClass reports whether a session of class is listed, and whether
// it is a background one. The host source lists cron's sessions (they
// have an audit session of their own), so logind lists them too: an admin
// sees the same sessions whichever source runs. Greeters, lock screens
// and the per-user manager are not logins to end.
func listedClass(class string) (background, ok bool) {
	switch class {
	case "", "user", "user-early", "user-incomplete":
		return false, true
	case "background", "background-light":
		return true, true
	}
	return false, false
}

func str(p map[string]dbus.Variant, k string) string {
	v, _ := p[k].Value().(string)
	return v
}

func u32(p map[string]dbus.Variant, k string) uint32 {
	v, _ := p[k].Value().(uint32)
	return v
}

func u64(p map[string]dbus.Variant, k string) uint64 {
	v, _ := p[k].Value().(uint64)
	return v
}

// List implements sessions.Source.
func (s *Source) List(ctx context.Context) ([]sessions.Session, error) {
	list, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]sessions.Session, len(list))
	for i, e := range list {
		out[i] = e.Session
	}
	return out, nil
}

// Claims returns the terminals and leader PIDs of the sessions logind
// knows, so that the host source leaves them to it.
func (s *Source) Claims(ctx context.Context) (ttys map[string]bool, leaders map[int]bool, err error) {
	list, err := s.read(ctx)
	if err != nil {
		return nil, nil, err
	}
	ttys, leaders = map[string]bool{}, map[int]bool{}
	for _, e := range list {
		if !strings.HasPrefix(e.Name, "session-") {
			ttys[e.Name] = true
		}
		if e.leader != 0 {
			leaders[int(e.leader)] = true
		}
	}
	return ttys, leaders, nil
}

// Logoff implements sessions.Source: TerminateSession, then wait until
// logind no longer lists the session. TerminateSession is immediate as
// far as tsadmin goes (no HUP step and no grace of tsadmin's: logind stops
// the session's scope at once, and systemd escalates from SIGTERM to
// SIGKILL by the unit's own timeout). For /now (req.Now) a process that
// ignores SIGTERM must not get that timeout, so every process of the
// session gets SIGKILL first (KillSession "all" 9), then TerminateSession
// ends the session itself.
func (s *Source) Logoff(ctx context.Context, target sessions.Session, req sessions.LogoffRequest) error {
	report := req.Report
	list, err := s.read(ctx)
	if err != nil {
		return err
	}
	var e *entry
	for i := range list {
		if list[i].Key == target.Key {
			e = &list[i]
		}
	}
	if e == nil {
		return sessions.Errorf(sessions.ErrNotFound, "session %d has already ended", target.ID)
	}
	if req.Now {
		report.Report("asking systemd-logind to send SIGKILL to every process of session %s (%s of %s)", e.id, e.Name, e.User)
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err = s.conn.Object(busName, managerPath).CallWithContext(cctx, managerIface+".KillSession", 0, e.id, "all", int32(9)).Err
		cancel()
		if err != nil {
			return classify(err)
		}
	}
	report.Report("asking systemd-logind to terminate session %s (%s of %s)", e.id, e.Name, e.User)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	err = s.conn.Object(busName, managerPath).CallWithContext(cctx, managerIface+".TerminateSession", 0, e.id).Err
	cancel()
	if err != nil {
		return classify(err)
	}
	deadline := time.Now().Add(s.grace + 5*time.Second)
	for time.Now().Before(deadline) {
		list, err := s.read(ctx)
		if err != nil {
			return err
		}
		gone := true
		for _, x := range list {
			if x.Key == target.Key && x.State != sessions.Disc {
				gone = false
			}
		}
		if gone {
			report.Report("logind session %s ended", e.id)
			return nil
		}
		select {
		case <-ctx.Done():
			return sessions.Errorf(sessions.ErrSurvived, "logind session %s is still there: %v", e.id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return sessions.Errorf(sessions.ErrSurvived, "logind session %s did not end", e.id)
}

// classify maps D-Bus errors to the sessions errors: a polkit refusal is
// the server's missing privilege (status 5), a vanished session is not
// found.
func classify(err error) error {
	var de dbus.Error
	var dep *dbus.Error
	name := ""
	switch {
	case errors.As(err, &de):
		name = de.Name
	case errors.As(err, &dep):
		name = dep.Name
	}
	switch name {
	case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
		return sessions.Errorf(sessions.ErrPrivilege, "systemd-logind refused: the server lacks the polkit right org.freedesktop.login1.manage (%s)", name)
	case "org.freedesktop.login1.NoSuchSession", "org.freedesktop.DBus.Error.UnknownObject":
		return sessions.Errorf(sessions.ErrNotFound, "systemd-logind: no such session")
	}
	return fmt.Errorf("systemd-logind: %w", err)
}
