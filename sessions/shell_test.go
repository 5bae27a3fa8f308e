package sessions

import (
	"context"
	"testing"
	"time"
)

// A session with a user is Active however long it has gone without input,
// as on Windows (where Idle is a station with nobody on it); the idle time
// is kept for IDLE TIME and idle_seconds.
func TestIdleShellSessionIsActive(t *testing.T) {
	src := NewShellSource(NewRegistry())
	s := src.Add("alice", "192.0.2.7", nil)
	defer s.Close()
	s.mu.Lock()
	s.lastInput = time.Now().Add(-2 * time.Hour)
	s.mu.Unlock()
	list, err := src.List(context.Background())
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if list[0].State != Active || list[0].IdleTime < 2*time.Hour {
		t.Errorf("a session idle for 2h: state %q, idle %v; want Active, at least 2h", list[0].State, list[0].IdleTime)
	}
}
