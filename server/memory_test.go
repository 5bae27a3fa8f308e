package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"runtime"
	"runtime/metrics"
	"testing"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
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
// gliderlabs/ssh server that the bench compares tsadmin with (bench/bare:
// it accepts one key and holds a PTY session until the client goes), in
// this process: the library's own cost of an idle session.
func BenchmarkIdleSessionMemoryBare(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	benchmarkIdleMemory(b, startBare(b, pub), priv)
}

// startBare starts, in this process, the bare gliderlabs/ssh server that
// the bench compares tsadmin with (bench/bare): it accepts the one key
// pub, holds a PTY session until the client goes, and answers a command
// with a listing's header and row.
func startBare(b *testing.B, pub ed25519.PublicKey) (addr string) {
	allowed, _ := gossh.NewPublicKey(pub)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, _ := gossh.NewSignerFromKey(hostPriv)
	srv := &gliderssh.Server{
		HostSigners: []gliderssh.Signer{hostKey},
		PublicKeyHandler: func(_ gliderssh.Context, key gliderssh.PublicKey) bool {
			return gliderssh.KeysEqual(key, allowed)
		},
		Handler: func(s gliderssh.Session) {
			if _, _, isPty := s.Pty(); isPty {
				io.Copy(io.Discard, s)
				return
			}
			io.WriteString(s, bareListing)
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// bareListing is as long as tsadmin's `query session` with one session.
const bareListing = " SESSIONNAME       USERNAME                 ID  STATE   TYPE        DEVICE\n" +
	">ssh#1             alice                     1  Active  tsadmin     127.0.0.1\n"

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
