package ratelimit

// Internal checks of the Window: no timer and no ring left behind, and the
// bounds of its log, exact and with WithResolution.

import (
	"context"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/dripgo/drip/internal/clocktest"
)

// A Window whose waiters have all returned holds no timer, and its queue
// and log give back the rings a crowd of waiters or a flood of admissions
// grew.
func TestWindowNoTimerOrRingLeftBehind(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := NewWindow(1, time.Second, WithClock(c))
		w.TryAcquire(1)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 2000 {
			wg.Go(func() { _ = w.Acquire(ctx, 1) })
		}
		c.Settle()
		w.mu.Lock()
		armed, timer, live := w.armed, w.timer != nil, w.q.live
		w.mu.Unlock()
		if !armed || !timer || live != 2000 {
			t.Fatalf("armed %v, timer %v, with %d queued; want armed with 2000", armed, timer, live)
		}
		cancel()
		wg.Wait()
		c.Settle()
		w.mu.Lock()
		if w.armed || w.timer != nil || w.q.live != 0 || w.q.buf != nil {
			t.Errorf("after cancelling all: armed %v, timer %v, %d queued, ring %d",
				w.armed, w.timer != nil, w.q.live, len(w.q.buf))
		}
		w.mu.Unlock()

		// The last waiter takes the timer with it, admitted.
		done := make(chan error, 1)
		go func() { done <- w.Acquire(context.Background(), 1) }()
		c.Advance(time.Second)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		c.Settle()
		w.mu.Lock()
		if w.armed || w.timer != nil {
			t.Errorf("after the last waiter was admitted: armed %v, timer %v", w.armed, w.timer != nil)
		}
		w.mu.Unlock()

		// A flood of admissions grows the log; once they have left the
		// window, its ring goes, in the period after.
		f := NewWindow(1e6, time.Second, WithClock(c))
		for range 5000 {
			c.Add(time.Microsecond)
			if !f.TryAcquire(1) {
				t.Fatal("flood refused")
			}
		}
		if n := f.log.n; n != 5000 {
			t.Fatalf("log of %d entries for 5000 admissions on distinct nanoseconds", n)
		}
		c.Advance(time.Second)
		if f.Level() != 0 || f.log.n != 0 {
			t.Errorf("after the flood left the window: level %v, %d entries", f.Level(), f.log.n)
		}
		c.Advance(time.Second)
		if f.Level() != 0 || f.log.buf != nil || f.log.n != 0 {
			t.Errorf("after the flood left the window: level %v, %d entries, ring %d", f.Level(), f.log.n, len(f.log.buf))
		}
		c.Settle()
		clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit.(*Window)")
	})
}

// By default the log holds one entry per nanosecond on which admissions
// still in the window were made, 16 bytes each, in a ring at most a
// quarter larger (and a few entries) than it needs.
func TestWindowExactLogBound(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		if s := unsafe.Sizeof(entry{}); s != 16 {
			t.Errorf("an entry takes %d bytes, the documentation says 16", s)
		}
		w := NewWindow(1e6, time.Second, WithClock(c))
		for i := range 3000 {
			c.Add(100 * time.Microsecond)
			for range 1 + i%3 { // admissions on the same nanosecond share an entry
				if !w.TryAcquire(1) {
					t.Fatal("refused")
				}
			}
			if n := w.log.n; n != min(i+1, 10000) || len(w.log.buf) > n+n/4+8 {
				t.Fatalf("after %d nanoseconds with admissions: %d entries in a ring of %d", i+1, n, len(w.log.buf))
			}
		}
		// Nine tenths leave the window: the ring shrinks with them, once
		// a period at most, to what the last period needed.
		c.Advance(time.Second - 300*100*time.Microsecond)
		w.Level()
		if n := w.log.n; n != 300 {
			t.Fatalf("nine tenths of the admissions left: %d entries, want 300", n)
		}
		c.Advance(time.Second - 300*100*time.Microsecond)
		for range 300 {
			c.Add(100 * time.Microsecond)
			w.TryAcquire(1)
		}
		if n := w.log.n; n != 300 || len(w.log.buf) > 2*n {
			t.Errorf("a period with 300 entries at most: %d entries in a ring of %d, want 300 in at most twice that", n, len(w.log.buf))
		}
	})
}

// WithResolution(r) bounds the log by Period/r + 1 entries under a flood
// of admissions, on every nanosecond or not.
func TestWindowResolutionBoundsLog(t *testing.T) {
	for _, r := range []time.Duration{10 * time.Millisecond, 7*time.Millisecond + 3, time.Second} {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			const period = time.Second
			w := NewWindow(1e9, period, WithClock(c), WithResolution(r))
			bound := int(period/r) + 1
			most := 0
			for i := range 20000 {
				c.Add(time.Duration(50+i%97) * time.Microsecond)
				if !w.TryAcquire(1) {
					t.Fatal("refused")
				}
				most = max(most, w.log.n)
				if w.log.n > bound {
					t.Fatalf("r = %v: %d entries after %d admissions, more than Period/r+1 = %d", r, w.log.n, i+1, bound)
				}
			}
			if most < bound-1 {
				t.Errorf("r = %v: at most %d entries, the test did not reach the bound %d", r, most, bound)
			}
		})
	}
}

