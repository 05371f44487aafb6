package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// Costs are never rounded down to nothing: on rates whose unit takes less
// than a nanosecond, or a fraction of one, a full bucket admits nothing
// more, and a burst is exactly the capacity.
func TestCostsBelowOneNanosecond(t *testing.T) {
	tests := []struct {
		maxRate float64
		period  time.Duration
		piece   float64 // acquired until refused, from empty
	}{
		{1e12, time.Second, 999},
		{1e12, time.Second, 1e9},
		{1, time.Nanosecond, 0.5},
		{1, time.Nanosecond, 1.0 / 1024},
		{2, 3 * time.Nanosecond, 1}, // 1.5 ns a unit
		{3, time.Second, 1},         // 333333333.3 ns a unit
		{7, time.Second, 0.25},
		{1e9 / 1.5, time.Second, 1},
		{2.7, time.Second, 0.3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v per %v by %v", tt.maxRate, tt.period, tt.piece), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(tt.maxRate, tt.period, ratelimit.WithClock(c))
				if !lim.TryAcquire(tt.maxRate) {
					t.Fatalf("an empty bucket refused its capacity")
				}
				for i := range 1000 {
					if lim.TryAcquire(tt.piece) {
						t.Fatalf("a full bucket admitted %v more (try %d)", tt.piece, i)
					}
				}
				// From empty, pieces fill the bucket up to the capacity,
				// and not past it.
				c.Advance(tt.period)
				admitted := max(0, tt.maxRate-1000*tt.piece)
				if !lim.TryAcquire(admitted) {
					t.Fatalf("an empty bucket refused %v", admitted)
				}
				for n := 0; lim.TryAcquire(tt.piece); n++ {
					admitted += tt.piece
					if n > 2000 {
						break
					}
				}
				if admitted > tt.maxRate*(1+1e-12) {
					t.Fatalf("%v admitted at one instant, above the capacity %v", admitted, tt.maxRate)
				}
				if admitted < tt.maxRate-2*tt.piece {
					t.Fatalf("only %v admitted from empty, capacity %v", admitted, tt.maxRate)
				}
			})
		})
	}
}

// A burst of whole units is exactly the capacity, also when a unit takes a
// fraction of a nanosecond that does not divide evenly.
func TestBurstIsExactCapacity(t *testing.T) {
	for _, maxRate := range []float64{3, 7, 11, 999, 2.5, 1e12} {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			lim := ratelimit.New(maxRate, time.Second, ratelimit.WithClock(c))
			n := 0.0
			for n < maxRate && lim.TryAcquire(min(1, maxRate-n)) {
				n += min(1, maxRate-n)
				if n >= 1000 {
					lim.TryAcquire(maxRate - n)
					n = maxRate
				}
			}
			if n != maxRate || lim.TryAcquire(1e-6) {
				t.Fatalf("New(%v, 1s): burst of %v, want exactly %v", maxRate, n, maxRate)
			}
		})
	}
}

// Rates whose unit takes no finite time, or finer than the limiter's
// resolution, are refused by New and SetRate, naming the values.
func TestUnrepresentableRatesPanic(t *testing.T) {
	tests := []struct {
		maxRate float64
		period  time.Duration
		want    string
	}{
		{1e-300, time.Second, "maxRate 1e-300 per 1s"},
		{1e300, time.Second, "maxRate 1e+300 per 1s"},
		{1e13 + 1, time.Second, "maxRate 1.0000000000001e+13 per 1s"},
	}
	for _, tt := range tests {
		msg := func(f func()) (msg string) {
			defer func() { msg, _ = recover().(string) }()
			f()
			return ""
		}
		if got := msg(func() { ratelimit.New(tt.maxRate, tt.period) }); !strings.HasPrefix(got, "ratelimit: New: "+tt.want) {
			t.Errorf("New(%v, %v) panicked with %q, want it to name %q", tt.maxRate, tt.period, got, tt.want)
		}
		lim := ratelimit.New(2, time.Second)
		lim.TryAcquire(1)
		if got := msg(func() { lim.SetRate(tt.maxRate, tt.period) }); !strings.HasPrefix(got, "ratelimit: SetRate: "+tt.want) {
			t.Errorf("SetRate(%v, %v) panicked with %q", tt.maxRate, tt.period, got)
		}
		if lim.MaxRate() != 2 || lim.Period() != time.Second || lim.Level() > 1 || lim.Level() < 0.99 {
			t.Errorf("a refused SetRate changed the limiter: %v per %v, level %v", lim.MaxRate(), lim.Period(), lim.Level())
		}
	}
	// The finest rates that are still whole numbers of ticks work.
	for _, ok := range []struct {
		maxRate float64
		period  time.Duration
	}{{1e12, time.Second}, {1, time.Nanosecond}, {1e-200, time.Second}, {1024, time.Nanosecond}} {
		lim := ratelimit.New(ok.maxRate, ok.period, ratelimit.WithClock(clock.NewMock()))
		if !lim.TryAcquire(ok.maxRate) || lim.TryAcquire(ok.maxRate/2) {
			t.Errorf("New(%v, %v): the burst is not the capacity", ok.maxRate, ok.period)
		}
	}
}

