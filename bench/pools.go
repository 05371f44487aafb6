package main

import (
	"context"
	"runtime/metrics"
	"sync/atomic"
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

// poolVariants are drip's pool with part of its machinery out of use, for
// the benchmarks that show what that part buys. With the limiter hidden
// behind Acquire, no submitter can admit its own task: every task waits for
// its turn on its own goroutine and calls Acquire there.
var poolVariants = []poolRunner{
	{"impl=drip-acquire-only", func(n int, task func(context.Context) error) {
		lim := acquireOnly{ratelimit.New(huge, time.Second)}
		p, _ := pool.New(context.Background(), lim, pool.Workers(poolWorkers))
		for range n {
			p.Go(task)
		}
		if err := p.Wait(); err != nil {
			panic(err)
		}
	}},
}

// acquireOnly hides every method of a limiter but Acquire.
type acquireOnly struct{ ratelimit.Acquirer }

var poolSink atomic.Int64

func noopTask(context.Context) error {
	poolSink.Add(1)
	return nil
}

type heapPeak struct{ live, heap uint64 }

// liveHeap returns the heap the last garbage collection found live.
func liveHeap() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

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
