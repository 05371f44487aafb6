package ratelimit_test

// The Limiter's own tests, rewritten for the window rule: a Window admits
// amount at t when the units admitted in (t-Period, t], plus amount, are at
// most MaxRate, and each admission frees its units exactly Period after it
// was admitted. Every case runs on the mocked clock of clocktest, or in a
// synctest bubble, so every time below is exact.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// wlGo calls Acquire on w on a new goroutine and settles, so that the call
// has been admitted, refused or queued when it returns.
func wlGo(ctx context.Context, c *clocktest.Clock, w *ratelimit.Window, amount float64) <-chan result {
	ch := make(chan result, 1)
	go func() {
		err := w.Acquire(ctx, amount)
		ch <- result{c.Elapsed(), err}
	}()
	c.Settle()
	return ch
}

func wlNew(c *clocktest.Clock, maxRate float64, period time.Duration, opts ...ratelimit.WindowOption) *ratelimit.Window {
	return ratelimit.NewWindow(maxRate, period, append([]ratelimit.WindowOption{ratelimit.WithClock(c)}, opts...)...)
}

func wlLevel(t *testing.T, w *ratelimit.Window, want float64) {
	t.Helper()
	if got := w.Level(); !near(got, want) {
		t.Fatalf("Level() = %v, want %v", got, want)
	}
}

// wlExpect checks that the callers in chs are admitted at the times in
// want, in order, and not a nanosecond before: for each one due later than
// the clock stands, it advances to a nanosecond before its time first.
func wlExpect(t *testing.T, c *clocktest.Clock, chs []<-chan result, want []time.Duration) {
	t.Helper()
	for i, at := range want {
		what := fmt.Sprintf("caller %d", i)
		if at > c.Elapsed() {
			c.AdvanceTo(t, at-1)
			pending(t, chs[i], what)
			c.AdvanceTo(t, at)
		}
		admittedAt(t, chs[i], what, at)
	}
}

// wlPanic returns what f panicked with, as a string, or "".
func wlPanic(f func()) (msg string) {
	defer func() { msg, _ = recover().(string) }()
	f()
	return ""
}

const sec = time.Second

// The seed's tables in window form (clocktest.Drips gives the leaky
// bucket's): NewWindow(4, 8s) with callers 10 ms apart admits four at once
// and the next four exactly 8 s after each of them; NewWindow(1, 1.5s)
// admits one every 1.5 s, as the bucket does when it has no burst.
func TestWindowDripTables(t *testing.T) {
	want := map[string][]time.Duration{
		"burst":    {0, 10 * ms, 20 * ms, 30 * ms, 8 * sec, 8010 * ms, 8020 * ms, 8030 * ms, 16 * sec, 16010 * ms},
		"no burst": {0, 1500 * ms, 3000 * ms, 4500 * ms, 6000 * ms},
	}
	for _, d := range clocktest.Drips {
		t.Run(d.Name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				w := wlNew(c, d.MaxRate, d.Period)
				var chs []<-chan result
				for i := range want[d.Name] {
					c.AdvanceTo(t, time.Duration(i)*d.Gap)
					chs = append(chs, wlGo(context.Background(), c, w, 1))
				}
				wlExpect(t, c, chs, want[d.Name])
			})
		})
	}
}

// The window holds what was admitted until each admission is Period old:
// unlike a bucket, nothing leaks out in between.
func TestWindowFullUntilEachAdmissionLeaves(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 3, 3*sec)
		if !w.TryAcquire(1) {
			t.Fatal("an empty window refused 1")
		}
		c.AdvanceTo(t, sec)
		if !w.TryAcquire(2) {
			t.Fatal("refused the 2 that fill the window")
		}
		if w.TryAcquire(1e-9) || w.HasCapacity(1e-9) {
			t.Fatal("a full window admitted more")
		}
		wlLevel(t, w, 3)
		c.AdvanceTo(t, 3*sec-1)
		wlLevel(t, w, 3)
		if w.HasCapacity(1e-9) {
			t.Fatal("capacity a nanosecond before the first admission leaves")
		}
		c.AdvanceTo(t, 3*sec)
		wlLevel(t, w, 2)
		if !w.HasCapacity(1) || w.HasCapacity(1.001) {
			t.Fatal("HasCapacity does not see exactly the unit that left")
		}
		if !w.TryAcquire(1) || w.TryAcquire(1e-9) {
			t.Fatal("TryAcquire(1) should fill the window exactly")
		}
		c.AdvanceTo(t, 4*sec)
		wlLevel(t, w, 1) // the 2 admitted at 1 s left; the 1 admitted at 3 s stays
		if !w.TryAcquire(2) || w.TryAcquire(1e-9) {
			t.Fatal("the 2 units freed at 4 s are not exactly available")
		}
	})
}

// A caller that needs amount waits only until enough earlier admissions
// have left the window: exactly their admission time plus Period.
func TestWindowWaitsOnlyForMissingCapacity(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 3, 3*sec)
		ctx := context.Background()
		for i := range 3 {
			c.AdvanceTo(t, time.Duration(i)*sec)
			if !w.TryAcquire(1) {
				t.Fatalf("unit %d refused", i)
			}
		}
		c.AdvanceTo(t, 2500*ms)
		one := wlGo(ctx, c, w, 1) // the unit admitted at 0 leaves at 3 s
		c.AdvanceTo(t, 3*sec-1)
		pending(t, one, "Acquire(1)")
		c.AdvanceTo(t, 3*sec)
		admittedAt(t, one, "Acquire(1)", 3*sec)
		// The window holds 1 at 1, 2 and 3 s: 2 more fit once two of
		// them have left, at 5 s, not when all three have.
		c.AdvanceTo(t, 3500*ms)
		two := wlGo(ctx, c, w, 2)
		c.AdvanceTo(t, 4*sec)
		pending(t, two, "Acquire(2) with one unit gone")
		c.AdvanceTo(t, 5*sec-1)
		pending(t, two, "Acquire(2)")
		c.AdvanceTo(t, 5*sec)
		admittedAt(t, two, "Acquire(2)", 5*sec)
		wlLevel(t, w, 3)
	})
}

