package bare

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// TestTookCommandReportsTheLatestAnswers runs the server with the x/crypto
// client the bench uses: before any answer it reports none; after n
// listings it reports n durations, at most tookKept, and a listing is
// still the listing.
func TestTookCommandReportsTheLatestAnswers(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	allowed, _ := gossh.NewPublicKey(pub)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, _ := gossh.NewSignerFromKey(hostPriv)
	signer, _ := gossh.NewSignerFromKey(priv)
	addr, stop, err := Start(allowed, hostKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	cfg := &gossh.ClientConfig{User: "bench", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.FixedHostKey(hostKey.PublicKey())}
	run := func(cmd string) string {
		t.Helper()
		c, err := gossh.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var out bytes.Buffer
		s.Stdout = &out
		if err := s.Run(cmd); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return out.String()
	}

	if got := run(TookCommand); got != "none\n" {
		t.Fatalf("before any answer: %q, want none", got)
	}
	for i := range tookKept + 3 {
		if got := run("query session"); !strings.HasPrefix(got, " SESSIONNAME") || strings.Count(got, "\n") != 2 {
			t.Fatalf("answer %d is not a one-row listing: %q", i, got)
		}
		if i != 2 && i != tookKept+2 {
			continue
		}
		lines := strings.Fields(run(TookCommand))
		if want := min(i+1, tookKept); len(lines) != want {
			t.Fatalf("after %d answers: %d durations, want %d", i+1, len(lines), want)
		}
		for _, l := range lines {
			if us, err := strconv.ParseInt(l, 10, 64); err != nil || us < 0 {
				t.Fatalf("duration %q is not a count of microseconds", l)
			}
		}
	}
}

// TestTookRingKeepsTheLatestOldestFirst adds more durations than the ring
// keeps and reads them back: the last tookKept, oldest first, which is
// what the bench's median of the last 20 lines relies on. The server test
// above counts the lines only: a ring that kept the first tookKept, or
// gave them newest first, would pass it.
func TestTookRingKeepsTheLatestOldestFirst(t *testing.T) {
	var r tookRing
	const n = tookKept + 5
	for i := 1; i <= n; i++ {
		r.add(time.Duration(i) * time.Microsecond)
	}
	lines := strings.Fields(string(r.text()))
	if len(lines) != tookKept {
		t.Fatalf("%d durations, want %d", len(lines), tookKept)
	}
	for k, l := range lines {
		if want := strconv.Itoa(n - tookKept + 1 + k); l != want {
			t.Fatalf("duration %d is %s µs, want %s: not the latest, oldest first (%v)", k, l, want, lines)
		}
	}
}
