package ratelimit_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

const ms = time.Millisecond

// result is how an Acquire call ended, and when.
type result struct {
	at  time.Duration
	err error
}

// goAcquire calls Acquire on a new goroutine and settles, so that the call
// has been admitted or queued when it returns.
func goAcquire(ctx context.Context, c *clocktest.Clock, lim *ratelimit.Limiter, amount float64) <-chan result {
	ch := make(chan result, 1)
	go func() {
		err := lim.Acquire(ctx, amount)
		ch <- result{c.Elapsed(), err}
	}()
	c.Settle()
	return ch
}

func pending(t *testing.T, ch <-chan result, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned at %v (err %v), want it still waiting", what, r.at, r.err)
	default:
	}
}

// returned requires that ch has a result: the caller settled the clock.
func returned(t *testing.T, ch <-chan result, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatalf("%s is still waiting", what)
		return result{}
	}
}

func admittedAt(t *testing.T, ch <-chan result, what string, want time.Duration) {
	t.Helper()
	r := returned(t, ch, what)
	if r.err != nil || r.at != want {
		t.Fatalf("%s returned at %v with %v, want admitted at %v", what, r.at, r.err, want)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestBurstThenSteady(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(3, 3*time.Second, ratelimit.WithClock(c))
		for i := range 3 {
			if !lim.TryAcquire(1) {
				t.Fatalf("burst unit %d refused", i)
			}
		}
		if lim.TryAcquire(1) || lim.HasCapacity(0.001) {
			t.Fatal("a full bucket admitted more")
		}
		if got := lim.Level(); !near(got, 3) {
			t.Fatalf("Level() = %v, want 3", got)
		}
		c.Advance(500 * ms)
		if got := lim.Level(); !near(got, 2.5) {
			t.Fatalf("Level() after 0.5 s = %v, want 2.5", got)
		}
		if !lim.HasCapacity(0.5) || lim.HasCapacity(0.6) {
			t.Fatal("HasCapacity does not see exactly the half unit that leaked")
		}
		if !lim.TryAcquire(0.5) || lim.TryAcquire(0.001) {
			t.Fatal("TryAcquire(0.5) should fill the bucket exactly")
		}
	})
}

// A caller that needs amount waits only for the missing room.
func TestWaitsOnlyForMissingCapacity(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(3, 3*time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		if err := lim.Acquire(ctx, 1); err != nil {
			t.Fatal(err)
		}
		big := goAcquire(ctx, c, lim, 3)
		c.AdvanceTo(t, 999*ms)
		pending(t, big, "Acquire(3)")
		c.AdvanceTo(t, time.Second)
		admittedAt(t, big, "Acquire(3)", time.Second)
	})
}

func TestZeroAmount(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		lim.Pause(time.Hour)
		ctx := context.Background()
		w := goAcquire(ctx, c, lim, 1)
		if err := lim.Acquire(ctx, 0); err != nil {
			t.Fatalf("Acquire(0) on a paused limiter with a waiter: %v", err)
		}
		if !lim.TryAcquire(0) || !lim.HasCapacity(0) {
			t.Fatal("an amount of 0 must always fit")
		}
		pending(t, w, "waiter")
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := lim.Acquire(cctx, 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire(0) with a cancelled context = %v, want context.Canceled", err)
		}
		c.AdvanceTo(t, time.Hour)
		admittedAt(t, w, "waiter", time.Hour)
	})
}

