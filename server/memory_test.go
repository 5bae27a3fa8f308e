package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"runtime"
	"runtime/metrics"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/internal/bare"
)

// BenchmarkIdleSessionMemory reports what an idle interactive session
// keeps on the server, from the runtime's own figures after a garbage
// collection: live heap, goroutine stacks and goroutines per session,
// with 1,000 held by a child process. Unlike the bench's RSS figure, it
// leaves out the garbage the collector has not yet reclaimed, so it does
// not move from run to run. Run it once:
//
//	go test -run '^$' -bench IdleSessionMemory -benchtime 1x ./server
func BenchmarkIdleSessionMemory(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	addr, _ := startWithKey(b, nil, priv)
	benchmarkIdleMemory(b, addr, priv)
}

// BenchmarkIdleSessionMemoryBare is the same figure for the bare
// gliderlabs/ssh server that the bench compares tsadmin with (startBare),
// in this process: the library's own cost of an idle session.
func BenchmarkIdleSessionMemoryBare(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	benchmarkIdleMemory(b, startBare(b, pub), priv)
}

// startBare starts, in this process, the bare gliderlabs/ssh server that
// the bench compares tsadmin with (internal/bare, which bench/bare runs),
// accepting the one key pub.
func startBare(b *testing.B, pub ed25519.PublicKey) (addr string) {
	allowed, _ := gossh.NewPublicKey(pub)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, _ := gossh.NewSignerFromKey(hostPriv)
	addr, stop, err := bare.Start(allowed, hostKey)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	return addr
}

// benchmarkIdleMemory holds 1,000 idle interactive sessions on the server
// at addr, which accepts priv, and reports what they keep.
func benchmarkIdleMemory(b *testing.B, addr string, priv ed25519.PrivateKey) {
	const n = 1000
	var heap, stacks, goroutines float64
	for range b.N {
		before := liveMemory()
		release := holdSessions(b, addr, priv, n)
		settledGoroutines()
		after := liveMemory()
		release()
		heap += float64(after.heap-before.heap) / n
		stacks += float64(after.stacks-before.stacks) / n
		goroutines += float64(after.goroutines-before.goroutines) / n
	}
	b.ReportMetric(heap/float64(b.N), "heap-B/session")
	b.ReportMetric(stacks/float64(b.N), "stack-B/session")
	b.ReportMetric(goroutines/float64(b.N), "goroutines/session")
}

type memory struct{ heap, stacks, goroutines int64 }

// liveMemory collects the garbage and reads the live heap, the stacks in
// use and the goroutine count.
func liveMemory() memory {
	runtime.GC()
	runtime.GC() // the second frees what the first's finalizers let go
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(s)
	return memory{int64(s[0].Value.Uint64()), int64(s[1].Value.Uint64()), int64(s[2].Value.Uint64())}
}
