package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"
)

// The report goes to stdout, a phase at a time; progress goes to stderr.

// The targets are issue 15's: whatever tsadmin adds over the library is
// below the noise.
const (
	targetConnRatio = 1.0              // tsadmin/bare conn/s, at least
	targetCPUSlack  = 0.05             // tsadmin's CPU/conn over bare's, at most
	targetHeldKiB   = 64.0             // per idle interactive session, at most
	targetQueryTook = time.Millisecond // query session on the server, at most
	targetRateRatio = 0.5              // one-shot conn/s held vs none, at least
)

func (b *bench) printLoad() {
	fmt.Println()
	fmt.Printf("%-22s %10s %10s %10s %14s %8s\n", "server", "conn/s", "median", "p99", "CPU/conn", "fails")
	for _, s := range b.servers() {
		res := &s.load
		fmt.Printf("%-22s %10.0f %10s %10s %14s %8d\n", s.name, res.rate(), res.pct(50), res.pct(99), res.cpuPerConn(), res.fails)
	}
	tb := b.tsadmin.load.rate() / b.bare.load.rate()
	fmt.Printf("\ntsadmin/bare conn/s over %d rounds: %.2fx (target >= %.1fx: %s)\n", b.opt.rounds, tb, targetConnRatio, verdict(tb >= targetConnRatio))
	ct, cb := b.tsadmin.load.cpuPerConn(), b.bare.load.cpuPerConn()
	over := float64(ct-cb) / float64(max(cb, 1))
	fmt.Printf("tsadmin/bare CPU per connection: %s vs %s, %+.1f%% (target within %.0f%%: %s)\n",
		ct, cb, 100*over, 100*targetCPUSlack, verdict(cb > 0 && over <= targetCPUSlack))
	// The spread of the rounds: how far one round's figure lands from
	// the run's on this machine.
	t, bare := &b.tsadmin.load, &b.bare.load
	if n := min(len(t.roundRates), len(bare.roundRates)); n > 1 {
		rates, cpus := make([]float64, n), make([]float64, n)
		for i := range n {
			rates[i] = t.roundRates[i] / bare.roundRates[i]
			cpus[i] = 100 * (float64(t.roundCPU[i]) - float64(bare.roundCPU[i])) / float64(max(bare.roundCPU[i], 1))
		}
		fmt.Printf("  round by round: conn/s %.2fx to %.2fx, CPU per connection %+.1f%% to %+.1f%%\n",
			slices.Min(rates), slices.Max(rates), slices.Min(cpus), slices.Max(cpus))
	}
	if b.openssh != nil {
		to := b.tsadmin.load.rate() / b.openssh.load.rate()
		fmt.Printf("tsadmin/OpenSSH conn/s: %.1fx (for reference)\n", to)
	}
}

func (b *bench) printHeld() {
	fmt.Println()
	// Issue 15 sets these at 1000 and 10000 held (the default -held).
	fmt.Printf("one-shot conn/s with none held: tsadmin %.0f, bare %.0f\n", b.rate0, b.bareRate0)
	for i, t := range b.heldTsadmin {
		var bare heldStep
		if i < len(b.heldBare) {
			bare = b.heldBare[i]
		}
		ratio, bareRatio := 0.0, 0.0
		if b.rate0 > 0 {
			ratio = t.rate / b.rate0
		}
		if b.bareRate0 > 0 {
			bareRatio = bare.rate / b.bareRate0
		}
		fmt.Printf("held %d (tsadmin %d, bare %d):\n", t.n, t.held, bare.held)
		fmt.Printf("  memory per idle interactive session: tsadmin %.1f KiB (target <= %.0f KiB: %s), bare %.1f KiB\n",
			t.mem, targetHeldKiB, verdict(t.held == t.n && t.mem <= targetHeldKiB), bare.mem)
		fmt.Printf("  query session on the server: median %s (target <= %s: %s); bare writing as many bytes: %s\n",
			t.queryTook, targetQueryTook, verdict(t.held == t.n && t.queryTook > 0 && t.queryTook <= targetQueryTook), bare.queryTook)
		fmt.Printf("  one-shot conn/s: %.0f, %.2f of none held, %d KB each (target >= %.1f: %s)\n",
			t.rate, ratio, t.bytes/1000, targetRateRatio, verdict(t.held == t.n && ratio >= targetRateRatio))
		// The ceiling: the library answering with as many rows, so that
		// the bytes moved (encrypted, copied, read) are the same.
		fmt.Printf("  bare with a listing as long: %.0f, %.2f of its none held, %d KB each; tsadmin/bare %.2fx\n",
			bare.rate, bareRatio, bare.bytes/1000, t.rate/max(bare.rate, 1))
	}
}

func (b *bench) printMachine() {
	fmt.Printf("\nmachine: %d cores, %s; Go %s; %s\n", runtime.NumCPU(), cpuModel(), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// step says on stderr what the bench is doing now.
func step(s string) { fmt.Fprintf(os.Stderr, "bench: %s\n", s) }
