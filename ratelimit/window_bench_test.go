package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
)

// The Window's costs, beside the Limiter's, from inside the package so
// that they can report the log's size. The comparisons with other
// libraries are in bench/ (BenchmarkTry, BenchmarkWaitNoDelay, ...,
// impl=drip-window).

// wbCap returns a capacity that no benchmark fills within period, so that
// every call is admitted: the log then holds the calls of the last period,
// a steady size once the first period has passed. It is 2^30, as in
// bench/, or 1,000 a nanosecond where that is less, as New takes at most
// 1,024.
func wbCap(period time.Duration) float64 { return min(1<<30, 1000*float64(period)) }

// wbPeriods are the periods of the real-clock benchmarks: at 50-100 ns a
// call, the log holds about 1,000, 10,000 and 100,000 entries. 1.07 ms is
// the period of bench/'s drip-window peer.
var wbPeriods = []time.Duration{100 * time.Microsecond, 1073741 * time.Nanosecond, 10 * time.Millisecond}

// wbLog reports the log's size when b ends: its entries, and the bytes of
// its ring.
func wbLog(b *testing.B, w *Window) {
	w.mu.Lock()
	n, ring := w.log.n, len(w.log.buf)
	w.mu.Unlock()
	b.ReportMetric(float64(n), "entries")
	b.ReportMetric(float64(ring*16), "B-ring")
}

// BenchmarkWindowTryAcquire is TryAcquire(1) when it admits, on the real
// clock, for logs of three sizes, beside the Limiter of the same capacity
// (period=1.07ms/impl=limiter). B/op above 0 is the ring being grown back
// after the log shrank: a pause of most of a period (the scheduler, the
// garbage collector) lets most of it leave the window.
func BenchmarkWindowTryAcquire(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		for _, period := range wbPeriods {
			name := fmt.Sprintf("parallel=%v/period=%v", parallel, period)
			b.Run(name+"/impl=window", func(b *testing.B) {
				w := NewWindow(wbCap(period), period)
				var refused atomic.Int64
				wbTry(b, parallel, func() bool {
					if !w.TryAcquire(1) {
						refused.Add(1)
					}
					return true
				})
				if n := refused.Load(); n > 0 {
					b.Fatalf("the window refused %d calls", n)
				}
				wbLog(b, w)
			})
			if period == wbPeriods[1] {
				b.Run(name+"/impl=limiter", func(b *testing.B) {
					l := New(wbCap(period), period)
					wbTry(b, parallel, func() bool { return l.TryAcquire(1) })
				})
			}
		}
	}
}

// wbTry runs try b.N times. The Window must admit every call; the
// Limiter's TryAcquire may refuse a call whose goroutine lost its CPU for
// longer than the period between reading the clock and taking its units,
// which the figures do not count on.
func wbTry(b *testing.B, parallel bool, try func() bool) {
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

// BenchmarkWindowAcquire is Acquire(ctx, 1) when no wait is needed, on the
// real clock, beside the Limiter.
func BenchmarkWindowAcquire(b *testing.B) {
	ctx := context.Background()
	period := wbPeriods[1]
	b.Run("impl=window", func(b *testing.B) {
		w := NewWindow(wbCap(period), period)
		b.ReportAllocs()
		for b.Loop() {
			if err := w.Acquire(ctx, 1); err != nil {
				b.Fatal(err)
			}
		}
		wbLog(b, w)
	})
	b.Run("impl=limiter", func(b *testing.B) {
		l := New(wbCap(period), period)
		b.ReportAllocs()
		for b.Loop() {
			if err := l.Acquire(ctx, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// wbClock is a clock.Mock whose time moves at once: Mock.Add ends with a
// sleep of 1 ms. Its timers do not move with it; it serves callers that
// never wait.
type wbClock struct {
	*clock.Mock
	now time.Time
}

func newWBClock() *wbClock {
	m := clock.NewMock()
	return &wbClock{Mock: m, now: m.Now()}
}

func (c *wbClock) Now() time.Time                  { return c.now }
func (c *wbClock) Since(t time.Time) time.Duration { return c.now.Sub(t) }

// BenchmarkWindowSteadyLog is TryAcquire(1) with the log at exactly
// entries entries, one nanosecond apart, every call admitted: each call
// drops the oldest entry and adds one. The clock is a field, so this is the
// Window's own cost, without the clock's, and 0 B/op shows that a log at a
// steady size allocates nothing. With res=16ns, 16 calls share an entry.
func BenchmarkWindowSteadyLog(b *testing.B) {
	for _, entries := range []int{1000, 10_000, 100_000} {
		for _, res := range []time.Duration{0, 16} {
			b.Run(fmt.Sprintf("entries=%d/res=%v", entries, res), func(b *testing.B) {
				c := newWBClock()
				w := NewWindow(wbCap(time.Duration(entries)), time.Duration(entries), WithClock(c), WithResolution(res))
				for range 2 * entries { // fill the log, and let it turn over
					c.now = c.now.Add(1)
					w.TryAcquire(1)
				}
				b.ReportAllocs()
				for b.Loop() {
					c.now = c.now.Add(1)
					if !w.TryAcquire(1) {
						b.Fatal("refused")
					}
				}
				wbLog(b, w)
			})
		}
	}
}

// BenchmarkWindowFullRate reports the log that NewWindow(10000,
// time.Minute) holds at full rate: one admission every 6 ms for three
// minutes, on a mocked clock. Its ring is 16 bytes an entry, grown by a
// quarter at a time. bench/ (BenchmarkWindowHeap) measures the live heap.
func BenchmarkWindowFullRate(b *testing.B) {
	const maxRate, period = 10_000, time.Minute
	for _, res := range []time.Duration{0, time.Second} {
		b.Run("res="+res.String(), func(b *testing.B) {
			var w *Window
			for b.Loop() {
				c := newWBClock()
				w = NewWindow(maxRate, period, WithClock(c), WithResolution(res))
				for i := range 3 * maxRate {
					if i > 0 {
						c.now = c.now.Add(period / maxRate)
					}
					w.TryAcquire(1)
				}
			}
			wbLog(b, w)
			b.ReportMetric(w.Level(), "units-held")
		})
	}
}

// BenchmarkWindowBursty is NewWindow(10000, time.Minute) used in bursts:
// 10,000 admissions 1 µs apart, then none until the last of them has left
// the window, one burst an op, on a mocked clock. Each burst finds the log
// emptied: B/op and allocs/op are what growing its ring back costs, each
// period.
func BenchmarkWindowBursty(b *testing.B) {
	const maxRate, period = 10_000, time.Minute
	c := newWBClock()
	w := NewWindow(maxRate, period, WithClock(c))
	start := c.now
	b.ReportAllocs()
	for b.Loop() {
		for range maxRate {
			if !w.TryAcquire(1) {
				b.Fatal("refused")
			}
			c.now = c.now.Add(time.Microsecond)
		}
		start = start.Add(period + maxRate*time.Microsecond)
		c.now = start
	}
	wbLog(b, w)
}
