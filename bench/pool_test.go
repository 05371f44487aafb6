package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	concpool "github.com/sourcegraph/conc/pool"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/dripgo/drip/pool"
	"github.com/dripgo/drip/ratelimit"
)

const poolWorkers = 8

// A pool runner submits n tasks that each acquire one unit of a limiter
// that never binds, on poolWorkers goroutines, and waits for them.
type poolRunner struct {
	name string
	run  func(n int, task func(context.Context) error)
}

var poolRunners = []poolRunner{
	{"impl=drip", func(n int, task func(context.Context) error) {
		lim := ratelimit.New(huge, time.Second)
		p, _ := pool.New(context.Background(), lim, pool.Workers(poolWorkers))
		for range n {
			p.Go(task)
		}
		if err := p.Wait(); err != nil {
			panic(err)
		}
	}},
	{"impl=errgroup+xrate", func(n int, task func(context.Context) error) {
		lim := rate.NewLimiter(huge, 1e9)
		g, ctx := errgroup.WithContext(context.Background())
		g.SetLimit(poolWorkers)
		for range n {
			g.Go(func() error {
				if err := lim.Wait(ctx); err != nil {
					return err
				}
				return task(ctx)
			})
		}
		if err := g.Wait(); err != nil {
			panic(err)
		}
	}},
	{"impl=conc+xrate", func(n int, task func(context.Context) error) {
		lim := rate.NewLimiter(huge, 1e9)
		p := concpool.New().WithMaxGoroutines(poolWorkers).WithContext(context.Background()).WithCancelOnError()
		for range n {
			p.Go(func(ctx context.Context) error {
				if err := lim.Wait(ctx); err != nil {
					return err
				}
				return task(ctx)
			})
		}
		if err := p.Wait(); err != nil {
			panic(err)
		}
	}},
}

var poolSink atomic.Int64

func noopTask(context.Context) error {
	poolSink.Add(1)
	return nil
}

// BenchmarkPoolTask measures the cost of one task, from submission to its
// end, when the limiter admits everything: the pool's overhead over the
// task itself.
func BenchmarkPoolTask(b *testing.B) {
	for _, r := range poolRunners {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			r.run(b.N, noopTask)
		})
	}
}

// BenchmarkPoolMillion submits a million tasks to 8 workers and reports
// the peak heap while they run, sampled every 100 µs, beside the same for
// ten thousand tasks, to show that submission blocks rather than queues.
// peak-live-KiB is the heap the last GC found live (it moves only when a
// GC runs); peak-heap-KiB also counts garbage not yet collected, which the
// GC lets grow to its 4 MiB minimum goal before it runs.
func BenchmarkPoolMillion(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		for _, r := range poolRunners {
			b.Run(fmt.Sprintf("tasks=%d/%s", n, r.name), func(b *testing.B) {
				var peak heapPeak
				for b.Loop() {
					runtime.GC()
					stop := sampleHeap(&peak)
					r.run(n, noopTask)
					stop()
				}
				b.ReportMetric(float64(peak.live)/(1<<10), "peak-live-KiB")
				b.ReportMetric(float64(peak.heap)/(1<<10), "peak-heap-KiB")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/task")
			})
		}
	}
}

type heapPeak struct{ live, heap uint64 }

// sampleHeap records the largest heap sizes seen in *peak until stop is
// called.
func sampleHeap(peak *heapPeak) (stop func()) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	read := func() {
		metrics.Read(sample)
		peak.live = max(peak.live, sample[0].Value.Uint64())
		peak.heap = max(peak.heap, sample[1].Value.Uint64())
	}
	read()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		read()
	}
}
