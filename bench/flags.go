package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// options are the command line's settings for one run.
type options struct {
	concurrency int    // concurrent clients in the load generator
	count       int    // connections per server per round
	rounds      int    // rounds; the servers alternate within each
	held        []int  // idle interactive sessions held, in steps, for the memory and listing figures
	sources     string // tsadmin's session sources, as config.yaml lists them
	openssh     bool   // also measure OpenSSH with a ForceCommand script, for reference
	cpuprofile  string // tsadmin's -cpuprofile, the whole run's; empty for none
}

// parseFlags reads the command line; -quick replaces the sizes with a
// short run's, whatever else was given, as it always has.
func parseFlags(name string, args []string) options {
	var o options
	var quick bool
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.IntVar(&o.concurrency, "concurrency", 16, "concurrent clients")
	fs.IntVar(&o.count, "count", 1000, "connections per server per round")
	fs.IntVar(&o.rounds, "rounds", 8, "rounds; the servers alternate within each")
	held := fs.String("held", "1000,10000", "idle interactive sessions held, ascending steps")
	fs.BoolVar(&o.openssh, "openssh", true, "also measure OpenSSH with a ForceCommand script (for reference; slow on a loaded machine)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "have tsadmin write a CPU profile of the whole run to this file (go tool pprof -top)")
	fs.BoolVar(&quick, "quick", false, "a short run: fewer connections and sessions")
	fs.StringVar(&o.sources, "sources", "shell, host", "tsadmin's session sources")
	fs.Parse(args) // ExitOnError: a bad flag prints usage and exits 2
	if quick {
		o.count, o.rounds, *held = 150, 2, "300,2000"
	}
	for _, f := range strings.Split(*held, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || len(o.held) > 0 && n <= o.held[len(o.held)-1] {
			fmt.Fprintf(os.Stderr, "%s: -held wants ascending positive numbers, as 1000,10000\n", name)
			os.Exit(2)
		}
		o.held = append(o.held, n)
	}
	return o
}