func TestWindowZeroAmount(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, sec)
		w.Pause(time.Hour)
		ctx := context.Background()
		waiter := wlGo(ctx, c, w, 1)
		if err := w.Acquire(ctx, 0); err != nil {
			t.Fatalf("Acquire(0) on a paused window with a waiter: %v", err)
		}
		if !w.TryAcquire(0) || !w.HasCapacity(0) {
			t.Fatal("an amount of 0 must always fit")
		}
		pending(t, waiter, "waiter")
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := w.Acquire(cctx, 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire(0) with a cancelled context = %v, want context.Canceled", err)
		}
		wlLevel(t, w, 0)
		c.AdvanceTo(t, time.Hour)
		admittedAt(t, waiter, "waiter", time.Hour)
	})
}

func TestWindowBadAmounts(t *testing.T) {
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
		{math.Nextafter(4, 5), ratelimit.ErrExceedsCapacity, "ratelimit: acquire 4.000000000000001 exceeds capacity 4"},
		{1e300, ratelimit.ErrExceedsCapacity, "ratelimit: acquire 1e+300 exceeds capacity 4"},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				w := wlNew(c, 4, sec)
				w.TryAcquire(1)
				err := w.Acquire(context.Background(), tt.amount)
				if !errors.Is(err, tt.want) || err.Error() != tt.msg {
					t.Fatalf("Acquire(%v) = %v, want %q wrapping %v", tt.amount, err, tt.msg, tt.want)
				}
				if w.TryAcquire(tt.amount) || w.HasCapacity(tt.amount) {
					t.Fatalf("TryAcquire/HasCapacity(%v) reported true", tt.amount)
				}
				if got := w.Level(); got != 1 || w.Waiting() != 0 {
					t.Fatalf("a refused amount changed the window: level %v, %d waiting", got, w.Waiting())
				}
			})
		})
	}
}

// NewWindow and SetRate panic on the values New refuses, and NewWindow on a
// negative resolution, naming the values; a refused SetRate changes
// nothing, for the callers already waiting either.
func TestWindowBadSettingsPanic(t *testing.T) {
	tests := []struct {
		maxRate float64
		period  time.Duration
		want    string
	}{
		{0, sec, "maxRate 0 must be a finite number > 0"},
		{-1, sec, "maxRate -1 must be a finite number > 0"},
		{math.NaN(), sec, "maxRate NaN must be a finite number > 0"},
		{math.Inf(1), sec, "maxRate +Inf must be a finite number > 0"},
		{1, 0, "period 0s must be > 0"},
		{1, -sec, "period -1s must be > 0"},
		{1, 500 * 24 * time.Hour, "period 12000h0m0s must be > 0 and at most"},
		{1e-300, sec, "maxRate 1e-300 per 1s"},
		{1e300, sec, "maxRate 1e+300 per 1s"},
		{1e13 + 1, sec, "maxRate 1.0000000000001e+13 per 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := wlPanic(func() { ratelimit.NewWindow(tt.maxRate, tt.period) }); !strings.HasPrefix(got, "ratelimit: NewWindow: ") || !strings.Contains(got, tt.want) {
				t.Errorf("NewWindow panicked with %q, want it to say %q", got, tt.want)
			}
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				w := wlNew(c, 2, sec)
				w.TryAcquire(2)
				waiter := wlGo(context.Background(), c, w, 1)
				c.AdvanceTo(t, 100*ms)
				if got := wlPanic(func() { w.SetRate(tt.maxRate, tt.period) }); !strings.HasPrefix(got, "ratelimit: SetRate: ") || !strings.Contains(got, tt.want) {
					t.Errorf("SetRate panicked with %q, want it to say %q", got, tt.want)
				}
				if w.MaxRate() != 2 || w.Period() != sec || w.Level() != 2 || w.Waiting() != 1 {
					t.Errorf("a refused SetRate changed the window to %v per %v, level %v, %d waiting",
						w.MaxRate(), w.Period(), w.Level(), w.Waiting())
				}
				c.AdvanceTo(t, sec-1)
				pending(t, waiter, "waiter")
				c.AdvanceTo(t, sec)
				admittedAt(t, waiter, "waiter", sec)
			})
		})
	}
	for _, r := range []time.Duration{-1, -time.Hour} {
		want := fmt.Sprintf("ratelimit: NewWindow: resolution %v must be >= 0", r)
		if got := wlPanic(func() { ratelimit.NewWindow(1, sec, ratelimit.WithResolution(r)) }); got != want {
			t.Errorf("NewWindow with WithResolution(%v) panicked with %q, want %q", r, got, want)
		}
	}
	// Nil options, a nil clock (the real one: a period of an hour, so that
	// a slow machine cannot matter) and a resolution of 0 are the defaults.
	w := ratelimit.NewWindow(2, time.Hour, nil, ratelimit.Option(nil), ratelimit.WithClock(nil), ratelimit.WithResolution(0))
	if !w.TryAcquire(2) || w.TryAcquire(1) || w.MaxRate() != 2 || w.Period() != time.Hour {
		t.Error("a Window made with nil options is not NewWindow(2, time.Hour)")
	}
}

func TestWindowDo(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, sec)
		ctx := context.Background()
		calls := 0
		fn := func(context.Context) error { calls++; return errors.New("boom") }
		if err := w.Do(ctx, fn); err == nil || err.Error() != "boom" || calls != 1 {
			t.Fatalf("Do = %v after %d calls, want fn's error after 1", err, calls)
		}
		dctx, cancel := c.WithTimeout(ctx, 500*ms)
		defer cancel()
		var de *ratelimit.DeadlineError
		if err := w.Do(dctx, fn); !errors.As(err, &de) || de.Wait != sec || calls != 1 {
			t.Fatalf("Do = %v after %d calls, want the window's DeadlineError and fn not run", err, calls)
		}
		half := wlNew(c, 0.5, sec)
		if err := half.Do(ctx, fn); !errors.Is(err, ratelimit.ErrExceedsCapacity) || calls != 1 {
			t.Fatalf("Do on a window of 0.5 = %v, want ErrExceedsCapacity", err)
		}
		done := make(chan error, 1)
		go func() { done <- w.Do(ctx, func(context.Context) error { calls++; return nil }) }()
		c.AdvanceTo(t, sec-1)
		if calls != 1 {
			t.Fatal("Do called fn before the window had room")
		}
		c.AdvanceTo(t, sec)
		if err := <-done; err != nil || calls != 2 {
			t.Fatalf("Do = %v after %d calls, want nil after 2", err, calls)
		}
	})
}

