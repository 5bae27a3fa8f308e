package host

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingSource is a host source over an empty utmp whose scans are
// counted (each asks its claims once) and take a while, so that
// listings started together overlap one.
func countingSource(t *testing.T) (*Source, *atomic.Int32) {
	utmp := filepath.Join(t.TempDir(), "utmp")
	if err := os.WriteFile(utmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	src := New(utmp, time.Second)
	var scans atomic.Int32
	src.DeferTo(func(context.Context) (map[string]bool, map[int]bool, error) {
		scans.Add(1)
		time.Sleep(100 * time.Millisecond)
		return nil, nil, nil
	})
	return src, &scans
}

// Listings that find the cached one stale together read /proc once, not
// once each: a burst of connections used to scan the host side by side.
func TestConcurrentListingsShareOneScan(t *testing.T) {
	src, scans := countingSource(t)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := src.List(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := scans.Load(); n != 1 {
		t.Fatalf("16 listings at once scanned the host %d times, want 1", n)
	}
}

// A listing after a logoff's forget does not join a scan that started
// before it, nor does that scan's result become the cached listing: what
// follows a logoff is read afresh.
func TestListingAfterForgetDoesNotJoinAnOlderScan(t *testing.T) {
	src, scans := countingSource(t)
	first := make(chan struct{})
	go func() {
		defer close(first)
		src.List(context.Background())
	}()
	for i := 0; scans.Load() == 0 && i < 5000; i++ {
		time.Sleep(time.Millisecond)
	}
	src.forget()
	if _, err := src.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-first
	if n := scans.Load(); n != 2 {
		t.Fatalf("a listing after forget made %d scans in all, want 2 (its own)", n)
	}
	src.mu.Lock()
	fresh := time.Since(src.cachedAt) < listFresh
	src.mu.Unlock()
	if !fresh {
		t.Fatal("nothing was cached")
	}
}