func TestBadAmounts(t *testing.T) {
	tests := []struct {
		amount float64
		want   error
		msg    string
	}{
		{-1, ratelimit.ErrInvalidAmount, "ratelimit: acquire -1: amount must be a finite number >= 0"},
		{math.NaN(), ratelimit.ErrInvalidAmount, "ratelimit: acquire NaN: amount must be a finite number >= 0"},
		{math.Inf(1), ratelimit.ErrInvalidAmount, "ratelimit: acquire +Inf: amount must be a finite number >= 0"},
		{math.Inf(-1), ratelimit.ErrInvalidAmount, "ratelimit: acquire -Inf: amount must be a finite number >= 0"},
		{4.5, ratelimit.ErrExceedsCapacity, "ratelimit: acquire 4.5 exceeds capacity 4"},
		{1e300, ratelimit.ErrExceedsCapacity, "ratelimit: acquire 1e+300 exceeds capacity 4"},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(4, time.Second, ratelimit.WithClock(c))
				lim.TryAcquire(1)
				err := lim.Acquire(context.Background(), tt.amount)
				if !errors.Is(err, tt.want) || err.Error() != tt.msg {
					t.Fatalf("Acquire(%v) = %v, want %q wrapping %v", tt.amount, err, tt.msg, tt.want)
				}
				if lim.TryAcquire(tt.amount) || lim.HasCapacity(tt.amount) {
					t.Fatalf("TryAcquire/HasCapacity(%v) reported true", tt.amount)
				}
				if got := lim.Level(); got != 1 || lim.Waiting() != 0 {
					t.Fatalf("a refused amount changed the limiter: level %v, %d waiting", got, lim.Waiting())
				}
			})
		})
	}
}

func TestBadSettingsPanic(t *testing.T) {
	tests := []struct {
		maxRate float64
		period  time.Duration
		want    string
	}{
		{0, time.Second, "maxRate 0 must be a finite number > 0"},
		{-1, time.Second, "maxRate -1 must be a finite number > 0"},
		{math.NaN(), time.Second, "maxRate NaN must be a finite number > 0"},
		{math.Inf(1), time.Second, "maxRate +Inf must be a finite number > 0"},
		{1, 0, "period 0s must be > 0"},
		{1, -time.Second, "period -1s must be > 0"},
		{1, 500 * 24 * time.Hour, "period 12000h0m0s must be > 0 and at most"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			msg := func(f func()) (msg string) {
				defer func() { msg, _ = recover().(string) }()
				f()
				return ""
			}
			if got := msg(func() { ratelimit.New(tt.maxRate, tt.period) }); !strings.HasPrefix(got, "ratelimit: New: ") || !strings.Contains(got, tt.want) {
				t.Errorf("New panicked with %q, want it to say %q", got, tt.want)
			}
			lim := ratelimit.New(2, time.Second)
			if got := msg(func() { lim.SetRate(tt.maxRate, tt.period) }); !strings.HasPrefix(got, "ratelimit: SetRate: ") || !strings.Contains(got, tt.want) {
				t.Errorf("SetRate panicked with %q, want it to say %q", got, tt.want)
			}
			if lim.MaxRate() != 2 || lim.Period() != time.Second {
				t.Errorf("a refused SetRate changed the limiter to %v per %v", lim.MaxRate(), lim.Period())
			}
		})
	}
}

// A full-capacity request is not starved by a stream of small ones, and a
// newcomer cannot pass it, with TryAcquire or Acquire.
func TestFIFONoStarvationNoBarging(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		if !lim.TryAcquire(10) {
			t.Fatal("burst refused")
		}
		big := goAcquire(ctx, c, lim, 10)
		var small []<-chan result
		for i := range 9 {
			c.AdvanceTo(t, time.Duration(i+1)*100*ms)
			if lim.TryAcquire(1) || lim.HasCapacity(1) {
				t.Fatalf("at %v a small request passed the queued large one", c.Elapsed())
			}
			small = append(small, goAcquire(ctx, c, lim, 1))
		}
		pending(t, big, "Acquire(10)")
		c.AdvanceTo(t, time.Second)
		admittedAt(t, big, "Acquire(10)", time.Second)
		for i, ch := range small {
			c.AdvanceTo(t, time.Second+time.Duration(i+1)*100*ms)
			admittedAt(t, ch, "small request", time.Second+time.Duration(i+1)*100*ms)
		}
	})
}