// A full-capacity request is not starved by a stream of small ones, a
// newcomer cannot pass the queue with TryAcquire or Acquire even where the
// window rule alone would let it in, and the queue goes in order whatever
// the amounts: a small waiter behind a large one that does not fit yet
// waits, though it would fit itself.
func TestWindowFIFONoStarvationNoBarging(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 10, sec)
		ctx := context.Background()
		if !w.TryAcquire(10) {
			t.Fatal("burst refused")
		}
		big := wlGo(ctx, c, w, 10) // at 1 s
		c.AdvanceTo(t, 100*ms)
		five := wlGo(ctx, c, w, 5) // at 2 s
		c.AdvanceTo(t, 200*ms)
		six := wlGo(ctx, c, w, 6) // 5 + 6 > 10: at 3 s, when the 5 leaves
		c.AdvanceTo(t, 300*ms)
		one := wlGo(ctx, c, w, 1) // fits at 2 s, but not before six
		for i := range 6 {
			c.AdvanceTo(t, 400*ms+time.Duration(i)*100*ms)
			if w.TryAcquire(1e-9) || w.HasCapacity(1e-9) {
				t.Fatalf("at %v a newcomer passed the queue", c.Elapsed())
			}
		}
		c.AdvanceTo(t, sec-1)
		pending(t, big, "Acquire(10)")
		c.AdvanceTo(t, sec)
		admittedAt(t, big, "Acquire(10)", sec)
		c.AdvanceTo(t, 2*sec)
		admittedAt(t, five, "Acquire(5)", 2*sec)
		pending(t, six, "Acquire(6)")
		pending(t, one, "Acquire(1) behind Acquire(6)")
		c.AdvanceTo(t, 2500*ms)
		if w.TryAcquire(1) || w.HasCapacity(1) || w.Waiting() != 2 {
			t.Fatal("TryAcquire(1) passed the waiting Acquire(6), though the window has room for 1")
		}
		c.AdvanceTo(t, 3*sec)
		admittedAt(t, six, "Acquire(6)", 3*sec)
		admittedAt(t, one, "Acquire(1)", 3*sec)
		wlLevel(t, w, 7)
	})
}

// A waits for 3, B queues for 2 behind it, C for 3 behind B; A is
// cancelled, and B goes at once, since it fits; C is then due when the
// window has room for 3, as if A had never queued.
func TestWindowCancelledWaiterLosesNothing(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 3, 3*sec)
		ctx := context.Background()
		if err := w.Acquire(ctx, 1); err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithCancel(ctx)
		a := wlGo(actx, c, w, 3) // at 3 s
		b := wlGo(ctx, c, w, 2)  // at 6 s behind A
		cc := wlGo(ctx, c, w, 3) // at 9 s behind B
		c.AdvanceTo(t, 500*ms)
		pending(t, b, "B")
		cancel()
		c.Settle()
		r := returned(t, a, "A")
		if !errors.Is(r.err, context.Canceled) || r.at != 500*ms {
			t.Fatalf("A returned %v at %v, want context.Canceled at 0.5s", r.err, r.at)
		}
		admittedAt(t, b, "B", 500*ms)
		wlLevel(t, w, 3)
		if w.Waiting() != 1 {
			t.Fatalf("%d waiting, want 1", w.Waiting())
		}
		// C needs both to leave: the 1 at 3 s, the 2 at 3.5 s.
		c.AdvanceTo(t, 3500*ms-1)
		pending(t, cc, "C")
		c.AdvanceTo(t, 3500*ms)
		admittedAt(t, cc, "C", 3500*ms)
	})
}

// A cancelled waiter in the middle of the queue changes when the ones
// behind it are due, and nothing else.
func TestWindowCancelMiddleWaiter(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, sec)
		ctx := context.Background()
		w.TryAcquire(1)
		a := wlGo(ctx, c, w, 1)
		mctx, cancel := context.WithCancel(ctx)
		m := wlGo(mctx, c, w, 1)
		z := wlGo(ctx, c, w, 1)
		cancel()
		c.Settle()
		if r := returned(t, m, "middle"); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("middle waiter returned %v", r.err)
		}
		c.AdvanceTo(t, sec)
		admittedAt(t, a, "first", sec)
		c.AdvanceTo(t, 2*sec-1)
		pending(t, z, "last")
		c.AdvanceTo(t, 2*sec)
		admittedAt(t, z, "last", 2*sec)
	})
}

// When the waiter at the front leaves, the one behind it is admitted at
// once if it fits, not when the front one would have been.
func TestWindowCancelFrontAdmitsNextAtOnce(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 10, sec)
		ctx := context.Background()
		w.TryAcquire(5)
		actx, cancel := context.WithCancel(ctx)
		a := wlGo(actx, c, w, 10) // at 1 s
		b := wlGo(ctx, c, w, 1)   // at 2 s behind a; fits at once alone
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
func TestWindowSharedContextCancelsTheGroup(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, sec)
		w.TryAcquire(1)
		ctx, cancel := context.WithCancel(context.Background())
		other := wlGo(context.Background(), c, w, 1) // at 1 s
		var group []<-chan result
		for range 5 {
			group = append(group, wlGo(ctx, c, w, 1)) // at 2, 3, 4, 5, 6 s
		}
		last := wlGo(context.Background(), c, w, 1)
		c.AdvanceTo(t, 2*sec)
		admittedAt(t, other, "the caller before the group", sec)
		admittedAt(t, group[0], "the first of the group", 2*sec)
		c.AdvanceTo(t, 2500*ms)
		cancel()
		c.Settle()
		for i, ch := range group[1:] {
			if r := returned(t, ch, "a member of the group"); !errors.Is(r.err, context.Canceled) || r.at != 2500*ms {
				t.Fatalf("member %d returned %v at %v, want context.Canceled at 2.5s", i+1, r.err, r.at)
			}
		}
		if w.Waiting() != 1 {
			t.Fatalf("%d waiting, want only the last caller", w.Waiting())
		}
		c.AdvanceTo(t, 3*sec)
		admittedAt(t, last, "the caller after the group", 3*sec)
	})
}

