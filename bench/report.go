package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
)

type config struct {
	long, smoke bool
	svg         string
}

// sizes are the amounts of work behind each figure.
type sizes struct {
	benchtime    string        // per ns/op benchmark
	rounds       int           // runs of each ns/op benchmark; the median is shown
	waiters      int           // blocked waiters for heap per waiter
	cancelled    int           // blocked waiters cancelled at once
	rateFor      time.Duration // each achieved-rate run
	latenessRuns int
	dripScale    float64 // the Drip! tables run at 1/dripScale of the time
	poolTasks    int     // tasks through a pool, for its peak heap
}

func (c config) sizes() sizes {
	switch {
	case c.smoke:
		return sizes{"2000x", 1, 500, 500, 100 * time.Millisecond, 5, 60, 10_000}
	case c.long:
		return sizes{"1s", 5, 50_000, 100_000, 10 * time.Second, 500, 6, 1_000_000}
	}
	return sizes{"200ms", 1, 50_000, 100_000, 2 * time.Second, 50, 6, 1_000_000}
}

// The configuration of the achieved-rate runs: 10,000 a second in bursts of
// 100, that is ratelimit.New(100, 10*time.Millisecond).
const (
	ratePerSecond = 10_000
	rateBurst     = 100
)

func report(w io.Writer, cfg config) error {
	sz := cfg.sizes()
	if err := setBenchtime(sz.benchtime); err != nil {
		return err
	}
	start := time.Now()
	fmt.Fprintf(w, "drip benchmark report: %s, %s/%s, %d CPUs, GOMAXPROCS %d\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0))

	fmt.Fprintln(w, "1. aiolimiter's Drip! examples, live")
	fmt.Fprintln(w)
	dripTable(w, 4, 8*time.Second, 10, []float64{0, 0.01, 0.02, 0.03, 2, 4, 6, 8, 10, 12}, sz.dripScale)
	dripTable(w, 1, 1500*time.Millisecond, 5, []float64{0, 1.5, 3, 4.5, 6}, sz.dripScale)

	fmt.Fprintln(w, "2. drip side by side with the limiters users pick instead")
	fmt.Fprintln(w, "   (each cell: the figure, and drip's figure divided by it; lower is better but for achieved rate)")
	fmt.Fprintln(w)
	const delay = 5 * time.Millisecond
	var (
		tryName      = "non-blocking check, 1 goroutine"
		parallelName = "non-blocking check, parallel"
		waitName     = "blocking acquire, no wait needed"
		sharedName   = fmt.Sprintf("heap per blocked waiter (%d, shared ctx)", sz.waiters)
		ownName      = fmt.Sprintf("heap per blocked waiter (%d, own ctx)", sz.waiters)
		cancelName   = fmt.Sprintf("cancel %d blocked waiters at once", sz.cancelled)
		rateName     = func(g int) string { return fmt.Sprintf("achieved rate, %d goroutine(s), %% of max", g) }
		latenessName = "wake-up lateness for a 5 ms wait, median"
	)
	// Each figure is printed as soon as it is measured.
	t := newTable(w, []string{tryName, parallelName, waitName, sharedName, ownName, cancelName,
		rateName(1), rateName(100), latenessName}, 9, 16, peerLabels()...)
	nsRow := func(name string, bench func(p peer) func(*testing.B), has func(limiter) bool) {
		t.ratioRow(name, func(v float64) string { return fmt.Sprintf("%.1f ns", v) }, func(i int) float64 {
			if !has(peers[i].make(1, 1)) {
				return -1
			}
			return medianNs(bench(peers[i]), sz.rounds)
		})
	}
	hasTry := func(l limiter) bool { return l.try != nil }
	all := func(limiter) bool { return true }
	nsRow(tryName, func(p peer) func(*testing.B) { return benchTry(p, false) }, hasTry)
	nsRow(parallelName, func(p peer) func(*testing.B) { return benchTry(p, true) }, hasTry)
	nsRow(waitName, benchWait, all)

	for _, own := range []bool{false, true} {
		name := sharedName
		if own {
			name = ownName
		}
		t.ratioRow(name, func(v float64) string { return fmt.Sprintf("%.0f B", v) }, func(i int) float64 {
			if !peers[i].make(1, 1).ctxAware {
				return -1
			}
			return heapPerWaiter(peers[i], sz.waiters, own)
		})
	}
	t.ratioRow(cancelName, func(v float64) string { return fmt.Sprintf("%.1f ms", v) }, func(i int) float64 {
		if !peers[i].make(1, 1).ctxAware {
			return -1
		}
		return float64(cancelTime(peers[i], sz.cancelled)) / 1e6
	})
	var plotted []namedRun
	for _, g := range []int{1, 100} {
		t.ratioRow(rateName(g), func(v float64) string { return fmt.Sprintf("%.2f %%", v) }, func(i int) float64 {
			r := achievedRate(peers[i], ratePerSecond, rateBurst, g, sz.rateFor)
			if g == 100 {
				plotted = append(plotted, namedRun{peers[i].label, r})
			}
			return float64(r.admitted) / r.expected * 100
		})
	}
	t.ratioRow(latenessName, func(v float64) string { return fmt.Sprintf("%.0f µs", v) }, func(i int) float64 {
		med, _ := lateness(peers[i], delay, sz.latenessRuns)
		return float64(med) / 1e3
	})
	med, p90 := timerLateness(delay, sz.latenessRuns)
	fmt.Fprintf(w, "   a bare time.Timer of 5 ms on this machine is late by %.0f µs (median), %.0f µs (p90).\n",
		float64(med)/1e3, float64(p90)/1e3)
	fmt.Fprintf(w, "   achieved rate: ratelimit.New(%d, 10ms), that is %d/s in bursts of %d, for %v; 100%% is burst + rate*t,\n",
		rateBurst, ratePerSecond, rateBurst, sz.rateFor)
	fmt.Fprintln(w, "   the most a limiter may admit. uber-go/ratelimit has no non-blocking check and, like")
	fmt.Fprintln(w, "   juju/ratelimit, no context: its waiters cannot be cancelled (n/a).")
	fmt.Fprintln(w)

	fmt.Fprintln(w, "3. fairness: a request for the whole burst (10 units, 100/s) among 4 goroutines taking 1 unit at a time")
	fmt.Fprintln(w)
	for _, p := range peers {
		if p.make(1, 1).waitN == nil {
			fmt.Fprintf(w, "   %-18s  n/a (no weighted acquire)\n", p.label)
			continue
		}
		d, ok := fairness(p, 100, 10, 4, 5*time.Second)
		verdict := ""
		if !ok {
			verdict = "  starved: not admitted within"
		}
		fmt.Fprintf(w, "   %-18s  admitted after %v%s\n", p.label, d.Round(time.Millisecond), verdict)
	}
	fmt.Fprintln(w, "   (the burst takes 100 ms to free at 100/s, plus up to 4 small requests queued before it)")
	fmt.Fprintln(w)

	if err := overheads(w, sz); err != nil {
		return err
	}
	if err := keyedSection(w, cfg); err != nil {
		return err
	}

	windowSection(w, cfg)
	if err := middlewareSection(w, cfg); err != nil {
		return err
	}

	if cfg.svg != "" {
		f, err := os.Create(cfg.svg)
		if err != nil {
			return err
		}
		title := fmt.Sprintf("Admissions ahead of the steady rate: 100 goroutines on %d/s in bursts of %d", ratePerSecond, rateBurst)
		if err := plotAdmissions(f, title, plotted, rateBurst, ratePerSecond, sz.rateFor); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(w, "plot written to %s\n", cfg.svg)
	}
	fmt.Fprintf(w, "report took %v\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

func peerLabels() []string {
	var ls []string
	for _, p := range peers {
		ls = append(ls, p.label)
	}
	return ls
}

func setBenchtime(d string) error {
	return flagSet("test.benchtime", d)
}

// medianNs runs a benchmark rounds times and returns the median ns/op.
func medianNs(f func(*testing.B), rounds int) float64 {
	var ns []float64
	for range rounds {
		r := testing.Benchmark(f)
		ns = append(ns, float64(r.T.Nanoseconds())/float64(max(r.N, 1)))
	}
	slices.Sort(ns)
	return ns[len(ns)/2]
}