// The example: A waits for 3, B queues for 3, A is cancelled at
// 0.5 s, and B is admitted at 1 s, as if A had never queued.
func TestCancelledWaiterLosesNothing(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(3, 3*time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		if err := lim.Acquire(ctx, 1); err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithCancel(ctx)
		a := goAcquire(actx, c, lim, 3)
		b := goAcquire(ctx, c, lim, 3)
		c.AdvanceTo(t, 500*ms)
		cancel()
		c.Settle()
		r := returned(t, a, "A")
		if !errors.Is(r.err, context.Canceled) || r.at != 500*ms {
			t.Fatalf("A returned %v at %v, want context.Canceled at 0.5s", r.err, r.at)
		}
		if got := lim.Level(); !near(got, 0.5) || lim.Waiting() != 1 {
			t.Fatalf("after the cancellation: level %v with %d waiting, want 0.5 with 1", got, lim.Waiting())
		}
		c.AdvanceTo(t, 999*ms)
		pending(t, b, "B")
		c.AdvanceTo(t, time.Second)
		admittedAt(t, b, "B", time.Second)
	})
}

// A cancelled waiter in the middle of the queue changes when the ones
// behind it are due, and nothing else.
func TestCancelMiddleWaiter(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		lim.TryAcquire(1)
		a := goAcquire(ctx, c, lim, 1)
		mctx, cancel := context.WithCancel(ctx)
		m := goAcquire(mctx, c, lim, 1)
		z := goAcquire(ctx, c, lim, 1)
		cancel()
		c.Settle()
		if r := returned(t, m, "middle"); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("middle waiter returned %v", r.err)
		}
		c.AdvanceTo(t, time.Second)
		admittedAt(t, a, "first", time.Second)
		c.AdvanceTo(t, 2*time.Second)
		admittedAt(t, z, "last", 2*time.Second)
	})
}

func TestDeadlineFailsFast(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		lim.TryAcquire(1)
		first := goAcquire(ctx, c, lim, 1) // due at 1 s

		// The next caller is due at 2 s: a deadline at 1.5 s cannot be met.
		dctx, cancel := c.WithTimeout(ctx, 1500*ms)
		defer cancel()
		err := lim.Acquire(dctx, 1)
		if !errors.Is(err, context.DeadlineExceeded) || c.Elapsed() != 0 {
			t.Fatalf("Acquire = %v at %v, want an immediate context.DeadlineExceeded", err, c.Elapsed())
		}
		if want := "ratelimit: acquire 1 would wait 2s, but the context deadline is in 1.5s"; err.Error() != want {
			t.Fatalf("error %q, want %q", err, want)
		}
		if lim.Waiting() != 1 || !near(lim.Level(), 1) {
			t.Fatalf("a failed deadline changed the limiter: %d waiting, level %v", lim.Waiting(), lim.Level())
		}

		// A deadline exactly at the due time cannot be met either: the
		// caller would get its unit with no time left to use it.
		ectx, cancel2 := c.WithTimeout(ctx, 2*time.Second)
		defer cancel2()
		if err := lim.Acquire(ectx, 1); !errors.Is(err, context.DeadlineExceeded) || c.Elapsed() != 0 {
			t.Fatalf("Acquire with the deadline at the due time = %v at %v, want an immediate failure", err, c.Elapsed())
		}
		// A nanosecond later can.
		lctx, cancel3 := c.WithTimeout(ctx, 2*time.Second+1)
		defer cancel3()
		later := goAcquire(lctx, c, lim, 1)
		c.AdvanceTo(t, time.Second)
		admittedAt(t, first, "first", time.Second)
		pending(t, later, "caller with a deadline just after the due time")
		c.AdvanceTo(t, 2*time.Second)
		admittedAt(t, later, "caller with a deadline just after the due time", 2*time.Second)
	})
}