// A group whose first waiter is cancelled together with the rest; the
// caller behind the group moves up to the front's time.
func TestWindowSharedContextCancelledWhileOwnerWaits(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 2, sec)
		w.TryAcquire(2)
		ctx, cancel := context.WithCancel(context.Background())
		var group []<-chan result
		for range 100 {
			group = append(group, wlGo(ctx, c, w, 1))
		}
		after := wlGo(context.Background(), c, w, 2)
		c.AdvanceTo(t, 500*ms)
		cancel()
		c.Settle()
		for _, ch := range group {
			if r := returned(t, ch, "member"); !errors.Is(r.err, context.Canceled) {
				t.Fatalf("member returned %v", r.err)
			}
		}
		c.AdvanceTo(t, sec)
		admittedAt(t, after, "the caller after the group", sec)
	})
}

func TestWindowDeadlineFailsFast(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, sec)
		ctx := context.Background()
		w.TryAcquire(1)
		first := wlGo(ctx, c, w, 1) // due at 1 s

		// The next caller is due at 2 s: a deadline at 1.5 s cannot be met.
		dctx, cancel := c.WithTimeout(ctx, 1500*ms)
		defer cancel()
		err := w.Acquire(dctx, 1)
		if !errors.Is(err, context.DeadlineExceeded) || c.Elapsed() != 0 {
			t.Fatalf("Acquire = %v at %v, want an immediate context.DeadlineExceeded", err, c.Elapsed())
		}
		if want := "ratelimit: acquire 1 would wait 2s, but the context deadline is in 1.5s"; err.Error() != want {
			t.Fatalf("error %q, want %q", err, want)
		}
		if w.Waiting() != 1 || w.Level() != 1 {
			t.Fatalf("a failed deadline changed the window: %d waiting, level %v", w.Waiting(), w.Level())
		}

		// A deadline exactly at the due time cannot be met either.
		ectx, cancel2 := c.WithTimeout(ctx, 2*sec)
		defer cancel2()
		var de *ratelimit.DeadlineError
		if err := w.Acquire(ectx, 1); !errors.As(err, &de) || c.Elapsed() != 0 {
			t.Fatalf("Acquire with the deadline at the due time = %v at %v, want an immediate DeadlineError", err, c.Elapsed())
		}
		if *de != (ratelimit.DeadlineError{Amount: 1, Wait: 2 * sec, Remaining: 2 * sec}) {
			t.Fatalf("DeadlineError %+v, want a wait of 2s with 2s remaining", *de)
		}
		// A nanosecond later can.
		lctx, cancel3 := c.WithTimeout(ctx, 2*sec+1)
		defer cancel3()
		later := wlGo(lctx, c, w, 1)
		c.AdvanceTo(t, sec)
		admittedAt(t, first, "first", sec)
		pending(t, later, "caller with a deadline just after the due time")
		c.AdvanceTo(t, 2*sec)
		admittedAt(t, later, "caller with a deadline just after the due time", 2*sec)
	})
}

// Deadlines behind a queue of weighted waiters use the exact FIFO due time
// of the window rule: on NewWindow(4, 1s) filled one unit every 250 ms, A
// (2) is due at 1.25 s, B (1) at 1.5 s, and a newcomer of 2 at 2.25 s,
// when the 2 of A leave.
func TestWindowDeadlineBehindWeightedQueue(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 4, sec)
		ctx := context.Background()
		for i := range 4 {
			c.AdvanceTo(t, time.Duration(i)*250*ms)
			w.TryAcquire(1)
		}
		c.AdvanceTo(t, 800*ms)
		a := wlGo(ctx, c, w, 2)
		b := wlGo(ctx, c, w, 1)
		at, cancel := c.WithTimeout(ctx, 1450*ms)
		defer cancel()
		var de *ratelimit.DeadlineError
		if err := w.Acquire(at, 2); !errors.As(err, &de) || de.Wait != 1450*ms || de.Remaining != 1450*ms || de.Amount != 2 {
			t.Fatalf("deadline at the due time: %v, want a DeadlineError with a wait of 1.45s", err)
		}
		if w.Waiting() != 2 {
			t.Fatalf("%d waiting, want 2", w.Waiting())
		}
		after, cancel2 := c.WithTimeout(ctx, 1450*ms+1)
		defer cancel2()
		n := wlGo(after, c, w, 2)
		c.AdvanceTo(t, 1250*ms)
		admittedAt(t, a, "A", 1250*ms)
		c.AdvanceTo(t, 1500*ms)
		admittedAt(t, b, "B", 1500*ms)
		c.AdvanceTo(t, 2250*ms-1)
		pending(t, n, "newcomer")
		c.AdvanceTo(t, 2250*ms)
		admittedAt(t, n, "newcomer", 2250*ms)
	})
}

