package sessions

import (
	"context"
	"reflect"
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
	s.lastInput.Add(-int64(2 * time.Hour))
	list, err := src.List(context.Background())
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if list[0].State != Active || list[0].IdleTime < 2*time.Hour {
		t.Errorf("a session idle for 2h: state %q, idle %v; want Active, at least 2h", list[0].State, list[0].IdleTime)
	}
}

// A listing into a reused buffer sets every field of every session: none
// is left over from the listing that held the buffer before.
func TestShellListIntoAReusedBufferLeavesNothingOver(t *testing.T) {
	src := NewShellSource(NewRegistry())
	for range 3 {
		defer src.Add("alice", "192.0.2.7", nil).Close()
	}
	var junk Session
	v := reflect.ValueOf(&junk).Elem()
	for i := range v.NumField() { // every field, also ones added later
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Int, reflect.Int64:
			f.SetInt(-7)
		case reflect.String:
			f.SetString("left over")
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case reflect.Struct: // time.Time
			f.Set(reflect.ValueOf(time.Unix(7, 7)))
		default:
			t.Fatalf("field %s: kind %s is not filled by this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	buf := []Session{junk, junk, junk, junk}
	fresh, _ := src.List(context.Background())
	reused := src.appendList(buf)
	if len(reused) != 3 || len(fresh) != 3 {
		t.Fatalf("listed %d and %d sessions, want 3", len(reused), len(fresh))
	}
	for i := range reused {
		reused[i].IdleTime, fresh[i].IdleTime = 0, 0 // read at different times
		if reused[i] != fresh[i] {
			t.Errorf("session %d from a reused buffer:\n%+v\nfresh:\n%+v", i, reused[i], fresh[i])
		}
	}
}