// The example: on New(1, 10s), full, a waiter queued at 0 is due at
// 10 s; SetRate(1, 4s) at 2 s keeps the 0.8 units in the bucket and drains
// them at the new rate, so the waiter is admitted at 2 + 0.8*4 = 5.2 s.
func TestSetRateAppliesToQueuedWaiters(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, 10*time.Second, ratelimit.WithClock(c))
		lim.TryAcquire(1)
		w := goAcquire(context.Background(), c, lim, 1)
		c.AdvanceTo(t, 2*time.Second)
		lim.SetRate(1, 4*time.Second)
		if got := lim.Level(); !near(got, 0.8) {
			t.Fatalf("SetRate changed the level to %v, want 0.8", got)
		}
		if lim.MaxRate() != 1 || lim.Period() != 4*time.Second {
			t.Fatalf("MaxRate, Period = %v, %v", lim.MaxRate(), lim.Period())
		}
		c.AdvanceTo(t, 5200*ms-1)
		pending(t, w, "waiter")
		c.AdvanceTo(t, 5200*ms)
		admittedAt(t, w, "waiter", 5200*ms)
	})
}

func TestSetRateLowersCapacity(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		lim.TryAcquire(10)
		big := goAcquire(ctx, c, lim, 8)
		small := goAcquire(ctx, c, lim, 1)
		lim.SetRate(5, time.Second) // 5 per second: the 10 units drain in 2 s
		c.Settle()
		r := returned(t, big, "Acquire(8)")
		if !errors.Is(r.err, ratelimit.ErrExceedsCapacity) || !strings.Contains(r.err.Error(), "acquire 8 exceeds capacity 5") {
			t.Fatalf("Acquire(8) after SetRate(5) = %v, want ErrExceedsCapacity", r.err)
		}
		if got := lim.Level(); !near(got, 10) {
			t.Fatalf("level %v, want the 10 units kept", got)
		}
		// The over-full bucket drains to 4 units at 1.2 s, and only then
		// has room for one more.
		c.AdvanceTo(t, 1200*ms-1)
		pending(t, small, "Acquire(1)")
		c.AdvanceTo(t, 1200*ms)
		admittedAt(t, small, "Acquire(1)", 1200*ms)
	})
}

// New(10, 1s), Pause(5s), three callers: admitted at 5.0, 5.1 and 5.2 s,
// with no burst after the pause.
func TestPause(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		lim.Pause(5 * time.Second)
		if got := lim.Level(); !near(got, 59) {
			t.Fatalf("level after Pause(5s) = %v, want 9 + 5*10: one unit fits at 5 s", got)
		}
		ctx := context.Background()
		var ws []<-chan result
		for range 3 {
			ws = append(ws, goAcquire(ctx, c, lim, 1))
		}
		lim.Pause(time.Second) // shorter than what remains: changes nothing
		lim.Pause(-time.Second)
		c.AdvanceTo(t, 5000*ms-1)
		pending(t, ws[0], "first caller")
		for i, w := range ws {
			at := 5000*ms + time.Duration(i)*100*ms
			c.AdvanceTo(t, at)
			admittedAt(t, w, "caller", at)
		}
	})
}

func TestDo(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		calls := 0
		fn := func(context.Context) error { calls++; return errors.New("boom") }
		if err := lim.Do(ctx, fn); err == nil || err.Error() != "boom" || calls != 1 {
			t.Fatalf("Do = %v after %d calls, want fn's error after 1", err, calls)
		}
		dctx, cancel := c.WithTimeout(ctx, 500*ms)
		defer cancel()
		if err := lim.Do(dctx, fn); !errors.Is(err, context.DeadlineExceeded) || calls != 1 {
			t.Fatalf("Do = %v after %d calls, want the limiter's error and fn not run", err, calls)
		}
		half := ratelimit.New(0.5, time.Second, ratelimit.WithClock(c))
		if err := half.Do(ctx, fn); !errors.Is(err, ratelimit.ErrExceedsCapacity) || calls != 1 {
			t.Fatalf("Do on a limiter of 0.5 = %v, want ErrExceedsCapacity", err)
		}
	})
}

// The limiter moves its epoch forward on a clock that runs for years, and
// keeps its schedule exact across the move.
func TestLongRunningClock(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(2, time.Second, ratelimit.WithClock(c))
		for year := 1; year <= 4; year++ {
			c.Advance(365 * 24 * time.Hour)
			start := c.Elapsed()
			first, second, third := lim.TryAcquire(1), lim.TryAcquire(1), lim.TryAcquire(0.1)
			if !first || !second || third {
				t.Fatalf("year %d: the burst is not exactly 2", year)
			}
			w := goAcquire(context.Background(), c, lim, 1)
			c.Advance(500*ms - 1)
			pending(t, w, "waiter")
			c.Advance(1)
			admittedAt(t, w, "waiter", start+500*ms)
		}
	})
}

