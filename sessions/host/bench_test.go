package host

import "testing"

func BenchmarkReadProcs(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if len(readProcs("/proc")) == 0 {
			b.Fatal("no processes")
		}
	}
}
