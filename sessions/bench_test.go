package sessions

import (
	"context"
	"testing"
)

func BenchmarkRegistryList10000(b *testing.B) {
	r := NewRegistry()
	shells := NewShellSource(r)
	r.AddSource(shells)
	for i := 0; i < 10000; i++ {
		shells.Add("alice", "127.0.0.1", nopControl{})
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if list, _ := r.List(ctx); len(list) != 10000 {
			b.Fatal(len(list))
		}
	}
}
