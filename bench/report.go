package main

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

// The report goes to stdout, a phase at a time; progress goes to stderr.
// The targets are the ones README documents.

func (b *bench) printLoad() {
	fmt.Println()
	fmt.Printf("%-22s %10s %10s %10s %14s %8s\n", "server", "conn/s", "median", "p99", "CPU/conn", "fails")
	for _, s := range b.servers() {
		res := &s.load
		fmt.Printf("%-22s %10.0f %10s %10s %14s %8d\n", s.name, res.rate(), res.pct(50), res.pct(99), res.cpuPerConn(), res.fails)
	}
	tb := b.tsadmin.load.rate() / b.bare.load.rate()
	to := b.tsadmin.load.rate() / b.openssh.load.rate()
	fmt.Printf("\ntsadmin/bare conn/s: %.2fx (target >= 0.9x: %s)\n", tb, verdict(tb >= 0.9))
	fmt.Printf("tsadmin/OpenSSH conn/s: %.1fx (target >= 10x: %s)\n", to, verdict(to >= 10))
}

func (b *bench) printMemory() {
	fmt.Printf("memory per idle interactive session: tsadmin %.1f KiB (target <= 100 KiB: %s), bare %.1f KiB\n",
		b.memTsadmin, verdict(b.memTsadmin <= 100), b.memBare)
	fmt.Printf("query session with %d sessions present, on the server: median %s (target <= 20ms: %s)\n",
		b.opt.idle, b.queryTook, verdict(b.queryTook <= 20*time.Millisecond))
}

func (b *bench) printCapacity() {
	fmt.Printf("idle sessions held before anything failed: %d of %d tried (target 10000: %s)\n",
		b.held, b.opt.capacity, verdict(b.held >= 10000))
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