// With the default clock inside a synctest bubble, the limiter keeps the
// bubble's fake time: users can test their own code this way.
func TestDefaultClockInSynctestBubble(t *testing.T) {
	d := clocktest.Drips[0]
	synctest.Test(t, func(t *testing.T) {
		lim := ratelimit.New(d.MaxRate, d.Period)
		start := time.Now()
		done := make(chan time.Duration, len(d.Want))
		for range d.Want {
			time.Sleep(d.Gap)
			go func() {
				if err := lim.Wait(context.Background()); err != nil {
					t.Error(err)
				}
				done <- time.Since(start) - d.Gap
			}()
		}
		for i, w := range d.Want {
			if got := <-done; got != w {
				t.Errorf("admission %d at %v, want %v", i, got, w)
			}
		}
	})
}

// When the waiter at the front leaves, the one behind it is admitted at
// once if it fits, not when the front one would have been.
func TestCancelFrontAdmitsNextAtOnce(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		lim.TryAcquire(10)
		actx, cancel := context.WithCancel(ctx)
		a := goAcquire(actx, c, lim, 10) // due at 1 s
		b := goAcquire(ctx, c, lim, 1)   // due at 1.1 s behind a; at 0.1 s alone
		c.AdvanceTo(t, 300*ms)
		pending(t, b, "B")
		cancel()
		c.Settle()
		if r := returned(t, a, "A"); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("A returned %v", r.err)
		}
		admittedAt(t, b, "B", 300*ms)
	})
}

// Waiters that share a context leave together when it ends, also after the
// first of them, which watched the context for the others, was admitted.
func TestSharedContextCancelsTheGroup(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		lim.TryAcquire(1)
		ctx, cancel := context.WithCancel(context.Background())
		other := goAcquire(context.Background(), c, lim, 1) // due at 1 s
		var group []<-chan result
		for range 5 {
			group = append(group, goAcquire(ctx, c, lim, 1)) // due at 2, 3, 4, 5, 6 s
		}
		last := goAcquire(context.Background(), c, lim, 1)
		c.AdvanceTo(t, 2*time.Second)
		admittedAt(t, other, "the caller before the group", time.Second)
		admittedAt(t, group[0], "the first of the group", 2*time.Second)
		c.AdvanceTo(t, 2500*ms)
		cancel()
		c.Settle()
		for i, ch := range group[1:] {
			if r := returned(t, ch, "a member of the group"); !errors.Is(r.err, context.Canceled) || r.at != 2500*ms {
				t.Fatalf("member %d returned %v at %v, want context.Canceled at 2.5s", i+1, r.err, r.at)
			}
		}
		if lim.Waiting() != 1 {
			t.Fatalf("%d waiting, want only the last caller", lim.Waiting())
		}
		c.AdvanceTo(t, 3*time.Second)
		admittedAt(t, last, "the caller after the group", 3*time.Second)
	})
}

// A group whose first waiter is cancelled together with the rest.
func TestSharedContextCancelledWhileOwnerWaits(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		lim.TryAcquire(1)
		ctx, cancel := context.WithCancel(context.Background())
		var group []<-chan result
		for range 100 {
			group = append(group, goAcquire(ctx, c, lim, 1))
		}
		after := goAcquire(context.Background(), c, lim, 1)
		c.AdvanceTo(t, 500*ms)
		cancel()
		c.Settle()
		for _, ch := range group {
			if r := returned(t, ch, "member"); !errors.Is(r.err, context.Canceled) {
				t.Fatalf("member returned %v", r.err)
			}
		}
		c.AdvanceTo(t, time.Second)
		admittedAt(t, after, "the caller after the group", time.Second)
	})
}