// A deadline at the very time the caller would be admitted cannot be met:
// Acquire fails at once, every time, and changes nothing. One nanosecond
// later is met.
func TestWindowDeadlineAtDueTimeFailsAtOnce(t *testing.T) {
	for range 5 {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			w := wlNew(c, 2, 200*ms)
			ctx := context.Background()
			if err := w.Acquire(ctx, 2); err != nil {
				t.Fatal(err)
			}
			c.AdvanceTo(t, 50*ms)
			dctx, cancel := c.WithTimeout(ctx, 150*ms)
			defer cancel()
			err := w.Acquire(dctx, 1)
			var de *ratelimit.DeadlineError
			if !errors.As(err, &de) || !errors.Is(err, context.DeadlineExceeded) || c.Elapsed() != 50*ms {
				t.Fatalf("Acquire with the deadline at its due time = %v at %v, want a DeadlineError at once", err, c.Elapsed())
			}
			if de.Wait != 150*ms || de.Remaining != 150*ms || de.Amount != 1 {
				t.Fatalf("DeadlineError %+v, want a wait of 150ms with 150ms remaining", *de)
			}
			if w.Waiting() != 0 || w.Level() != 2 {
				t.Fatalf("the refusal changed the window: %d waiting, level %v", w.Waiting(), w.Level())
			}
			lctx, cancel2 := c.WithTimeout(ctx, 150*ms+1)
			defer cancel2()
			waiter := wlGo(lctx, c, w, 1)
			c.AdvanceTo(t, 200*ms)
			admittedAt(t, waiter, "caller with a deadline 1ns after its due time", 200*ms)
		})
	}
}

// On NewWindow(1, 10s), full, a waiter queued at 0 is due at 10 s;
// SetRate(1, 4s) at 2 s keeps the unit in the window and frees it at its
// admission time plus the new period: the waiter is admitted at 4 s.
func TestWindowSetRateAppliesToQueuedWaiters(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, 10*sec)
		w.TryAcquire(1)
		waiter := wlGo(context.Background(), c, w, 1)
		c.AdvanceTo(t, 2*sec)
		w.SetRate(1, 4*sec)
		wlLevel(t, w, 1)
		if w.MaxRate() != 1 || w.Period() != 4*sec {
			t.Fatalf("MaxRate, Period = %v, %v", w.MaxRate(), w.Period())
		}
		c.AdvanceTo(t, 4*sec-1)
		pending(t, waiter, "waiter")
		c.AdvanceTo(t, 4*sec)
		admittedAt(t, waiter, "waiter", 4*sec)
	})
}

// A shorter period frees at once the admissions it puts out of the window.
func TestWindowSetRateShorterPeriodFreesAtOnce(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, 10*sec)
		w.TryAcquire(1)
		waiter := wlGo(context.Background(), c, w, 1)
		c.AdvanceTo(t, 2*sec)
		w.SetRate(1, sec)
		c.Settle()
		admittedAt(t, waiter, "waiter", 2*sec)
		wlLevel(t, w, 1)
	})
}

// Admissions that had already left the window stay out, however long the
// new period: a longer period does not bring them back.
func TestWindowSetRateLeftAdmissionsStayOut(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, sec)
		w.TryAcquire(1)
		c.AdvanceTo(t, 2*sec)
		w.SetRate(1, 10*sec)
		wlLevel(t, w, 0)
		if !w.TryAcquire(1) {
			t.Fatal("an admission that had left the window came back with the longer period")
		}
		c.AdvanceTo(t, 12*sec-1)
		if w.HasCapacity(1e-9) {
			t.Fatal("the unit admitted at 2 s left before 2 s + the new period")
		}
		c.AdvanceTo(t, 12*sec)
		if !w.TryAcquire(1) {
			t.Fatal("the unit admitted at 2 s did not leave at 12 s")
		}
	})
}

// A higher capacity admits the waiters that now fit, at once.
func TestWindowSetRateRaisesCapacity(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, sec)
		w.TryAcquire(1)
		a := wlGo(context.Background(), c, w, 1)
		b := wlGo(context.Background(), c, w, 1)
		c.AdvanceTo(t, 500*ms)
		w.SetRate(2, sec)
		c.Settle()
		admittedAt(t, a, "a", 500*ms)
		pending(t, b, "b")
		c.AdvanceTo(t, sec)
		admittedAt(t, b, "b", sec)
	})
}

// SetRate fails at once every waiter whose amount exceeds the new capacity,
// wherever it stands in the queue, naming the values, and the wait
// estimated for a newcomer leaves them out.
func TestWindowSetRateLowersCapacity(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 10, sec)
		ctx := context.Background()
		w.TryAcquire(10)
		a := wlGo(ctx, c, w, 1)
		b := wlGo(ctx, c, w, 8)
		bb := wlGo(ctx, c, w, 6)
		d := wlGo(ctx, c, w, 1)
		c.AdvanceTo(t, 200*ms)
		w.SetRate(5, sec)
		c.Settle()
		for _, x := range []struct {
			ch  <-chan result
			msg string
		}{{b, "ratelimit: acquire 8 exceeds capacity 5"}, {bb, "ratelimit: acquire 6 exceeds capacity 5"}} {
			r := returned(t, x.ch, "a waiter above the new capacity")
			if !errors.Is(r.err, ratelimit.ErrExceedsCapacity) || r.err.Error() != x.msg || r.at != 200*ms {
				t.Fatalf("waiter above the new capacity: %v at %v, want %q at once", r.err, r.at, x.msg)
			}
		}
		if n := w.Waiting(); n != 2 {
			t.Fatalf("%d waiting, want 2", n)
		}
		if w.Level() < 5 || w.HasCapacity(1e-9) {
			t.Fatalf("Level() = %v: the 10 units admitted at 0 must keep the window full", w.Level())
		}
		// a and d at 1 s, when the 10 leave; a newcomer of 4 then waits
		// for them: due at 2 s.
		at, cancel := c.WithTimeout(ctx, 1800*ms)
		defer cancel()
		var de *ratelimit.DeadlineError
		if err := w.Acquire(at, 4); !errors.As(err, &de) || de.Wait != 1800*ms {
			t.Fatalf("deadline at the due time: %v, want a DeadlineError with a wait of 1.8s", err)
		}
		after, cancel2 := c.WithTimeout(ctx, 1800*ms+1)
		defer cancel2()
		e := wlGo(after, c, w, 4)
		c.AdvanceTo(t, sec-1)
		pending(t, a, "a")
		c.AdvanceTo(t, sec)
		admittedAt(t, a, "a", sec)
		admittedAt(t, d, "d", sec)
		c.AdvanceTo(t, 2*sec-1)
		pending(t, e, "newcomer")
		c.AdvanceTo(t, 2*sec)
		admittedAt(t, e, "newcomer", 2*sec)
	})
}

