package main

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

func main() {
	testing.Init() // the report runs benchmarks through testing.Benchmark
	var cfg config
	flag.BoolVar(&cfg.long, "long", false, "longer, more precise runs (about 3.5 minutes on 2 cores)")
	flag.BoolVar(&cfg.smoke, "smoke", false, "tiny runs that only check the report works (figures meaningless)")
	flag.StringVar(&cfg.svg, "svg", "", "write a plot of admissions over time to this SVG file")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go -C bench run . [flags]\n\n"+
			"Prints drip's Drip! tables live, then measures drip side by side with\n"+
			"golang.org/x/time/rate, go.uber.org/ratelimit, github.com/juju/ratelimit,\n"+
			"errgroup and conc, and its keyed limiter with sethvargo/go-limiter,\n"+
			"go-chi/httprate, throttled, tollbooth and ulule/limiter, and its HTTP\n"+
			"middleware with theirs, on this machine.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := report(os.Stdout, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
