package main

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// huge is a rate no benchmark reaches, so that every call is admitted and
// what is measured is the cost of asking.
const huge = 1e12

// benchTry measures the non-blocking check when it admits, in one
// goroutine or in parallel.
func benchTry(p peer, parallel bool) func(b *testing.B) {
	return func(b *testing.B) {
		try := p.make(huge, 1<<30).try
		b.ReportAllocs()
		if parallel {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					try()
				}
			})
			return
		}
		for b.Loop() {
			try()
		}
	}
}

// benchWait measures the blocking acquisition when no wait is needed.
func benchWait(p peer) func(b *testing.B) {
	return func(b *testing.B) {
		wait := p.make(huge, 1<<30).wait
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// blockedWaiters starts n goroutines that wait on a full limiter of p until
// ctx ends, and returns once all of them are blocked, with a function that
// waits for them to return. With own, each waiter waits with a context of
// its own, derived from ctx. p must honour ctx.
func blockedWaiters(ctx context.Context, p peer, n int, own bool) (wait func()) {
	lim := p.make(1.0/3600, 1) // one an hour
	lim.try()
	return parked(ctx, n, own, func(ctx context.Context) { _ = lim.wait(ctx) })
}

// parked starts n goroutines that call block, with ctx or a context of their
// own derived from it, and returns once all of them are blocked.
func parked(ctx context.Context, n int, own bool, block func(context.Context)) (wait func()) {
	var wg sync.WaitGroup
	var started atomic.Int64
	for range n {
		wg.Go(func() {
			ctx := ctx
			if own {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
			}
			started.Add(1)
			block(ctx)
		})
	}
	settle(&started, n)
	return wg.Wait
}

// settle returns once n goroutines have started and the process has gone
// quiet, so that they are all parked.
func settle(started *atomic.Int64, n int) {
	for started.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	for prev := -1; ; {
		time.Sleep(20 * time.Millisecond)
		cur := runtime.NumGoroutine()
		if cur == prev {
			return
		}
		prev = cur
	}
}

// heapPerWaiter returns the heap that n blocked waiters hold, per waiter,
// beyond what n goroutines blocked on their context's Done channel hold:
// what the limiter itself costs for each waiter, their goroutines, stacks
// and contexts excluded. With own, each waiter has a context of its own.
func heapPerWaiter(p peer, n int, own bool) float64 {
	base := func(ctx context.Context) func() {
		return parked(ctx, n, own, func(ctx context.Context) { <-ctx.Done() })
	}
	// The runtime keeps the descriptors of goroutines that ended for reuse:
	// a first round makes every measured round find them there.
	heapWith(base)
	without := heapWith(base)
	with := heapWith(func(ctx context.Context) func() { return blockedWaiters(ctx, p, n, own) })
	return (with - without) / float64(n)
}

func heapWith(start func(ctx context.Context) (wait func())) float64 {
	ctx, cancel := context.WithCancel(context.Background())
	ctx.Done() // allocate the done channel before measuring
	before := heapInUse()
	wait := start(ctx)
	after := heapInUse()
	cancel()
	wait()
	return float64(after) - float64(before)
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// cancelTime returns how long n blocked waiters take to return once their
// context is cancelled.
func cancelTime(p peer, n int) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	wait := blockedWaiters(ctx, p, n, false)
	start := time.Now()
	cancel()
	wait()
	return time.Since(start)
}

// rateRun is what a limiter admitted in one run.
type rateRun struct {
	admitted int
	expected float64         // burst + rate*duration: the most a limiter may admit
	times    []time.Duration // when each admission happened
}

// achievedRate runs g goroutines that acquire one unit at a time for d on a
// limiter of perSecond in bursts of burst, and records every admission.
func achievedRate(p peer, perSecond float64, burst, g int, d time.Duration) rateRun {
	lim := p.make(perSecond, burst)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	per := make([][]time.Duration, g)
	var wg sync.WaitGroup
	for i := range g {
		wg.Go(func() {
			for {
				if lim.ctxAware {
					if lim.wait(ctx) != nil {
						return
					}
				} else {
					_ = lim.wait(ctx)
				}
				at := time.Since(start)
				if at >= d {
					return
				}
				per[i] = append(per[i], at)
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	for _, ts := range per {
		all = append(all, ts...)
	}
	slices.Sort(all)
	return rateRun{admitted: len(all), expected: float64(burst) + perSecond*d.Seconds(), times: all}
}

// lateness measures, runs times, how much later than due a waiter that must
// wait d is admitted, and returns the median and 90th percentile.
func lateness(p peer, d time.Duration, runs int) (median, p90 time.Duration) {
	lim := p.make(float64(time.Second)/float64(d), 1)
	ctx := context.Background()
	_ = lim.wait(ctx) // takes the burst
	late := make([]time.Duration, 0, runs)
	prev := time.Now()
	for range runs {
		_ = lim.wait(ctx)
		now := time.Now()
		late = append(late, now.Sub(prev)-d)
		prev = now
	}
	return quantiles(late)
}

// timerLateness is lateness for a bare time.Timer of the same delay.
func timerLateness(d time.Duration, runs int) (median, p90 time.Duration) {
	late := make([]time.Duration, 0, runs)
	for range runs {
		start := time.Now()
		t := time.NewTimer(d)
		<-t.C
		late = append(late, time.Since(start)-d)
	}
	return quantiles(late)
}

func quantiles(ds []time.Duration) (median, p90 time.Duration) {
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*9/10]
}

// fairness measures how long a request for the whole burst waits while
// small goroutines acquire one unit at a time as fast as they can: a
// limiter that lets the small ones pass starves it.
func fairness(p peer, perSecond float64, burst, small int, limit time.Duration) (time.Duration, bool) {
	lim := p.make(perSecond, burst)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range small {
		wg.Go(func() {
			for !stop.Load() {
				_ = lim.wait(ctx)
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // the stream is flowing
	done := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		_ = lim.waitN(ctx, burst)
		done <- time.Since(start)
	}()
	var got time.Duration
	ok := true
	select {
	case got = <-done:
	case <-time.After(limit):
		got, ok = limit, false
	}
	stop.Store(true)
	cancel()
	wg.Wait()
	if !ok && !lim.ctxAware {
		<-done // it ends once the small ones stop
	}
	return got, ok
}