// SetRate fails at once every waiter whose amount exceeds the new capacity,
// wherever it stands in the queue, and the wait estimated for a newcomer
// leaves them out.
func TestSetRateFailsEveryWaiterAboveCapacity(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		lim.TryAcquire(10)
		a := goAcquire(ctx, c, lim, 1)
		b := goAcquire(ctx, c, lim, 8)
		bb := goAcquire(ctx, c, lim, 6)
		d := goAcquire(ctx, c, lim, 1)
		lim.SetRate(5, time.Second) // 10 units drain in 2 s; one fits at 1.2 s
		c.Settle()
		for _, w := range []<-chan result{b, bb} {
			if r := returned(t, w, "a waiter above the new capacity"); !errors.Is(r.err, ratelimit.ErrExceedsCapacity) || r.at != 0 {
				t.Fatalf("waiter above the new capacity: %v at %v, want ErrExceedsCapacity at once", r.err, r.at)
			}
		}
		if n := lim.Waiting(); n != 2 {
			t.Fatalf("%d waiting, want 2", n)
		}
		// a at 1.2 s, d at 1.4 s, so a newcomer is due at 1.6 s: a
		// deadline at 1.7 s can be met.
		dctx, cancel := c.WithTimeout(ctx, 1700*ms)
		defer cancel()
		e := goAcquire(dctx, c, lim, 1)
		pending(t, e, "newcomer")
		c.AdvanceTo(t, 1200*ms)
		admittedAt(t, a, "a", 1200*ms)
		c.AdvanceTo(t, 1400*ms)
		admittedAt(t, d, "d", 1400*ms)
		c.AdvanceTo(t, 1600*ms)
		admittedAt(t, e, "newcomer", 1600*ms)
	})
}

// A deadline at the very time the caller would be admitted cannot be met:
// Acquire fails at once, every time, and changes nothing. One nanosecond
// later is met.
func TestDeadlineAtDueTimeFailsAtOnce(t *testing.T) {
	for range 50 {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			lim := ratelimit.New(2, 200*ms, ratelimit.WithClock(c))
			ctx := context.Background()
			if err := lim.Acquire(ctx, 2); err != nil {
				t.Fatal(err)
			}
			dctx, cancel := c.WithTimeout(ctx, 100*ms)
			defer cancel()
			err := lim.Acquire(dctx, 1)
			var de *ratelimit.DeadlineError
			if !errors.As(err, &de) || !errors.Is(err, context.DeadlineExceeded) || c.Elapsed() != 0 {
				t.Fatalf("Acquire with the deadline at its due time = %v at %v, want a DeadlineError at once", err, c.Elapsed())
			}
			if de.Wait != 100*ms || de.Remaining != 100*ms || de.Amount != 1 {
				t.Fatalf("DeadlineError %+v, want a wait of 100ms with 100ms remaining", *de)
			}
			if lim.Waiting() != 0 || !near(lim.Level(), 2) {
				t.Fatalf("the refusal changed the limiter: %d waiting, level %v", lim.Waiting(), lim.Level())
			}
			lctx, cancel2 := c.WithTimeout(ctx, 100*ms+1)
			defer cancel2()
			w := goAcquire(lctx, c, lim, 1)
			c.AdvanceTo(t, 100*ms)
			admittedAt(t, w, "caller with a deadline 1ns after its due time", 100*ms)
		})
	}
}

