package shell

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// clean's word-at-a-time scan answers as the byte-by-byte one does, for
// every byte value at every place of a word and across words, and for
// random text with newlines.
func TestCleanScansWordsAsBytes(t *testing.T) {
	for c := range 256 {
		for at := range 17 {
			p := bytes.Repeat([]byte("a\n"), 9)[:17]
			p[at] = byte(c)
			if got, want := clean(p), cleanBytes(p); got != want {
				t.Fatalf("byte %#x at %d: clean %v, want %v", c, at, got, want)
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		p := make([]byte, r.IntN(40))
		for i := range p {
			p[i] = byte(' ' + r.IntN(95))
			if r.IntN(50) == 0 {
				p[i] = byte(r.IntN(256))
			}
		}
		if got, want := clean(p), cleanBytes(p); got != want {
			t.Fatalf("%q: clean %v, want %v", p, got, want)
		}
	}
}

// BenchmarkCleanListing is the check every output goes through, on a
// listing of 1,000 sessions.
func BenchmarkCleanListing(b *testing.B) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, VerbQuerySession, benchRows(1000), false, 0); err != nil {
		b.Fatal(err)
	}
	p := buf.Bytes()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if !clean(p) {
			b.Fatal("not clean")
		}
	}
}
