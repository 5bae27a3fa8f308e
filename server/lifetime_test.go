package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// frozenConn is a client's connection that can stop reading: the client
// then never sees, and never answers, the server's keepalives.
type frozenConn struct {
	net.Conn
	frozen <-chan struct{} // closed: reads block
	thawed <-chan struct{} // closed: reads fail, so the client can end
}

// Read also holds what a read already under way when the connection
// froze brings: the client sees nothing the server sent after the freeze.
func (c *frozenConn) Read(p []byte) (int, error) {
	if c.isFrozen() {
		<-c.thawed
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	if c.isFrozen() {
		<-c.thawed
		return 0, io.EOF
	}
	return n, err
}

func (c *frozenConn) isFrozen() bool {
	select {
	case <-c.frozen:
		return true
	default:
		return false
	}
}

// dialFrozen opens an authenticated connection to addr whose reads stop
// when frozen is closed and fail when thawed is.
func dialFrozen(t *testing.T, addr string, key gossh.Signer, frozen, thawed <-chan struct{}) *gossh.Client {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, chans, reqs, err := gossh.NewClientConn(&frozenConn{Conn: raw, frozen: frozen, thawed: thawed}, addr, &gossh.ClientConfig{
		User: "x", Auth: []gossh.AuthMethod{gossh.PublicKeys(key)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return gossh.NewClient(cc, chans, reqs)
}

// connStates returns the server's connections.
func connStates(s *Server) []*connState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []*connState
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

// within fails the test unless cond becomes true within d; what says
// what did not happen.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s, %s later", what, d)
		}
	}
}

// probing counts the server's connections with a keepalive out and
// unanswered.
func probing(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		c.mu.Lock()
		if c.probing {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// Keepalives are spread over the interval: each waits for its answer on a
// goroutine, and probing every connection at the same tick made, with
// 10,000 idle sessions, 10,000 goroutines at once, whose stacks the
// runtime kept. Here 40 clients stop reading; their unanswered probes
// must appear a tenth at a time over the interval, not all at once.
func TestKeepalivesAreSpreadOverTheInterval(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv, addr, alice := startServer(t, nil, priv, "limits: { keepalive_interval: 1s, keepalive_count_max: 100 }\n")
	frozen, thawed := make(chan struct{}), make(chan struct{})
	var thawOnce sync.Once
	thaw := func() { thawOnce.Do(func() { close(thawed) }) }
	defer thaw()
	const n = 40
	var clients []*gossh.Client
	defer func() {
		thaw()
		for _, c := range clients {
			c.Close()
		}
	}()
	for range n {
		c := dialFrozen(t, addr, alice, frozen, thawed)
		clients = append(clients, c)
		if _, err := openShell(c); err != nil {
			t.Fatal(err)
		}
	}
	close(frozen)
	// Sample the unanswered probes for over an interval; the biggest
	// rise between two samples is how many went out at one tick.
	last, maxRise := 0, 0
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) && last < n {
		time.Sleep(20 * time.Millisecond)
		now := probing(srv)
		maxRise = max(maxRise, now-last)
		last = now
	}
	if last != n {
		t.Fatalf("%d of %d silent clients were probed within 2.5 s of 1 s keepalives", last, n)
	}
	if maxRise > n/3 {
		t.Errorf("%d of %d connections were probed at once; want a tenth per tick", maxRise, n)
	}
	t.Logf("largest rise between samples: %d of %d", maxRise, n)
}

// A shutdown tells every session that it ends while sessions end by
// themselves: the notice and a session's EOF must not race inside
// x/crypto's channel (the race detector watches this test).
func TestShutdownNoticesAndSessionsEndingDoNotRace(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv, addr, alice := startServer(t, nil, priv, "")
	var clients []*gossh.Client
	var stdins []io.WriteCloser
	for range 20 {
		c := dial(t, addr, alice)
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RequestPty("xterm", 24, 80, gossh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		in, _ := s.StdinPipe()
		go io.Copy(io.Discard, mustStdout(t, s))
		if err := s.Shell(); err != nil {
			t.Fatal(err)
		}
		clients, stdins = append(clients, c), append(stdins, in)
	}
	time.Sleep(200 * time.Millisecond)
	for _, in := range stdins {
		go in.Write([]byte("exit\r"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func mustStdout(t *testing.T, s *gossh.Session) io.Reader {
	r, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A connection left without a session is closed after idle_timeout (as
// OpenSSH's UnusedConnectionTimeout): it is listed nowhere, so no admin
// could see or end it, and a client could otherwise hold thousands.
// One that keeps a session open stays.
func TestConnectionsWithoutASessionAreClosedAfterIdleTimeout(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, addr, alice := startServer(t, nil, priv, "limits: { idle_timeout: 1s }\n")
	unused := dial(t, addr, alice)
	defer unused.Close()
	mustOutput(t, unused, "query session")
	used := dial(t, addr, alice)
	defer used.Close()
	closedWithin(t, unused, 5*time.Second, "a connection without a session")
	// The other connection opens sessions one after another, each
	// within idle_timeout of the last, and is never closed.
	for range 4 {
		time.Sleep(600 * time.Millisecond)
		s, err := used.NewSession()
		if err != nil {
			t.Fatalf("a connection in use was closed: %v", err)
		}
		s.Output("quser")
	}
}

// A session channel that never starts a command or shell is listed
// nowhere either: two of them (max_sessions_per_connection) held a
// connection forever, past idle_timeout and the login grace (red team).
func TestSessionChannelsThatRunNothingDoNotHoldAConnection(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, addr, alice := startServer(t, nil, priv, "limits: { idle_timeout: 1s, login_grace: 1s, max_sessions_per_connection: 2 }\n")
	c := dial(t, addr, alice)
	defer c.Close()
	for range 2 {
		ch, reqs, err := c.OpenChannel("session", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		go gossh.DiscardRequests(reqs)
	}
	closedWithin(t, c, 5*time.Second, "a connection whose session channels run nothing")
}

// closedWithin fails the test unless the server closes c within d.
func closedWithin(t *testing.T, c *gossh.Client, d time.Duration, what string) {
	t.Helper()
	ended := make(chan error, 1)
	go func() { ended <- c.Wait() }()
	select {
	case <-ended:
	case <-time.After(d):
		t.Fatalf("%s is still open %s after a 1 s idle_timeout", what, d)
	}
}

// A session usually ends after its connection has closed: the unused-
// connection timer must not be armed then, or each connection would be
// held (with a timer in the runtime's heap) for idle_timeout; at the
// bench's hundreds of connections a second that cost a fifth more CPU
// per connection.
func TestAClosedConnectionKeepsNoTimer(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv, addr, alice := startServer(t, nil, priv, "limits: { idle_timeout: 1h }\n")
	var seen []*connState
	for range 20 {
		c := dial(t, addr, alice)
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start("query session"); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, connStates(srv)...)
		s.Wait()
		c.Close()
	}
	for _, cs := range seen {
		within(t, 5*time.Second, "a connection the client closed is still open or keeps its unused timer", func() bool {
			cs.mu.Lock()
			defer cs.mu.Unlock()
			return cs.closed && cs.unused == nil
		})
	}
}

// A session ended by the idle timeout has left the listing when its exit
// status is sent: from then on it runs nothing. A client that ignores the
// exit status and the channel's close and goes on sending ran each line it
// sent, as an admin no query session showed and no logoff could end
// ("session N has already ended"): here a logoff of another admin's
// session (red team).
func TestASessionEndedByTheIdleTimeoutRunsNothingMore(t *testing.T) {
	for _, mode := range []string{"script", "interactive"} {
		t.Run(mode, func(t *testing.T) {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			_, addr, alice := startServer(t, nil, priv, "limits: { idle_timeout: 1s }\n")

			// The victim: an interactive session that stays busy (a
			// Ctrl-C, which drops an empty line, now and then).
			victim := dial(t, addr, alice)
			defer victim.Close()
			_, vin, err := startShell(victim, true)
			if err != nil {
				t.Fatal(err)
			}
			busy := make(chan struct{})
			defer close(busy)
			go func() {
				for range 100 {
					select {
					case <-busy:
						return
					case <-time.After(200 * time.Millisecond):
						vin.Write([]byte{3})
					}
				}
			}()
			ids := listedIDs(t, addr, alice, 1)
			victimID := ids[0]

			// The hostile client: its reads can be frozen, so that it
			// never sees the exit status or the close, and goes on sending.
			frozen, thawed := make(chan struct{}), make(chan struct{})
			defer close(thawed)
			hostile := dialFrozen(t, addr, alice, frozen, thawed)
			defer hostile.Close()
			_, hin, err := startShell(hostile, mode == "interactive")
			if err != nil {
				t.Fatal(err)
			}
			enter := "\n"
			if mode == "interactive" {
				enter = "\r"
			}
			ids = listedIDs(t, addr, alice, 2)
			hostileID := ids[0] + ids[1] - victimID
			close(frozen)

			// The idle timeout ends the hostile session: it leaves the
			// listing.
			within(t, 5*time.Second, fmt.Sprintf("session %d is still listed after a 1 s idle timeout", hostileID), func() bool {
				ids := listedIDs(t, addr, alice, -1)
				return len(ids) == 1 && ids[0] == victimID
			})
			if _, err := fmt.Fprintf(hin, "logoff %d%s", victimID, enter); err != nil {
				t.Fatal(err)
			}
			ended := make(chan error, 1)
			go func() { ended <- victim.Wait() }()
			select {
			case <-ended:
				t.Fatalf("session %d, no longer listed, logged off session %d", hostileID, victimID)
			case <-time.After(1500 * time.Millisecond):
			}
		})
	}
}

// listedIDs returns the IDs of the shell sessions that query session
// lists, other than the one that runs it, once there are want of them (or
// at once, for want < 0).
func listedIDs(t *testing.T, addr string, key gossh.Signer, want int) []int {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := run(t, addr, key, "query session")
		if err != nil {
			t.Fatalf("query session: %v %q", err, out)
		}
		var ids []int
		for _, line := range strings.Split(out, "\n") {
			var id int
			if _, err := fmt.Sscanf(line, " ssh#%d", &id); err == nil {
				ids = append(ids, id)
			}
		}
		if want < 0 || len(ids) == want {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("query session lists %v, want %d sessions beside its own:\n%s", ids, want, out)
		}
	}
}

// A session that has sent its exit status runs nothing, and no longer
// keeps its connection in use: a client that never answers the channel's
// close (its reads frozen here, before the command even starts) held a
// connection with nothing listed, until keepalives gave up on it, or
// forever if it answered them (red team).
func TestAnEndedSessionDoesNotHoldItsConnection(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv, addr, alice := startServer(t, nil, priv, "limits: { idle_timeout: 1s }\n")
	frozen, thawed := make(chan struct{}), make(chan struct{})
	defer close(thawed)
	client := dialFrozen(t, addr, alice, frozen, thawed)
	defer client.Close()
	ch, chReqs, err := client.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go gossh.DiscardRequests(chReqs)
	close(frozen)
	if _, err := ch.SendRequest("exec", false, gossh.Marshal(struct{ Command string }{"query session"})); err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, "a connection whose only session sent its exit status is still open after a 1 s idle_timeout", func() bool {
		return len(connStates(srv)) == 0
	})
}

// The unused timer that fires as a session starts is stale: the session
// stopped it too late, and by the time the fired timer took the lock, a
// quick command could have run and sent its exit status, arming a new
// timer. The stale one closed the connection at once (the admin's
// ControlMaster lost its connection right after a command, idle_timeout
// early), and left the new timer armed with no reference, so that no
// session could stop it and the closed connection kept it (red team).
// The interleaving is pinned by holding the connection's lock while the
// timer fires; the start and the exit are what startedSession and
// stoppedRunning do under it.
func TestAStaleUnusedTimerDoesNotCloseAConnectionJustUsed(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	srv, addr, alice := startServer(t, nil, priv, "limits: { idle_timeout: 300ms }\n")
	c := dial(t, addr, alice)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Output("quser"); err != nil {
		t.Fatal(err)
	}
	cs := connStates(srv)[0]
	// The client may hear the close before the server has armed the
	// timer (after the close it sent).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		cs.mu.Lock()
		if cs.unused != nil {
			break
		}
		cs.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no unused timer after the session's exit status")
		}
	}
	time.Sleep(500 * time.Millisecond) // the timer fires and waits for the lock
	cs.running++                       // a session starts as it fires (startedSession)
	cs.stopUnusedLocked()
	cs.running-- // and sends its exit status (stoppedRunning)
	cs.armUnusedLocked()
	cs.mu.Unlock()

	ended := make(chan error, 1)
	go func() { ended <- c.Wait() }()
	select {
	case <-ended:
		t.Fatal("the stale unused timer closed a connection used a moment ago")
	case <-time.After(150 * time.Millisecond):
	}
	closedWithin(t, c, 5*time.Second, "a connection unused since")
	cs.mu.Lock()
	armed := cs.unused != nil
	cs.mu.Unlock()
	if armed {
		t.Fatal("the closed connection keeps its unused timer")
	}
}
