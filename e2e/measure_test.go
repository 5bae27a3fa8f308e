package e2e

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The measurements the issues ask for. They print figures and assert only
// that the commands worked; they run with TSADMIN_MEASURE=1:
//
//	TSADMIN_MEASURE=1 go test ./e2e/ -run Measure -v
func measuring(t *testing.T) {
	if os.Getenv("TSADMIN_MEASURE") == "" {
		t.Skip("measurement: set TSADMIN_MEASURE=1")
	}
}

// victim opens an interactive session with the Go client and returns a
// channel closed when the server ends it.
func victim(t *testing.T, s *Server, key Key) <-chan struct{} {
	p := s.ptyShell(t, key)
	return p.ended
}

func median(d []time.Duration) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

// onConn runs a command on an open connection and returns how long it took
// from the request to the exit status.
func onConn(t *testing.T, c *ssh.Client, cmd string) time.Duration {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	start := time.Now()
	out, err := sess.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("%s: %v %s", cmd, err, out)
	}
	return time.Since(start)
}

// Issue 2: the time from `logoff N` to the client's disconnect.
func TestMeasureLogoffToDisconnect(t *testing.T) {
	measuring(t)
	f := newFleet(t, "")
	c := f.client(t, f.alice)
	var times []time.Duration
	for i := 0; i < 20; i++ {
		ended := victim(t, f.Server, f.bob)
		id := sessionsOf(f.List(f.alice), "bob")[0].ID
		start := time.Now()
		sess, _ := c.NewSession()
		sess.Start(fmt.Sprintf("logoff %d", id))
		<-ended
		times = append(times, time.Since(start))
		sess.Wait()
		sess.Close()
	}
	fmt.Printf("MEASURE logoff N -> client disconnected (tsadmin session, 20 runs): median %s, max %s\n",
		median(times), times[len(times)-1])
}

// Issue 5: a relayed logoff against a local one, with a cold and a warm
// pooled connection, and query session /server:* across 20 peers.
func TestMeasureFederation(t *testing.T) {
	measuring(t)
	k, admins := fedAdmins(t)
	nodes := startFederation(t, []string{"A", "B"}, admins, nil)
	a, b := nodes["A"], nodes["B"]
	c := a.client(t, k.alice)
	run := func(s *Server, relay string) time.Duration {
		ended := victim(t, s, k.carol)
		var id int
		for _, x := range s.List(k.alice) {
			if x.User == "carol" {
				id = x.ID
			}
		}
		d := onConn(t, c, fmt.Sprintf("logoff %d %s", id, relay))
		<-ended
		return d
	}
	var local, warm []time.Duration
	for i := 0; i < 10; i++ {
		local = append(local, run(a.Server, ""))
	}
	cold := run(b.Server, "/server:B") // the first relay dials
	for i := 0; i < 10; i++ {
		warm = append(warm, run(b.Server, "/server:B"))
	}
	fmt.Printf("MEASURE logoff, local: median %s\n", median(local))
	fmt.Printf("MEASURE logoff /server:B, cold (dial + handshake): %s\n", cold)
	fmt.Printf("MEASURE logoff /server:B, warm (pooled connection): median %s\n", median(warm))

	// 20 peers.
	names := []string{"A"}
	for i := 1; i <= 20; i++ {
		names = append(names, fmt.Sprintf("P%02d", i))
	}
	many := map[string]string{}
	for _, n := range names {
		many[n] = admins["B"]
	}
	fleet := startFederation(t, names, many, nil)
	c2, err := fleet["A"].dial(t, "admin", ssh.PublicKeys(k.alice.Signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	coldAll := onConn(t, c2, "query session /server:*")
	var all []time.Duration
	for i := 0; i < 10; i++ {
		all = append(all, onConn(t, c2, "query session /server:*"))
	}
	// Every peer answered: status 0 and no error line.
	sess, _ := c2.NewSession()
	var stderr strings.Builder
	sess.Stderr = &stderr
	if err := sess.Run("query session /server:*"); err != nil || stderr.Len() > 0 {
		t.Errorf("not every peer answered: %v %q", err, stderr.String())
	}
	fmt.Printf("MEASURE query session /server:* across 20 peers: cold %s, warm median %s\n", coldAll, median(all))
}
