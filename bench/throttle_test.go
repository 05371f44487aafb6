package main

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// BenchmarkThrottleSeq measures, per item, a loop over an iterator that
// acquires one unit per item itself (impl=bare), side by side with the same
// loop over throttle's Seq wrapper (impl=seq, and impl=seq-cost with a cost
// function): the difference is the wrapper's overhead. One range covers all
// b.N items, so the wrapper's setup is amortised and allocs/op shows what
// each item allocates.
func BenchmarkThrottleSeq(b *testing.B) {
	b.Run("impl=bare", benchSeqBare)
	b.Run("impl=seq", benchSeqThrottled())
	b.Run("impl=seq-cost", benchSeqThrottled(throttle.WithCost(func(v int) float64 { return float64(v&1 + 1) })))
}

// BenchmarkThrottleFunc measures a call that acquires one unit and then
// calls a function (impl=bare), side by side with the same function wrapped
// by throttle.Func (impl=func).
func BenchmarkThrottleFunc(b *testing.B) {
	ctx := context.Background()
	double := func(_ context.Context, v int) (int, error) { return 2 * v, nil }
	b.Run("impl=bare", func(b *testing.B) {
		lim := ratelimit.New(throttleRate, time.Second)
		b.ReportAllocs()
		sum := 0
		for i := 0; b.Loop(); i++ {
			if err := lim.Acquire(ctx, 1); err != nil {
				b.Fatal(err)
			}
			r, _ := double(ctx, i)
			sum += r
		}
		runtime.KeepAlive(sum)
	})
	b.Run("impl=func", func(b *testing.B) {
		fn := throttle.Func(throttle.New[int](ratelimit.New(throttleRate, time.Second)), double)
		b.ReportAllocs()
		sum := 0
		for i := 0; b.Loop(); i++ {
			r, err := fn(ctx, i)
			if err != nil {
				b.Fatal(err)
			}
			sum += r
		}
		runtime.KeepAlive(sum)
	})
}

// BenchmarkThrottleChan measures, per item, a goroutine that receives,
// acquires one unit and sends on (impl=bare), side by side with
// throttle's Chan (impl=chan). Both pay two channel handoffs per item.
func BenchmarkThrottleChan(b *testing.B) {
	ctx := context.Background()
	feed := func(n int) <-chan int {
		in := make(chan int)
		go func() {
			defer close(in)
			for i := range n {
				in <- i
			}
		}()
		return in
	}
	b.Run("impl=bare", func(b *testing.B) {
		lim := ratelimit.New(throttleRate, time.Second)
		b.ReportAllocs()
		in, out := feed(b.N), make(chan int)
		go func() {
			defer close(out)
			for v := range in {
				if err := lim.Acquire(ctx, 1); err != nil {
					return
				}
				out <- v
			}
		}()
		sum := 0
		for v := range out {
			sum += v
		}
		runtime.KeepAlive(sum)
	})
	b.Run("impl=chan", func(b *testing.B) {
		th := throttle.New[int](ratelimit.New(throttleRate, time.Second))
		b.ReportAllocs()
		out, wait := th.Chan(ctx, feed(b.N))
		sum := 0
		for v := range out {
			sum += v
		}
		if err := wait(); err != nil {
			b.Fatal(err)
		}
		runtime.KeepAlive(sum)
	})
}
