// Package bare is the benchmark's ceiling: a gliderlabs/ssh server that
// accepts one public key and answers any command but TookCommand with a
// listing's bytes, a header and a row per session it holds, its caller's
// included. It is what anything built on the library must pay at least,
// for the same output. bench/bare runs it as a process; the server package's
// benchmarks run it in theirs.
package bare

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

// TookCommand is the command that bare answers, instead of a listing, with
// how long its last answers took to write (microseconds, one a line, the
// oldest first): the bench's figure beside tsadmin's took_us for the
// same bytes. Keeping them is a slot in a ring, so that the ceiling pays
// for no log.
const TookCommand = "bare-took"

// tookKept is how many of the latest answers' times bare keeps.
const tookKept = 64

// New returns the server: it accepts allowed only, holds an interactive
// (PTY) session until the client goes, and answers a command with a
// listing of the sessions it holds and the caller's (TookCommand aside).
func New(allowed gossh.PublicKey, hostKey gossh.Signer) *gliderssh.Server {
	var held atomic.Int64
	var took tookRing
	return &gliderssh.Server{
		HostSigners: []gliderssh.Signer{hostKey},
		PublicKeyHandler: func(_ gliderssh.Context, key gliderssh.PublicKey) bool {
			return gliderssh.KeysEqual(key, allowed)
		},
		Handler: func(s gliderssh.Session) {
			if _, _, isPty := s.Pty(); isPty {
				// An idle interactive session: hold it until the client goes.
				held.Add(1)
				defer held.Add(-1)
				io.Copy(io.Discard, s)
				return
			}
			if s.RawCommand() == TookCommand {
				s.Write(took.text())
				return
			}
			start := time.Now()
			s.Write(listing(int(held.Load()) + 1))
			took.add(time.Since(start))
		},
	}
}

// Start serves New(allowed, hostKey) in this process on a free port of
// 127.0.0.1 and returns its address, and stop, which closes it: what the
// server package's benchmarks and this package's tests run.
func Start(allowed gossh.PublicKey, hostKey gossh.Signer) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := New(allowed, hostKey)
	go srv.Serve(l)
	return l.Addr().String(), func() { srv.Close() }, nil
}

// tookRing keeps the latest tookKept durations.
type tookRing struct {
	mu   sync.Mutex
	d    [tookKept]time.Duration
	next int // slots written, ever
}

func (r *tookRing) add(d time.Duration) {
	r.mu.Lock()
	r.d[r.next%tookKept] = d
	r.next++
	r.mu.Unlock()
}

// text is the kept durations in microseconds, one a line, oldest first;
// "none" when there are none (so that the answer is never empty).
func (r *tookRing) text() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next == 0 {
		return []byte("none\n")
	}
	var b []byte
	for i := max(0, r.next-tookKept); i < r.next; i++ {
		b = fmt.Appendf(b, "%d\n", r.d[i%tookKept].Microseconds())
	}
	return b
}

// The last listing built, for its row count: the rows change only when
// the held sessions do, and building 10,000 is not the ceiling's cost.
var (
	listingMu   sync.Mutex
	listingRows = -1
	listingText []byte
)

// listing is a header and n rows as wide as tsadmin's `query session`
// rows (78 bytes with a two-digit ID), so that the ceiling moves the
// bytes tsadmin does.
func listing(n int) []byte {
	listingMu.Lock()
	defer listingMu.Unlock()
	if n != listingRows {
		b := []byte(" SESSIONNAME       USERNAME                 ID  STATE   TYPE        DEVICE\n")
		for i := 1; i <= n; i++ {
			b = fmt.Appendf(b, " %-17s %-24s %2d  %-6s  %-10s  %s\n", fmt.Sprintf("ssh#%d", i), "bench", i, "Active", "tsadmin", "127.0.0.1")
		}
		listingRows, listingText = n, b
	}
	return listingText
}
