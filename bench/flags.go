package main

import "flag"

// options are the command line's settings for one run.
type options struct {
	concurrency int    // concurrent clients in the load generator
	count       int    // connections per server per round
	rounds      int    // rounds; the servers alternate within each
	idle        int    // idle interactive sessions held for the memory figure
	capacity    int    // idle sessions to try to hold on one tsadmin
	sources     string // tsadmin's session sources, as config.yaml lists them
}

// parseFlags reads the command line; -quick replaces the sizes with a
// short run's, whatever else was given, as it always has.
func parseFlags(name string, args []string) options {
	var o options
	var quick bool
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.IntVar(&o.concurrency, "concurrency", 16, "concurrent clients")
	fs.IntVar(&o.count, "count", 600, "connections per server per round")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; the servers alternate within each")
	fs.IntVar(&o.idle, "idle", 1000, "idle interactive sessions held for the memory figure")
	fs.IntVar(&o.capacity, "capacity", 10000, "idle sessions to try to hold on one tsadmin")
	fs.BoolVar(&quick, "quick", false, "a short run: fewer connections and sessions")
	fs.StringVar(&o.sources, "sources", "shell, host", "tsadmin's session sources")
	fs.Parse(args) // ExitOnError: a bad flag prints usage and exits 2
	if quick {
		o.count, o.rounds, o.idle, o.capacity = 150, 2, 300, 2000
	}
	return o
}