// After Pause(d), nothing is admitted for d, not even a fraction of a unit;
// at d one unit fits, then the steady rate resumes, with no burst.
func TestPauseResumesAtD(t *testing.T) {
	t.Run("New(10, 1s) Pause(5s)", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
			lim.Pause(5 * time.Second)
			ctx := context.Background()
			var ws []<-chan result
			for range 3 {
				ws = append(ws, goAcquire(ctx, c, lim, 1))
			}
			c.AdvanceTo(t, 5*time.Second-1)
			pending(t, ws[0], "first caller")
			if lim.TryAcquire(0.001) {
				t.Fatal("a fraction of a unit passed during the pause")
			}
			for i, w := range ws {
				at := 5*time.Second + time.Duration(i)*100*ms
				c.AdvanceTo(t, at)
				admittedAt(t, w, "caller", at)
			}
		})
	})
	t.Run("New(1, 1m) Pause(2s)", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			lim := ratelimit.New(1, time.Minute, ratelimit.WithClock(c))
			lim.TryAcquire(1)
			lim.Pause(2 * time.Second)
			ctx := context.Background()
			a, b := goAcquire(ctx, c, lim, 1), goAcquire(ctx, c, lim, 1)
			// The bucket was full: Pause never lowers the level, so the
			// first waiter goes when the unit in it has drained.
			c.AdvanceTo(t, time.Minute)
			admittedAt(t, a, "first", time.Minute)
			c.AdvanceTo(t, 2*time.Minute)
			admittedAt(t, b, "second", 2*time.Minute)
		})
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			lim := ratelimit.New(1, time.Minute, ratelimit.WithClock(c))
			lim.Pause(2 * time.Second)
			ctx := context.Background()
			a, b := goAcquire(ctx, c, lim, 1), goAcquire(ctx, c, lim, 1)
			c.AdvanceTo(t, 2*time.Second)
			admittedAt(t, a, "first", 2*time.Second)
			c.AdvanceTo(t, 62*time.Second-1)
			pending(t, b, "second")
			c.AdvanceTo(t, 62*time.Second)
			admittedAt(t, b, "second", 62*time.Second)
		})
	})
	t.Run("capacity below one", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			lim := ratelimit.New(0.5, time.Second, ratelimit.WithClock(c))
			lim.Pause(3 * time.Second)
			w := goAcquire(context.Background(), c, lim, 0.5)
			c.AdvanceTo(t, 3*time.Second-1)
			pending(t, w, "waiter")
			c.AdvanceTo(t, 3*time.Second)
			admittedAt(t, w, "waiter", 3*time.Second)
		})
	})
}

// Users declare limiters at package level and test their code in synctest
// bubbles: a limiter made outside any bubble works on a bubble's schedule,
// and so does one used by two bubbles in turn.
var (
	packageLimiter     = ratelimit.New(1, time.Second)
	packageLimiterUsed bool
)

func TestLimiterFromOutsideTheBubble(t *testing.T) {
	lim := packageLimiter
	if packageLimiterUsed { // -count > 1: make a fresh one, outside the bubbles too
		lim = ratelimit.New(1, time.Second)
	}
	packageLimiterUsed = true
	for _, name := range []string{"first bubble", "second bubble"} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var got []time.Duration
				for range 5 {
					if err := lim.Wait(context.Background()); err != nil {
						t.Fatal(err)
					}
					got = append(got, time.Since(start))
				}
				// The first bubble finds the limiter empty; the second
				// finds the unit the first left in it, so it starts a
				// second later. Either way, one a second.
				first := time.Duration(0)
				if name == "second bubble" {
					first = time.Second
				}
				for i, at := range got {
					if want := first + time.Duration(i)*time.Second; at != want {
						t.Fatalf("admissions at %v, want one a second from %v", got, first)
					}
				}
			})
		})
	}
}

// A clock that moves backwards makes the limiter stricter, never looser:
// the level is kept from before the move, and time runs again from there.
func TestClockMovingBackwards(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(2, time.Second, ratelimit.WithClock(c))
		c.Advance(time.Hour)
		if !lim.TryAcquire(2) {
			t.Fatal("burst refused")
		}
		c.Set(clocktest.Start.Add(-time.Hour)) // two hours back
		if lim.TryAcquire(0.1) {
			t.Fatal("a full bucket admitted after the clock moved back")
		}
		w := goAcquire(context.Background(), c, lim, 1)
		c.Advance(500*ms - 1)
		pending(t, w, "waiter")
		c.Advance(1)
		if r := returned(t, w, "waiter"); r.err != nil {
			t.Fatalf("waiter: %v", r.err)
		}
	})
}