// NewWindow(10, 1s), Pause(5s), twelve callers: nothing before 5 s, not
// even a fraction of a unit; then the window rule alone: nothing was
// admitted in the last period, so ten pass at 5 s, and the other two when
// the first of them leave, at 6 s. Pause leaves the Level alone.
func TestWindowPause(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 10, sec)
		w.Pause(5 * sec)
		wlLevel(t, w, 0)
		ctx := context.Background()
		var ws []<-chan result
		for range 12 {
			ws = append(ws, wlGo(ctx, c, w, 1))
		}
		w.Pause(sec) // shorter than what remains: changes nothing
		w.Pause(-sec)
		w.Pause(0)
		c.AdvanceTo(t, 5*sec-1)
		pending(t, ws[0], "first caller")
		if w.Waiting() != 12 {
			t.Fatalf("%d waiting, want 12", w.Waiting())
		}
		c.AdvanceTo(t, 5*sec)
		for i, ch := range ws[:10] {
			admittedAt(t, ch, fmt.Sprintf("caller %d", i), 5*sec)
		}
		pending(t, ws[10], "caller 10")
		c.AdvanceTo(t, 6*sec)
		admittedAt(t, ws[10], "caller 10", 6*sec)
		admittedAt(t, ws[11], "caller 11", 6*sec)
	})
	// Without waiters: TryAcquire is refused until the pause ends, then the
	// whole capacity passes.
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 10, sec)
		w.Pause(5 * sec)
		c.AdvanceTo(t, 5*sec-1)
		if w.TryAcquire(1e-9) || w.HasCapacity(1e-9) {
			t.Fatal("a fraction of a unit passed during the pause")
		}
		c.AdvanceTo(t, 5*sec)
		if !w.TryAcquire(10) || w.TryAcquire(1e-9) {
			t.Fatal("the capacity, exactly, must pass at the end of the pause")
		}
	})
}

// A pause never lowers the Level: the admissions in the window stay in it
// until Period after they were admitted, pause or not.
func TestWindowPauseKeepsLevel(t *testing.T) {
	for _, tt := range []struct {
		pause time.Duration
		a, b  time.Duration
	}{
		{2 * sec, time.Minute, 2 * time.Minute},     // shorter than the window's own wait
		{90 * sec, 90 * sec, 150 * sec},             // longer: a at its end, b a minute later
		{time.Minute, time.Minute, 2 * time.Minute}, // ends as the unit leaves
	} {
		t.Run(tt.pause.String(), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				w := wlNew(c, 1, time.Minute)
				w.TryAcquire(1)
				w.Pause(tt.pause)
				wlLevel(t, w, 1)
				ctx := context.Background()
				a, b := wlGo(ctx, c, w, 1), wlGo(ctx, c, w, 1)
				c.AdvanceTo(t, tt.a-1)
				pending(t, a, "first")
				c.AdvanceTo(t, tt.a)
				admittedAt(t, a, "first", tt.a)
				c.AdvanceTo(t, tt.b-1)
				pending(t, b, "second")
				c.AdvanceTo(t, tt.b)
				admittedAt(t, b, "second", tt.b)
			})
		})
	}
}

// After a pause, only the window rule applies: admissions still in the
// window hold their units, however long the pause; those that left do not.
func TestWindowPauseThenWindowRule(t *testing.T) {
	for _, tt := range []struct {
		pause time.Duration
		want  []time.Duration
	}{
		{2 * sec, []time.Duration{8 * sec, 8010 * ms, 8020 * ms, 8030 * ms}},
		{10 * sec, []time.Duration{11 * sec, 11 * sec, 11 * sec, 11 * sec}},
	} {
		t.Run(tt.pause.String(), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				w := wlNew(c, 4, 8*sec)
				for i := range 4 {
					c.AdvanceTo(t, time.Duration(i)*10*ms)
					w.TryAcquire(1)
				}
				c.AdvanceTo(t, sec)
				w.Pause(tt.pause)
				wlLevel(t, w, 4)
				var ws []<-chan result
				for range 4 {
					ws = append(ws, wlGo(context.Background(), c, w, 1))
				}
				wlExpect(t, c, ws, tt.want)
			})
		})
	}
}

// SetRate during a pause neither ends nor extends it; a longer Pause
// extends it; at its end the window rule of the new setting applies.
func TestWindowSetRateDuringPause(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, 10*sec)
		w.Pause(10 * sec)
		w.SetRate(10, sec)
		c.AdvanceTo(t, 10*sec-1)
		if w.HasCapacity(1e-9) {
			t.Fatal("SetRate ended the pause")
		}
		c.AdvanceTo(t, 10*sec)
		n := 0
		for n < 20 && w.TryAcquire(1) {
			n++
		}
		if n != 10 {
			t.Errorf("%d units admitted at the end of the pause, want the new capacity, 10", n)
		}
	})
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 10, sec)
		w.Pause(5 * sec)
		a := wlGo(context.Background(), c, w, 1)
		c.AdvanceTo(t, sec)
		w.SetRate(1, time.Minute) // a slower rate does not lengthen the pause
		c.AdvanceTo(t, 5*sec-1)
		pending(t, a, "waiter")
		c.AdvanceTo(t, 5*sec)
		admittedAt(t, a, "waiter", 5*sec)
		w.Pause(3 * sec)
		b := wlGo(context.Background(), c, w, 1)
		c.AdvanceTo(t, 6*sec)
		w.Pause(4 * sec) // extends the pause from 8 s to 10 s
		w.SetRate(1, sec)
		c.AdvanceTo(t, 10*sec-1)
		pending(t, b, "second waiter")
		c.AdvanceTo(t, 10*sec)
		admittedAt(t, b, "second waiter", 10*sec)
	})
}

