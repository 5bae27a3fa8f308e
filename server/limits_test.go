package server

import (
	"testing"
	"time"
)

// A flood's drops are reported in one line per interval with their count,
// not one line each: the server's log must not grow with the flood.
func TestDropsAreReportedOncePerInterval(t *testing.T) {
	var d batchedLine
	start := time.Unix(1_000_000, 0)
	if d.count(false, start) != nil {
		t.Fatal("a connection that dropped nothing was reported")
	}
	if r := d.count(true, start); r == nil || r.n != 1 {
		t.Fatalf("the first drop: %+v, want a report of 1", r)
	}
	lines := 0
	for i := 1; i < 10_000; i++ {
		if d.count(true, start.Add(time.Duration(i)*time.Millisecond)) != nil {
			lines++
		}
	}
	if lines != 0 {
		t.Errorf("%d lines for 9,999 drops within one interval", lines)
	}
	r := d.count(true, start.Add(batchInterval))
	if r == nil || r.n != 10_000 || !r.since.Equal(start.Add(time.Millisecond)) {
		t.Errorf("after the interval: %+v, want 10,000 drops since the second one", r)
	}
}
