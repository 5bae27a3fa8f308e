package sessions

import (
	"context"
	"testing"
)

func benchRegistryList(b *testing.B, n int, churn bool) {
	r := NewRegistry()
	shells := NewShellSource(r)
	r.AddSource(shells)
	var open []*ShellSession
	for i := 0; i < n; i++ {
		open = append(open, shells.Add("alice", "127.0.0.1", nopControl{}))
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if churn {
			// What the one-shot load does: a session starts, one ends.
			open[0].Close()
			open = append(open[1:], shells.Add("alice", "127.0.0.1", nopControl{}))
		}
		if list, _ := r.List(ctx); len(list) != n {
			b.Fatal(len(list))
		}
	}
}

func BenchmarkRegistryList10000(b *testing.B)      { benchRegistryList(b, 10000, false) }
func BenchmarkRegistryListChurn10000(b *testing.B) { benchRegistryList(b, 10000, true) }

func BenchmarkRegistryListInto10000(b *testing.B) {
	r := NewRegistry()
	shells := NewShellSource(r)
	r.AddSource(shells)
	for i := 0; i < 10000; i++ {
		shells.Add("alice", "127.0.0.1", nopControl{})
	}
	ctx := context.Background()
	var buf []Session
	b.ReportAllocs()
	for b.Loop() {
		if buf, _ = r.ListInto(ctx, buf); len(buf) != 10000 {
			b.Fatal(len(buf))
		}
	}
}
