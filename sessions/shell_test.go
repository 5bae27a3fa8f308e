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

// A snapshot's runs of live slots are exactly its live slots, across the
// 64-slot words of the closed bits and from any starting slot, and a
// session closed after the snapshot was taken reads as closed in it.
func TestShellSlotsRuns(t *testing.T) {
	src := NewShellSource(NewRegistry())
	var open []*ShellSession
	for range 300 {
		open = append(open, src.Add("alice", "192.0.2.7", nil))
	}
	// Closed: a run across a word's end, single slots, the last slot;
	// fewer than half, so that the slots keep their numbers.
	for _, i := range []int{0, 5, 62, 63, 64, 65, 127, 128, 190, 191, 192, 200, 255, 256, 299} {
		open[i].Close()
	}
	slots := src.Slots()
	open[100].Close() // after the snapshot: it too reads as closed
	if len(slots.IDs) != 300 || slots.Gen != 0 {
		t.Fatalf("%d slots of numbering %d, want 300 of 0", len(slots.IDs), slots.Gen)
	}
	for from := range 300 {
		for _, end := range []int{300, from + 1, min(from+70, 300)} {
			var got []int
			for i := from; i < end; {
				start, stop := slots.NextRun(i, end)
				if start < end && (start >= stop || stop > end) {
					t.Fatalf("NextRun(%d, %d) = %d, %d", i, end, start, stop)
				}
				for j := start; j < stop; j++ {
					got = append(got, j)
				}
				i = stop
			}
			var want []int
			for j := from; j < end; j++ {
				if !isClosed(open[j]) {
					want = append(want, j)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("live slots in [%d, %d): %v, want %v", from, end, got, want)
			}
		}
	}
	for i, s := range open {
		if slots.IDs[i] != s.ID() || slots.Live(i) == isClosed(s) {
			t.Fatalf("slot %d: ID %d, live %v; session %d, closed %v", i, slots.IDs[i], slots.Live(i), s.ID(), isClosed(s))
		}
	}
}

func isClosed(s *ShellSession) bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
