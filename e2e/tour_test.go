package e2e

import (
	"fmt"
	"os"
	"testing"
)

// TestTour prints the README's tour from a real run: tsadmin with the host
// source beside a real sshd with two logins. TSADMIN_TOUR=1 runs it.
func TestTour(t *testing.T) {
	if os.Getenv("TSADMIN_TOUR") == "" {
		t.Skip("the README tour: set TSADMIN_TOUR=1")
	}
	f := newHostFleet(t, "10s")
	stu := f.sshd.AddUser(t, "tsstu")
	loggedIn(t, f.sshd, stu, true)
	loggedIn(t, f.sshd, stu, false)
	bob := f.Open(f.carol)
	defer bob.Close()
	s := f.hostSession(t, stu.Name)
	show := func(who string, key Key, args ...string) {
		r := f.Run(key, "", args...)
		fmt.Printf("$ ssh -p 2222 %s@localhost %v; echo \"status $?\"\n%s%sstatus %d\n\n", who, args, r.Stdout, r.Stderr, r.Status)
	}
	show("alice", f.alice, "query", "session")
	show("helen", f.helen, "quser")
	show("carol", f.carol, "logoff", fmt.Sprint(s.ID))
	show("helen", f.helen, "logoff", s.Name, "/v")
	show("alice", f.alice, "query", "session", "/fo:json", stu.Name)
}