// Pauses longer than about 417 days are cut to that.
func TestWindowLongestPause(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 1, sec)
		w.Pause(math.MaxInt64)
		waiter := wlGo(context.Background(), c, w, 1)
		const longest = time.Duration(1) << 55
		c.AdvanceTo(t, longest-1)
		pending(t, waiter, "waiter")
		c.AdvanceTo(t, longest)
		admittedAt(t, waiter, "waiter", longest)
	})
}

// Level counts the units admitted in (now-Period, now], waiters not
// included; Waiting counts the callers queued.
func TestWindowLevelAndWaiting(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 4, sec)
		ctx := context.Background()
		w.TryAcquire(1.5)
		wlLevel(t, w, 1.5)
		c.AdvanceTo(t, 500*ms)
		w.TryAcquire(2.5)
		wlLevel(t, w, 4)
		a := wlGo(ctx, c, w, 1)
		b := wlGo(ctx, c, w, 1)
		if w.Waiting() != 2 {
			t.Fatalf("%d waiting, want 2", w.Waiting())
		}
		wlLevel(t, w, 4)
		c.AdvanceTo(t, sec) // 1.5 leaves; a fits, b does not (3.5 + 1 > 4)
		admittedAt(t, a, "a", sec)
		wlLevel(t, w, 3.5)
		if w.Waiting() != 1 {
			t.Fatalf("%d waiting, want 1", w.Waiting())
		}
		c.AdvanceTo(t, 1500*ms) // 2.5 leaves
		admittedAt(t, b, "b", 1500*ms)
		wlLevel(t, w, 2)
		if w.Waiting() != 0 {
			t.Fatalf("%d waiting, want 0", w.Waiting())
		}
		c.AdvanceTo(t, 2*sec-1)
		wlLevel(t, w, 2)
		c.AdvanceTo(t, 2*sec)
		wlLevel(t, w, 1)
		c.AdvanceTo(t, 2500*ms)
		wlLevel(t, w, 0)
	})
}

// Whole amounts, and amounts with few binary digits after the point, are
// counted exactly, at every rate: a full window is exactly MaxRate units,
// and never more, whatever the pieces.
func TestWindowCapacityIsExact(t *testing.T) {
	tests := []struct {
		maxRate float64
		period  time.Duration
		piece   float64 // acquired until refused, from empty
		exact   bool    // the pieces fill the window exactly
	}{
		{3, sec, 1, true}, {7, sec, 0.25, true}, {11, sec, 1, true}, {999, sec, 1, true},
		{2.5, sec, 0.5, true}, {1e12, sec, 999, true}, {1e12, sec, 1e9, true},
		{1, time.Nanosecond, 0.5, true}, {1, time.Nanosecond, 1.0 / 1024, true},
		{2, 3 * time.Nanosecond, 1, true}, {1e9 / 1.5, sec, 1, false},
		{2.7, sec, 0.3, false}, {0.3, sec, 0.1, false}, {1e-200, time.Hour, 1e-201, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v per %v by %v", tt.maxRate, tt.period, tt.piece), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				w := wlNew(c, tt.maxRate, tt.period)
				if !w.TryAcquire(tt.maxRate) {
					t.Fatalf("an empty window refused its capacity")
				}
				for i := range 100 {
					if w.TryAcquire(tt.piece) || w.TryAcquire(math.SmallestNonzeroFloat64) {
						t.Fatalf("a full window admitted more (try %d)", i)
					}
				}
				c.Advance(tt.period)
				wlLevel(t, w, 0)
				// Pieces fill the window up to the capacity, and not past
				// it: exactly, in rationals.
				sum := new(big.Rat)
				first := max(0, tt.maxRate-1000*tt.piece)
				if !w.TryAcquire(first) {
					t.Fatalf("an empty window refused %v", first)
				}
				sum.SetFloat64(first)
				for n := 0; w.TryAcquire(tt.piece); n++ {
					sum.Add(sum, new(big.Rat).SetFloat64(tt.piece))
					if n > 2000 {
						t.Fatal("more than 2000 pieces admitted")
					}
				}
				capa := new(big.Rat).SetFloat64(tt.maxRate)
				if sum.Cmp(capa) > 0 {
					t.Fatalf("%s admitted in one window, above the capacity %v", sum.FloatString(20), tt.maxRate)
				}
				// Dyadic pieces fill it exactly; others up to a piece.
				if short := new(big.Rat).Sub(capa, sum); short.Cmp(new(big.Rat).SetFloat64(tt.piece)) >= 0 {
					t.Fatalf("only %s admitted from empty, capacity %v", sum.FloatString(20), tt.maxRate)
				}
				if tt.exact && sum.Cmp(capa) != 0 {
					t.Fatalf("%s admitted from empty, want exactly %v", sum.FloatString(20), tt.maxRate)
				}
			})
		})
	}
}

// With the default clock inside a synctest bubble, the window keeps the
// bubble's fake time: users can test their own code this way.
func TestWindowDefaultClockInSynctestBubble(t *testing.T) {
	d := clocktest.Drips[0]
	want := []time.Duration{0, 10 * ms, 20 * ms, 30 * ms, 8 * sec, 8010 * ms, 8020 * ms, 8030 * ms, 16 * sec, 16010 * ms}
	synctest.Test(t, func(t *testing.T) {
		w := ratelimit.NewWindow(d.MaxRate, d.Period)
		start := time.Now()
		done := make(chan time.Duration, len(want))
		for range want {
			time.Sleep(d.Gap)
			go func() {
				if err := w.Wait(context.Background()); err != nil {
					t.Error(err)
				}
				done <- time.Since(start) - d.Gap
			}()
		}
		for i, at := range want {
			if got := <-done; got != at {
				t.Errorf("admission %d at %v, want %v", i, got, at)
			}
		}
	})
}

