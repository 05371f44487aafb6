package main

import (
	"context"
	"fmt"
	"io"
	"iter"
	"runtime"
	"testing"
	"time"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// throttleRate is a rate no benchmark reaches, so that the limiter never
// makes anyone wait and what is measured is the cost of passing through it.
const throttleRate = 1e12

// countTo is an iterator over 0, 1, ... n-1.
func countTo(n int) iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range n {
			if !yield(i) {
				return
			}
		}
	}
}

// benchSeqBare is a loop over an iterator that acquires one unit per item
// itself: what throttle's Seq saves writing.
func benchSeqBare(b *testing.B) {
	ctx := context.Background()
	lim := ratelimit.New(throttleRate, time.Second)
	b.ReportAllocs()
	sum := 0
	for v := range countTo(b.N) {
		if err := lim.Acquire(ctx, 1); err != nil {
			b.Fatal(err)
		}
		sum += v
	}
	runtime.KeepAlive(sum)
}

// benchSeqThrottled is the same loop over throttle's Seq, made with opts.
// One range covers all b.N items, so the wrapper's setup is amortised and
// allocs/op shows what each item allocates.
func benchSeqThrottled(opts ...throttle.Option[int]) func(b *testing.B) {
	return func(b *testing.B) {
		ctx := context.Background()
		th := throttle.New(ratelimit.New(throttleRate, time.Second), opts...)
		b.ReportAllocs()
		sum := 0
		for v, err := range th.Seq(ctx, countTo(b.N)) {
			if err != nil {
				b.Fatal(err)
			}
			sum += v
		}
		runtime.KeepAlive(sum)
	}
}

// overheads prints section 4: pool and throttle against hand-written glue.
func overheads(w io.Writer, sz sizes) error {
	fmt.Fprintln(w, "4. pool and throttle, with a limiter that never binds: the cost of the package itself")
	fmt.Fprintln(w)
	taskName := "per task, 8 workers"
	peakName := fmt.Sprintf("peak live heap added, %d tasks", sz.poolTasks)
	t := newTable(w, []string{taskName, peakName}, 9, 16,
		"drip pool", "errgroup SetLimit(8) + x/time/rate Wait", "conc pool(8) + x/time/rate Wait")
	t.ratioRow(taskName, func(v float64) string { return fmt.Sprintf("%.0f ns", v) }, func(i int) float64 {
		return medianNs(func(b *testing.B) { poolRunners[i].run(b.N, noopTask) }, sz.rounds)
	})
	t.ratioRow(peakName, func(v float64) string { return fmt.Sprintf("%.0f KiB", v) }, func(i int) float64 {
		var peak heapPeak
		runtime.GC()
		before := liveHeap()
		stop := sampleHeap(&peak)
		poolRunners[i].run(sz.poolTasks, noopTask)
		stop()
		return float64(peak.live-before) / (1 << 10)
	})
	fmt.Fprintln(w)
	bare := testing.Benchmark(benchSeqBare)
	seq := testing.Benchmark(benchSeqThrottled())
	perItem := func(r testing.BenchmarkResult) float64 { return float64(r.T.Nanoseconds()) / float64(max(r.N, 1)) }
	fmt.Fprintf(w, "   throttle.Seq, per item: %.1f ns; the same loop calling Acquire itself: %.1f ns; difference %+.1f ns;\n",
		perItem(seq), perItem(bare), perItem(seq)-perItem(bare))
	fmt.Fprintf(w, "   %d allocations per item\n", seq.AllocsPerOp())
	fmt.Fprintln(w)
	return nil
}
