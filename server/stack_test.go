package server

import (
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
)

// TestGrowStackHoldsStackAhead starts goroutines that call growStack and
// wait, and reads the runtime's own count of stack memory in use: each
// must hold a stack of stackAhead (had the compiler dropped growStack's
// frame, they would hold the starting 2 to 8 KB), and not twice that.
// Collections are off meanwhile: one would shrink the stacks of
// goroutines that wait with so little on them.
func TestGrowStackHoldsStackAhead(t *testing.T) {
	const n = 200
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	inUse := func() int64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.StackInuse)
	}
	start := func(grow bool) (perGoroutine int64, stop func()) {
		release := make(chan struct{})
		var ready, done sync.WaitGroup
		runtime.GC()
		before := inUse()
		for range n {
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				if grow {
					growStack()
				}
				ready.Done()
				<-release
			}()
		}
		ready.Wait()
		per := (inUse() - before) / n
		return per, func() { close(release); done.Wait() }
	}
	plain, stop := start(false)
	stop()
	grown, stop := start(true)
	defer stop()
	if plain >= stackAhead/2 {
		t.Fatalf("a goroutine that did not grow holds %d bytes of stack; the test cannot tell growth apart", plain)
	}
	// The readings count whole spans of stack memory, and the stacks of
	// the first goroutines are not all back: a quarter's margin.
	if grown < stackAhead*3/4 || grown >= 2*stackAhead {
		t.Fatalf("after growStack a goroutine holds %d bytes of stack, want %d (one that did not grow holds %d)", grown, stackAhead, plain)
	}
}