// Users declare limiters at package level and test their code in synctest
// bubbles: a Window made outside any bubble works on a bubble's schedule,
// and so does one used by two bubbles in turn. The second bubble's clock
// starts behind the time the window last read, so the window carries on
// from that time, with the unit the first bubble admitted last still in
// it: the second bubble starts a second later.
var (
	wlPackageWindow     = ratelimit.NewWindow(1, sec)
	wlPackageWindowUsed bool
)

func TestWindowFromOutsideTheBubble(t *testing.T) {
	w := wlPackageWindow
	if wlPackageWindowUsed { // -count > 1: make a fresh one, outside the bubbles too
		w = ratelimit.NewWindow(1, sec)
	}
	wlPackageWindowUsed = true
	for i, name := range []string{"first bubble", "second bubble"} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var got []time.Duration
				for range 5 {
					if err := w.Wait(context.Background()); err != nil {
						t.Fatal(err)
					}
					got = append(got, time.Since(start))
				}
				first := time.Duration(i) * sec
				for i, at := range got {
					if want := first + time.Duration(i)*sec; at != want {
						t.Fatalf("admissions at %v, want one a second from %v", got, first)
					}
				}
			})
		})
	}
}

// A clock that moves backwards makes the window stricter, never looser: the
// admissions keep their times in the window, whose time stands still, and
// runs again from there.
func TestWindowClockMovingBackwards(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 2, sec)
		c.Advance(time.Hour)
		if !w.TryAcquire(2) {
			t.Fatal("burst refused")
		}
		c.Set(clocktest.Start.Add(-time.Hour)) // two hours back
		if w.TryAcquire(0.1) {
			t.Fatal("a full window admitted after the clock moved back")
		}
		wlLevel(t, w, 2)
		waiter := wlGo(context.Background(), c, w, 1)
		c.Advance(sec - 1)
		pending(t, waiter, "waiter")
		c.Advance(1)
		if r := returned(t, waiter, "waiter"); r.err != nil {
			t.Fatalf("waiter: %v", r.err)
		}
		if !w.TryAcquire(1) || w.TryAcquire(1e-9) {
			t.Fatal("the window does not run on from where it stood")
		}
	})
}

// After the clock moves back, the waiters already queued are set again on
// the new time, and a newcomer's deadline estimate and its admission agree
// with them. The window runs on from the time it last read: if it read the
// clock half a second after the waiter queued, the waiter goes half a
// second after the move; if nobody read it, that half second is lost, and
// the waiter goes a second after the move (stricter, never looser).
func TestWindowDeadlineEstimateAfterClockMovesBack(t *testing.T) {
	for _, read := range []bool{true, false} {
		t.Run(fmt.Sprintf("read %v", read), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				w := wlNew(c, 2, sec)
				ctx := context.Background()
				c.Advance(time.Hour)
				w.TryAcquire(2)
				a := wlGo(ctx, c, w, 1) // due a second later
				c.Advance(500 * ms)
				due := sec
				if read {
					wlLevel(t, w, 2)
					due = 500 * ms
				}
				c.Set(clocktest.Start.Add(-time.Hour))
				at, cancel := c.WithTimeout(ctx, due)
				defer cancel()
				var de *ratelimit.DeadlineError
				if err := w.Acquire(at, 1); !errors.As(err, &de) || de.Wait != due {
					t.Fatalf("deadline at the due time after the move: %v, want a DeadlineError with a wait of %v", err, due)
				}
				after, cancel2 := c.WithTimeout(ctx, due+1)
				defer cancel2()
				b := wlGo(after, c, w, 1)
				c.Advance(due - 1)
				pending(t, a, "the waiter queued before the move")
				pending(t, b, "newcomer")
				c.Advance(1)
				for _, ch := range []<-chan result{a, b} {
					if r := returned(t, ch, "waiter"); r.err != nil || r.at != -time.Hour+due {
						t.Fatalf("waiter returned %v at %v, want admitted %v after the move", r.err, r.at, due)
					}
				}
			})
		})
	}
}

// A clock that jumps more than 292 years forward (time.Time.Sub saturates)
// moves the window to the time now, so it empties once: one burst passes
// at that instant, not one a call.
func TestWindowClockJumpBeyond292Years(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 10, sec)
		w.TryAcquire(10)
		c.Set(clocktest.Start.AddDate(1000, 0, 0))
		n := 0
		for range 10 {
			if w.TryAcquire(10) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d full windows of 10 admitted at one instant after a 1000-year jump, want 1", n)
		}
		waiter := wlGo(context.Background(), c, w, 1)
		c.Advance(sec - 1)
		pending(t, waiter, "waiter")
		c.Advance(1)
		if r := returned(t, waiter, "waiter"); r.err != nil {
			t.Fatal(r.err)
		}
	})
}

// The window moves its epoch forward on a clock that runs for a century
// (past 2^61 ns, about 73 years), and keeps its schedule exact across the
// move, with a waiter queued across it.
func TestWindowLongRunningClock(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := wlNew(c, 2, sec)
		var queued <-chan result
		var prev time.Duration
		for range 5 {
			c.Advance(20 * 365 * 24 * time.Hour)
			start := c.Elapsed()
			if queued != nil {
				if r := returned(t, queued, "waiter queued across 20 years"); r.err != nil || r.at != prev+2*sec {
					t.Fatalf("waiter queued across 20 years: %v at %v, want admitted at %v", r.err, r.at, prev+2*sec)
				}
			}
			prev = start
			first, second, third := w.TryAcquire(1), w.TryAcquire(1), w.TryAcquire(0.1)
			if !first || !second || third {
				t.Fatalf("at %v: the window's capacity is not exactly 2", start)
			}
			waiter := wlGo(context.Background(), c, w, 1)
			c.Advance(sec - 1)
			pending(t, waiter, "waiter")
			c.Advance(1)
			admittedAt(t, waiter, "waiter", start+sec)
			w.TryAcquire(1)
			queued = wlGo(context.Background(), c, w, 1) // due a second later
		}
		c.Advance(sec)
		admittedAt(t, queued, "the last waiter", prev+2*sec)
	})
}
