// Command bench measures tsadmin against the bare gliderlabs/ssh library
// (the ceiling) and against OpenSSH with a ForceCommand script (what an
// admin would build instead), on 127.0.0.1, with one load generator, and
// prints one table. Run it from the repository root:
//
//	go run ./bench            # the full run (a few minutes)
//	go run ./bench -quick     # a short run
//
// It installs what it needs (scripts/install-deps), builds tsadmin and the
// bare server, starts the three servers, and ends every process it started
// by its own PID.
//
// The files go by concern: flags.go (the command line), bench.go (one run
// and its phases, start to cleanup), servers.go (starting the three
// servers), load.go (the load generator), idle.go (idle sessions held in
// steps: memory, query time, one-shot conn/s), hold.go (the child process
// that holds them), proc.go (what is read from /proc), report.go (the
// printed table). One bench value holds a run's state and is passed
// explicitly; nothing mutable lives at package level.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if runHolder() {
		return
	}
	b, err := newBench(parseFlags(os.Args[0], os.Args[1:]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	// Output piped into head must not kill the run before it cleans up.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; b.cleanup(); os.Exit(1) }()

	err = b.run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	b.cleanup()
	if err != nil {
		os.Exit(1)
	}
}