// WithResolution keeps the rule exact, and delays admissions by less than
// r: a unit admitted at τ is freed no later than τ+Period+r-1ns. So a
// TryAcquire that succeeds at t finds at most MaxRate-1 units admitted in
// (t-Period, t]; one that is refused finds MaxRate units admitted in
// (t-Period-r, t]. Checked on a stream of TryAcquire(1), one every
// millisecond, on NewWindow(100, 1s) with r = 10ms.
func TestWindowResolutionDelaysLessThanR(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		const (
			period       = time.Second
			r            = 10 * time.Millisecond
			maxRate      = 100
			step         = time.Millisecond // divides period and r
			steps        = 4000
			periodSteps  = int(period / step)       // (t-Period, t]
			periodRSteps = int((period + r) / step) // (t-Period-r, t]
		)
		w := NewWindow(maxRate, period, WithClock(c), WithResolution(r))
		got := make([]bool, steps)
		// in returns the units admitted in the steps (i-k, i].
		in := func(i, k int) int {
			n := 0
			for j := max(0, i-k+1); j <= i; j++ {
				if got[j] {
					n++
				}
			}
			return n
		}
		late := 0
		for i := range steps {
			got[i] = w.TryAcquire(1)
			if got[i] {
				if n := in(i, periodSteps); n > maxRate {
					t.Fatalf("at %v: %d units admitted in the window ending then", time.Duration(i)*step, n)
				}
			} else {
				if n := in(i, periodRSteps); n < maxRate {
					t.Fatalf("at %v: refused with only %d units admitted in (t-Period-r, t]", time.Duration(i)*step, n)
				}
				if in(i, periodSteps) < maxRate {
					late++
				}
			}
			c.Add(step)
		}
		if late == 0 {
			t.Error("no admission was delayed: the resolution merged nothing")
		}
	})
}

// The bound is per admission, measured on the window's own history, not
// against what an exact window fed the same callers would do: delays add
// up along a chain. NewWindow(2, 100ms, WithResolution(10ms)): units at 0
// and 9 ms share an entry stamped 9 ms; the waiter B queued at 50 ms goes
// at 109 ms (the exact window: 100 ms); C at 118 ms joins B's entry, now
// stamped 118 ms; so D, queued at 150 ms, goes at 218 ms, 18 ms after the
// exact window would admit it (200 ms), though each step is within r.
func TestWindowResolutionDelaysAddUp(t *testing.T) {
	const ms = time.Millisecond
	for _, res := range []time.Duration{0, 10 * ms} {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			w := NewWindow(2, 100*ms, WithClock(c), WithResolution(res))
			times := map[time.Duration][2]time.Duration{ // B's and D's
				0:       {100 * ms, 200 * ms},
				10 * ms: {109 * ms, 218 * ms},
			}[res]
			at := func(ch <-chan time.Duration) time.Duration {
				select {
				case d := <-ch:
					return d
				default:
					return -1
				}
			}
			acquire := func() <-chan time.Duration {
				ch := make(chan time.Duration, 1)
				go func() {
					if err := w.Acquire(context.Background(), 1); err != nil {
						t.Error(err)
					}
					ch <- c.Elapsed()
				}()
				c.Settle()
				return ch
			}
			w.TryAcquire(1)
			c.AdvanceTo(t, 9*ms)
			w.TryAcquire(1)
			c.AdvanceTo(t, 50*ms)
			b := acquire()
			c.AdvanceTo(t, 118*ms)
			if got := at(b); got != times[0] {
				t.Fatalf("r = %v: B admitted at %v, want %v", res, got, times[0])
			}
			if !w.TryAcquire(1) {
				t.Fatalf("r = %v: C refused at 118 ms", res)
			}
			c.AdvanceTo(t, 150*ms)
			d := acquire()
			c.AdvanceTo(t, 300*ms)
			if got := at(d); got != times[1] {
				t.Fatalf("r = %v: D admitted at %v, want %v", res, got, times[1])
			}
		})
	}
}

// WithResolution(r) merges an admission into the newest entry if that
// entry's first admission was less than r before, stamped with the latest
// time; at exactly r it starts a new entry. NewWindow(3, 100ms,
// WithResolution(10ms)): 1 unit at 0, at 10ms-1ns (merged, stamped then)
// and at 10 ms (a new entry): the first two leave together at 110ms-1ns,
// the third at 110 ms.
func TestWindowResolutionMergesWithinR(t *testing.T) {
	const ms = time.Millisecond
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := NewWindow(3, 100*ms, WithClock(c), WithResolution(10*ms))
		for i, at := range []time.Duration{0, 10*ms - 1, 10 * ms} {
			c.AdvanceTo(t, at)
			if !w.TryAcquire(1) {
				t.Fatalf("admission %d refused", i)
			}
		}
		if w.log.n != 2 {
			t.Fatalf("%d entries, want 2: the second admission merged, the third not", w.log.n)
		}
		for _, step := range []struct {
			at       time.Duration
			room     float64 // fits
			noRoomTo float64 // does not
		}{
			{110*ms - 2, 0, 1e-9},
			{110*ms - 1, 2, 2 + 1e-9},
			{110 * ms, 3, 3 + 1e-9},
		} {
			c.AdvanceTo(t, step.at)
			if step.room > 0 && !w.HasCapacity(step.room) || w.HasCapacity(step.noRoomTo) {
				t.Fatalf("at %v: level %v, want room for exactly %v", step.at, w.Level(), step.room)
			}
		}
	})
}
