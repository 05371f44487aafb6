package ratelimit

// Adversarial tests of the leaky bucket: attacks on its rounding, its
// blocks, its clock handling and its waiters, kept as regression tests.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
)

const day = 24 * time.Hour

type atkResult struct {
	at  time.Duration
	err error
}

// atkGo calls Acquire on a new goroutine and settles, so that the call has
// been admitted, refused or queued when it returns.
func atkGo(ctx context.Context, c *clocktest.Clock, l *Limiter, amount float64) <-chan atkResult {
	ch := make(chan atkResult, 1)
	go func() {
		err := l.Acquire(ctx, amount)
		ch <- atkResult{c.Elapsed(), err}
	}()
	c.Settle()
	return ch
}

func atkPoll(ch <-chan atkResult) (atkResult, bool) {
	select {
	case r := <-ch:
		return r, true
	default:
		return atkResult{}, false
	}
}

// cost rounds the ticks of a fractional amount up also where amount*unit
// is 2^53 or more, and a float64 holds only whole numbers of ticks, or
// every other one: the product's lost part, however many ticks, is added
// back. Otherwise a bucket would admit a little more than the exact model.
func TestCostRoundsUpAboveTwoTo53(t *testing.T) {
	// The product 5/6 * 1.1527488e17 (ticks a unit) is ...004.27 exactly,
	// but ceilProduct returns ...000.
	r := newRate("test", 5, 7*day)
	a := 5.0 / 6 // as a float64, a little above 5/6
	exact := new(big.Rat).Mul(new(big.Rat).SetFloat64(a), new(big.Rat).SetFloat64(r.unit))
	if got := new(big.Rat).SetInt64(r.cost(a)); got.Cmp(exact) < 0 {
		t.Errorf("New(5, 7 days): cost(%v) = %s ticks, below the exact %s", a, got.FloatString(0), exact.FloatString(2))
	}

	t.Run("New(5, 7 days)", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			l := New(5, 7*day, WithClock(c))
			if !l.TryAcquire(5) {
				t.Fatal("burst refused")
			}
			// 28 h drain exactly 5/6 of a unit; fl(5/6) is more than that.
			c.Advance(28 * time.Hour)
			if l.TryAcquire(a) {
				t.Errorf("admitted 5 + %v units within 28h: more than 5 + 5*28h/168h = 5 + 5/6", a)
			}
		})
	})

	// The same at a rate whose unit is 63 ticks: a quarter of a unit too
	// much.
	t.Run("New(2^53, 63*2^43ns)", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			const (
				maxRate = float64(1 << 53)
				period  = time.Duration(63) << 43 // 6.4 days; a unit is 63/1024 ns
				m       = 140737488355360         // ns to wait
				a       = 2287542667871248.5      // a*63 = 1024*m + 15.5 ticks
			)
			l := New(maxRate, period, WithClock(c))
			if !l.TryAcquire(maxRate) {
				t.Fatal("burst refused")
			}
			c.Advance(m)
			// Drained: maxRate*m/period = 1024*m/63 units, which is
			// a - 31/126. The exact bucket refuses a until 1 ns later.
			if l.TryAcquire(a) {
				t.Errorf("admitted the burst plus %v units %v later, 31/126 of a unit more than drained", a, time.Duration(m))
			}
		})
	})
}

// A pause is kept in nanoseconds, outside the ticks, so it may last the
// documented 417 days at any rate: New(10, time.Second), whose ticks are
// 1/1024 ns, paused for 30 days admits nothing before 30 days.
func TestLongPauseAtFineTicks(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(10, time.Second, WithClock(c))
		l.Pause(30 * day)
		w := atkGo(context.Background(), c, l, 1)
		c.Advance(27 * day)
		if l.HasCapacity(0.1) {
			t.Errorf("capacity at 27 days into a 30-day pause")
		}
		if r, ok := atkPoll(w); ok {
			t.Fatalf("waiter admitted at %v (err %v) during a 30-day pause", r.at, r.err)
		}
		c.Advance(3 * day)
		if r, ok := atkPoll(w); !ok || r.err != nil || r.at != 30*day {
			t.Fatalf("waiter: %v at %v (returned %v), want admitted at 30 days", r.err, r.at, ok)
		}
	})
}

// SetRate keeps every unit in the bucket, however long they take to drain
// at the new rate (a level beyond what ticks can count becomes a block in
// nanoseconds), and a pause in progress keeps its end.
func TestSetRateKeepsLevelAndPause(t *testing.T) {
	t.Run("level", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			l := New(1000, time.Second, WithClock(c))
			l.TryAcquire(1000)
			l.SetRate(1, time.Hour) // 1000 units drain in 1000 h, about 41.7 days
			if lv := l.Level(); lv < 999.999 {
				t.Errorf("level after SetRate = %v, want the 1000 units that were in the bucket", lv)
			}
			c.Advance(27 * day)
			if l.TryAcquire(1) {
				t.Errorf("admitted at 27 days: 1000 units at 1 an hour drain in 41.7 days")
			}
		})
	})
	t.Run("pause", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			l := New(1, 300*day, WithClock(c)) // scale 22: pauses up to 417 days
			l.Pause(400 * day)
			l.SetRate(1, time.Second)
			c.Advance(27 * day)
			if l.TryAcquire(1) {
				t.Errorf("admitted at 27 days into a 400-day pause that SetRate should have kept")
			}
		})
	})
}

// A waiter that finds the bucket empty is admitted, and charged, on the
// whole nanosecond after the exact model's time, and the deadline estimate
// follows that schedule exactly: New(3, 1s) with a unit in the bucket and
// 3, 1, 3 queued admits a newcomer of 1 at 2 s + 2 ns (the exact model
// says 2 s). A deadline at that time fails at once with a DeadlineError
// that says so; one a nanosecond later is admitted then.
func TestDeadlineEstimateFollowsWholeNanoseconds(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(3, time.Second, WithClock(c)) // a unit is 333333333.33 ns
		bg := context.Background()
		l.TryAcquire(1)
		a := atkGo(bg, c, l, 3) // admitted at 333333334 ns
		b := atkGo(bg, c, l, 1) // at 666666668 ns
		d := atkGo(bg, c, l, 3) // at 1666666668 ns
		const due = 2*time.Second + 2
		for _, deadline := range []time.Duration{2 * time.Second, due} {
			at, cancel := c.WithTimeout(bg, deadline)
			var de *DeadlineError
			if err := l.Acquire(at, 1); !errors.As(err, &de) || de.Wait != due || de.Remaining != deadline {
				t.Fatalf("deadline at %v: %v, want a DeadlineError with a wait of %v", deadline, err, time.Duration(due))
			}
			cancel()
		}
		after, cancel2 := c.WithTimeout(bg, due+1)
		defer cancel2()
		e := atkGo(after, c, l, 1)
		c.AdvanceTo(t, 3*time.Second)
		for i, w := range []struct {
			ch <-chan atkResult
			at time.Duration
		}{{a, 333333334}, {b, 666666668}, {d, 1666666668}, {e, due}} {
			if r, ok := atkPoll(w.ch); !ok || r.err != nil || r.at != w.at {
				t.Errorf("waiter %d: %v at %v (returned %v), want admitted at %v", i, r.err, r.at, ok, w.at)
			}
		}
	})
}

// The nanosecond grid costs a queue at most a nanosecond per waiter that
// finds the bucket empty: a queue of alternating 1s and 3s on New(3, 1s)
// (every 3 empties it) runs behind the exact model by less than one
// nanosecond per 3 ahead, and never ahead of it.
func TestWholeNanosecondDriftIsBounded(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(3, time.Second, WithClock(c))
		var chs []<-chan atkResult
		for range 100 {
			chs = append(chs, atkGo(context.Background(), c, l, 1), atkGo(context.Background(), c, l, 3))
		}
		c.AdvanceTo(t, 140*time.Second)
		units := big.NewRat(0, 1) // admitted before waiter i
		for i, ch := range chs {
			r, ok := atkPoll(ch)
			if !ok || r.err != nil {
				t.Fatalf("waiter %d: %v (returned %v)", i, r.err, ok)
			}
			amount := int64(1 + 2*(i%2))
			// Exact: admitted once the level is at most 3-amount.
			exact := new(big.Rat).Sub(units, big.NewRat(3-amount, 1))
			exact.Mul(exact, big.NewRat(int64(time.Second), 3))
			if exact.Sign() < 0 {
				exact.SetInt64(0)
			}
			late := new(big.Rat).Sub(new(big.Rat).SetInt64(int64(r.at)), exact)
			if late.Sign() < 0 || late.Cmp(big.NewRat(int64(i/2+1), 1)) > 0 {
				t.Fatalf("waiter %d admitted %s ns after the exact model, want 0 to %d", i, late.FloatString(2), i/2+1)
			}
			units.Add(units, big.NewRat(amount, 1))
		}
	})
}

// SetRate during a Pause keeps the pause's end, and the pause ends as it
// does at the new rate: one unit fits, then the steady rate. On New(1, 10s)
// paused for 10 s and set to 10 per second, A (1) is admitted at 10 s and
// B (10, the whole capacity) at 11 s, so a deadline for B at 10.05 s fails
// at once.
func TestDeadlineEstimateAfterSetRateInPause(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1, 10*time.Second, WithClock(c))
		l.Pause(10 * time.Second)
		l.SetRate(10, time.Second)
		bg := context.Background()
		a := atkGo(bg, c, l, 1)
		dctx, cancel := c.WithTimeout(bg, 10050*time.Millisecond)
		defer cancel()
		var de *DeadlineError
		if err := l.Acquire(dctx, 10); !errors.As(err, &de) || de.Wait != 11*time.Second {
			t.Fatalf("B (due at 11 s, deadline at 10.05 s): %v, want a DeadlineError with a wait of 11s", err)
		}
		b := atkGo(bg, c, l, 10)
		c.AdvanceTo(t, 11*time.Second)
		for i, w := range []struct {
			ch <-chan atkResult
			at time.Duration
		}{{a, 10 * time.Second}, {b, 11 * time.Second}} {
			if r, ok := atkPoll(w.ch); !ok || r.err != nil || r.at != w.at {
				t.Errorf("waiter %d: %v at %v (returned %v), want admitted at %v", i, r.err, r.at, ok, w.at)
			}
		}
	})
}

// After the clock moves back, the limiter keeps the bucket as last seen and
// drains it from the new time on, and sets the timer of the waiters
// already queued again, on the new time: a newcomer's deadline estimate
// and its admission agree.
func TestDeadlineEstimateAfterClockMovesBack(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1, time.Second, WithClock(c))
		bg := context.Background()
		l.TryAcquire(1)
		atkGo(bg, c, l, 1) // timer at Start+1s
		c.Set(clocktest.Start.Add(-500 * time.Millisecond))
		c.Settle()
		at, cancel := c.WithTimeout(bg, 2*time.Second)
		defer cancel()
		var de *DeadlineError
		if err := l.Acquire(at, 1); !errors.As(err, &de) || de.Wait != 2*time.Second {
			t.Fatalf("deadline at 2 s: %v, want a DeadlineError with a wait of 2s", err)
		}
		after, cancel2 := c.WithTimeout(bg, 2*time.Second+1)
		defer cancel2()
		b := atkGo(after, c, l, 1)
		c.Advance(3 * time.Second)
		if r, ok := atkPoll(b); !ok || r.err != nil {
			t.Errorf("estimated due in 2s, deadline 1ns later: %v at %v, want admitted", r.err, r.at-(-500*time.Millisecond))
		}
	})
}

// A clock that jumps more than 292 years forward (time.Time.Sub saturates)
// moves the epoch to the time now, not 292 years on, so the bucket empties
// once: one burst passes at that instant, not one a call.
func TestClockJumpBeyond292Years(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(10, time.Second, WithClock(c))
		c.Set(clocktest.Start.AddDate(1000, 0, 0))
		n := 0
		for range 10 {
			if l.TryAcquire(10) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d full bursts of 10 admitted at one instant after a 1000-year jump, want 1", n)
		}
	})
}

// A pause ends as Pause documents at whatever rate is set by then: one unit
// fits, then the steady rate, with no burst, also after SetRate to a faster
// rate during the pause.
func TestNoBurstAtEndOfPauseAfterSetRate(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1, 10*time.Second, WithClock(c))
		l.Pause(10 * time.Second)
		l.SetRate(10, time.Second)
		c.AdvanceTo(t, 10*time.Second-1)
		if l.HasCapacity(0.001) {
			t.Fatal("capacity during the pause")
		}
		c.AdvanceTo(t, 10*time.Second)
		n := 0
		for n < 20 && l.TryAcquire(1) {
			n++
		}
		if n != 1 {
			t.Errorf("%d units admitted at the end of the pause, want 1 then the steady rate", n)
		}
	})
}

// ---------------------------------------------------------------------------
// Attacks the limiter withstands.
// ---------------------------------------------------------------------------

// A Pause, an epoch move and a clock moved back, each inside a fast path
// (between its reading of the params and its compare-and-swap), never let
// the fast path admit with the old bucket.
func TestAttackFastPathHooks(t *testing.T) {
	hooks := map[string]func(c *hookClock, l *Limiter){
		"pause": func(c *hookClock, l *Limiter) {
			l.Pause(time.Hour)
		},
		"epoch move": func(c *hookClock, l *Limiter) {
			c.Add(7 * day) // past rebaseAfter at scale 1024
			if !l.TryAcquire(1) {
				panic("an empty bucket refused its capacity")
			}
			c.Add(-7 * day) // and back, before the outer fast path reads the clock
		},
		"clock back and SetRate": func(c *hookClock, l *Limiter) {
			c.Add(time.Hour)
			l.SetRate(1, time.Second)
			if !l.TryAcquire(1) {
				panic("an empty bucket refused its capacity")
			}
			c.Add(-2 * time.Hour)
		},
	}
	for name, hook := range hooks {
		t.Run(name, func(t *testing.T) {
			c := &hookClock{Mock: clock.NewMock()}
			c.Set(clocktest.Start)
			l := New(1, time.Second, WithClock(c))
			c.Add(time.Hour)
			l.SetRate(1, time.Second) // a lock, so that the epoch is an hour in
			c.hook = func() { hook(c, l) }
			if l.TryAcquire(1) {
				t.Fatalf("the fast path admitted across %s (level %v)", name, l.Level())
			}
			if l.TryAcquire(0.001) {
				t.Fatalf("after %s: a full or paused bucket admitted more", name)
			}
		})
	}
}

// Units a fast path admitted after the last lock still count when the
// clock then moves back before the epoch.
func TestAttackClockBackAfterFastPath(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(10, time.Second, WithClock(c))
		l.SetRate(10, time.Second) // a lock at 0
		c.Advance(500 * time.Millisecond)
		if !l.TryAcquire(10) { // fast path, after the lock
			t.Fatal("burst refused")
		}
		c.Set(clocktest.Start.Add(-time.Hour))
		if l.TryAcquire(0.125) {
			t.Fatal("a full bucket admitted after the clock moved back")
		}
		c.Advance(12500*time.Microsecond - 1)
		if l.TryAcquire(0.125) {
			t.Fatal("0.125 unit admitted before it drained")
		}
		c.Advance(1)
		if !l.TryAcquire(0.125) {
			t.Fatal("0.125 unit refused once drained")
		}
	})
}

// A limiter made in one bubble, with the default clock, serves waiters in
// the next bubble: its timer went with its last waiter (admitted or
// cancelled), and the next is made in the bubble that needs it.
var atkBubbleLimiter *Limiter

func TestAttackBubbleHopping(t *testing.T) {
	for i, name := range []string{"first bubble", "second bubble", "third bubble"} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				if i == 0 {
					atkBubbleLimiter = New(2, time.Second)
				}
				l := atkBubbleLimiter
				start := time.Now()
				ctx, cancel := context.WithCancel(context.Background())
				cancelled := make(chan error, 1)
				for range 2 {
					if err := l.Wait(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				// A waiter cancelled while it waits: its timer must go.
				go func() { cancelled <- l.Wait(ctx) }()
				synctest.Wait()
				cancel()
				if err := <-cancelled; !errors.Is(err, context.Canceled) {
					t.Fatalf("cancelled waiter: %v", err)
				}
				synctest.Wait()
				l.mu.Lock()
				timer := l.timer
				l.mu.Unlock()
				if timer != nil {
					t.Fatal("a timer is left with no one waiting")
				}
				if err := l.Wait(context.Background()); err != nil {
					t.Fatal(err)
				}
				if time.Since(start) <= 0 {
					t.Fatal("the last Wait did not wait")
				}
			})
		})
	}
}

// The deadline boundary at a due time that falls inside a nanosecond: at
// the nanosecond the timer fires, the caller fails at once; one after, it
// is admitted then.
func TestAttackDeadlineBoundaryInsideANanosecond(t *testing.T) {
	for range 20 {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			l := New(3, time.Second, WithClock(c))
			bg := context.Background()
			l.TryAcquire(3)
			const due = 333333334 // 1/3 s, rounded up
			at, cancel := c.WithTimeout(bg, due)
			defer cancel()
			var de *DeadlineError
			if err := l.Acquire(at, 1); !errors.As(err, &de) || de.Wait != due {
				t.Fatalf("deadline at the due time: %v", err)
			}
			after, cancel2 := c.WithTimeout(bg, due+1)
			defer cancel2()
			w := atkGo(after, c, l, 1)
			c.AdvanceTo(t, time.Second)
			if r, ok := atkPoll(w); !ok || r.err != nil || r.at != due {
				t.Fatalf("deadline 1 ns after the due time: %v at %v, want admitted at %v", r.err, r.at, time.Duration(due))
			}
		})
	}
}

// SetRate between the extreme rates, with pauses of the longest length,
// keeps the arithmetic in range: the level stays finite and not negative,
// nothing passes during a pause, and the limiter works again afterwards.
func TestAttackExtremeRates(t *testing.T) {
	extremes := []struct {
		maxRate float64
		period  time.Duration
	}{
		{1e-200, time.Hour}, {1e12, time.Second}, {1, time.Nanosecond}, {1024, time.Nanosecond},
		{5000, 416 * day}, {2, 3 * time.Nanosecond}, {1e-6, time.Second},
	}
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1, time.Second, WithClock(c))
		for i, from := range extremes {
			for j, to := range extremes {
				l.SetRate(from.maxRate, from.period)
				l.TryAcquire(from.maxRate)
				if (i+j)%2 == 0 {
					l.Pause(maxPeriod)
				}
				l.SetRate(to.maxRate, to.period)
				lv := l.Level()
				if math.IsNaN(lv) || math.IsInf(lv, 0) || lv < 0 {
					t.Fatalf("%v/%v -> %v/%v: level %v", from.maxRate, from.period, to.maxRate, to.period, lv)
				}
				if (i+j)%2 == 0 && l.HasCapacity(to.maxRate*1e-9) {
					t.Fatalf("%v/%v -> %v/%v: capacity during the pause", from.maxRate, from.period, to.maxRate, to.period)
				}
				c.Advance(time.Duration(1 << 50)) // 13 days
			}
		}
		// The units in the bucket are kept through every SetRate: at a
		// rate that drains them in a second, it works again a second after
		// the last pause.
		l.SetRate(1e12, time.Second)
		c.Advance(maxPeriod + time.Second)
		if !l.TryAcquire(1e12) {
			t.Fatalf("after the pauses ended: level %v, refused", l.Level())
		}
	})
}

// ---------------------------------------------------------------------------
// A randomized model check: random Acquire (own, shared, deadline and no
// context), cancellation, TryAcquire, HasCapacity, SetRate, Pause and
// clock moves forward (across epoch moves) and back, in a bubble. It
// checks, in exact arithmetic, the window bound within each rate setting
// on a time that never runs back; nothing admitted during a pause; FIFO;
// no TryAcquire past waiters; liveness; no timer left; and that a waiter
// queued with a deadline the limiter judged meetable meets it, unless a
// SetRate, Pause or clock move came in between.
// ---------------------------------------------------------------------------

type atkSetting struct {
	maxRate float64
	period  time.Duration
}

var atkSettings = []atkSetting{
	{3, time.Second}, {7, time.Second}, {2.7, time.Second}, {4, 8 * time.Second},
	{1e12, time.Second}, {1, time.Nanosecond}, {1024, time.Nanosecond}, {2, 3 * time.Nanosecond},
	{1e-6, time.Second}, {0.5, time.Second}, {1e9 / 1.5, time.Second}, {5, 7 * day},
}

type atkWaiter struct {
	idx     int
	amount  float64
	ch      chan atkResult
	done    bool
	disturb int           // disturbances counted at arrival, -1 to excuse
	slack   time.Duration // deadline minus the estimated wait, -1 if unknown
	ahead   int           // waiters ahead at arrival
}

type atkAdmit struct {
	v      int64 // time that never runs back, ns
	amount float64
	seg    int
	op     int
	what   string
}

func atkRandomRun(t *testing.T, c *clocktest.Clock, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, 99))
	s0 := atkSettings[rng.IntN(len(atkSettings))]
	l := New(s0.maxRate, s0.period, WithClock(c))
	segs := []atkSetting{s0}
	var (
		waiters  []*atkWaiter
		admits   []atkAdmit
		pauses   [][3]int64 // from, to (in v), op
		v        int64
		disturb  int // SetRate, Pause and moves back so far
		lastV    int64
		lastIdx  = -1
		maxAmt   float64
		stale    bool // the clock moved back while someone waited
		pool     [3]context.Context
		poolStop [3]context.CancelFunc
		own      []context.CancelFunc
	)
	for i := range pool {
		pool[i], poolStop[i] = context.WithCancel(context.Background())
	}
	collect := func(op int, vBefore int64, clockBefore time.Duration) {
		c.Settle()
		for _, w := range waiters {
			if w.done {
				continue
			}
			r, ok := atkPoll(w.ch)
			if !ok {
				continue
			}
			w.done = true
			av := vBefore + int64(r.at-clockBefore)
			if r.at < clockBefore || av > v {
				av = v
			}
			switch {
			case r.err == nil:
				if w.idx < lastIdx || av < lastV {
					t.Fatalf("seed %d op %d: waiter %d admitted at v=%d after waiter %d at v=%d", seed, op, w.idx, av, lastIdx, lastV)
				}
				lastIdx, lastV = w.idx, av
				admits = append(admits, atkAdmit{av, w.amount, len(segs) - 1, op, fmt.Sprintf("waiter %d", w.idx)})
			case errors.Is(r.err, context.Canceled), errors.Is(r.err, ErrExceedsCapacity):
			case errors.Is(r.err, context.DeadlineExceeded):
				var de *DeadlineError
				if !errors.As(r.err, &de) && w.disturb == disturb && w.slack > 0 {
					t.Errorf("seed %d op %d: waiter %d (amount %v) queued with a deadline %v after its estimated due time, and missed it, with no SetRate, Pause or clock move back since",
						seed, op, w.idx, w.amount, w.slack)
				}
			default:
				t.Fatalf("seed %d op %d: waiter %d: %v", seed, op, w.idx, r.err)
			}
		}
	}
	for op := range ops {
		if l.Waiting() == 0 {
			stale = false
		}
		vBefore, clockBefore := v, c.Elapsed()
		p := l.cur.Load()
		maxRate, period := p.maxRate, p.period
		unitNs := float64(period) / maxRate
		amount := func() float64 {
			switch rng.IntN(7) {
			case 0:
				return maxRate
			case 1:
				return min(1, maxRate)
			case 2:
				return maxRate / float64(rng.IntN(8)+1)
			case 3:
				return maxRate * 1e-9
			case 4:
				return maxRate * (1 - 1e-10)
			default:
				return maxRate * rng.Float64()
			}
		}
		switch k := rng.IntN(100); {
		case k < 25: // forward
			var d time.Duration
			switch rng.IntN(6) {
			case 0:
				d = 1
			case 1:
				d = time.Duration(min(rng.Float64()*3*unitNs, float64(10*period)))
			case 2:
				d = time.Duration(rng.Int64N(int64(min(period, time.Hour)) + 1))
			case 3:
				d = time.Duration(rng.Int64N(1000)) * time.Millisecond
			case 4:
				d = time.Duration(rng.Int64N(int64(8 * day))) // across an epoch move
			default:
				d = time.Duration(rng.Int64N(int64(time.Second)))
			}
			c.Advance(d)
			v += int64(d)
		case k < 28: // back
			c.Settle()
			d := time.Duration(rng.Int64N(int64(min(2*period, time.Hour))) + 1)
			c.Set(c.Now().Add(-d))
			disturb++
			stale = stale || l.Waiting() > 0
		case k < 55: // Acquire
			a := amount()
			maxAmt = max(maxAmt, a)
			w := &atkWaiter{idx: len(waiters), amount: a, ch: make(chan atkResult, 1), disturb: disturb, slack: -1}
			if stale {
				w.disturb = -1
			}
			var ctx context.Context
			switch rng.IntN(4) {
			case 0:
				ctx = context.Background()
			case 1:
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(context.Background())
				own = append(own, cancel)
			case 2:
				ctx = pool[rng.IntN(len(pool))]
			default:
				var cancel context.CancelFunc
				ctx, cancel = c.WithTimeout(context.Background(), time.Duration(rng.Int64N(int64(min(4*period, time.Hour)))+1))
				own = append(own, cancel)
				// The limiter's own estimate, as wait computes it.
				dl, _ := ctx.Deadline()
				l.mu.Lock()
				pp := l.cur.Load()
				if ns, now, ok := pp.now(c); ok && now >= l.seen.Load() {
					due := l.due(pp, now, pp.cost(a))
					w.slack = dl.Sub(c.Now()) - time.Duration(due-ns)
					w.ahead = l.q.live
				}
				l.mu.Unlock()
			}
			waiters = append(waiters, w)
			go func() {
				err := l.Acquire(ctx, a)
				w.ch <- atkResult{c.Elapsed(), err}
			}()
		case k < 70: // TryAcquire, HasCapacity
			a := amount()
			waiting := l.Waiting()
			has := l.HasCapacity(a)
			got := l.TryAcquire(a)
			if has != got {
				t.Fatalf("seed %d op %d: HasCapacity(%v) = %v but TryAcquire = %v", seed, op, a, has, got)
			}
			if got && waiting > 0 && a > 0 {
				t.Fatalf("seed %d op %d: TryAcquire(%v) passed %d waiters", seed, op, a, waiting)
			}
			if got {
				admits = append(admits, atkAdmit{v, a, len(segs) - 1, op, "TryAcquire"})
			}
		case k < 78: // cancel
			if rng.IntN(2) == 0 && len(own) > 0 {
				own[rng.IntN(len(own))]()
			} else {
				i := rng.IntN(len(pool))
				poolStop[i]()
				pool[i], poolStop[i] = context.WithCancel(context.Background())
			}
		case k < 84: // SetRate
			collect(op, vBefore, clockBefore)
			vBefore, clockBefore = v, c.Elapsed()
			s := atkSettings[rng.IntN(len(atkSettings))]
			l.SetRate(s.maxRate, s.period)
			segs = append(segs, s)
			disturb++
		case k < 88: // Pause, shorter than any maxPause
			d := time.Duration(rng.Int64N(int64(min(2*period, time.Hour))) + 1)
			collect(op, vBefore, clockBefore)
			vBefore, clockBefore = v, c.Elapsed()
			l.Pause(d)
			pauses = append(pauses, [3]int64{v, v + int64(d), int64(op)})
			disturb++
		default:
			if lv := l.Level(); lv < 0 || math.IsNaN(lv) {
				t.Fatalf("seed %d op %d: level %v", seed, op, lv)
			}
		}
		collect(op, vBefore, clockBefore)
	}
	// Liveness: at a rate that holds every amount, and drains whatever
	// SetRate kept in the bucket within a second, everyone still queued
	// gets through.
	if maxAmt > 0 {
		maxAmt = 1e12
		l.SetRate(maxAmt, time.Second)
		segs = append(segs, atkSetting{maxAmt, time.Second})
		disturb++
		for _, d := range []time.Duration{time.Second, time.Minute, time.Hour, day, 30 * day} {
			if l.Waiting() == 0 {
				break
			}
			vb, cb := v, c.Elapsed()
			c.Advance(d)
			v += int64(d)
			collect(ops, vb, cb)
		}
		if n := l.Waiting(); n != 0 {
			t.Errorf("seed %d: %d waiters still queued a month after SetRate(%v, 1s)", seed, n, maxAmt)
		}
	}
	for _, f := range own {
		f()
	}
	for _, f := range poolStop {
		f()
	}
	collect(ops, v, c.Elapsed())
	for _, w := range waiters {
		if !w.done {
			t.Fatalf("seed %d: waiter %d (amount %v) never returned", seed, w.idx, w.amount)
		}
	}
	l.mu.Lock()
	armed, timer, live := l.armed, l.timer, l.q.live
	l.mu.Unlock()
	if live != 0 || armed || timer != nil {
		t.Fatalf("seed %d: after everyone returned: %d waiting, armed %v, timer %v", seed, live, armed, timer != nil)
	}
	clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit.(*Limiter)") // any goroutine inside a method
	// The window bound, exactly, within each rate setting.
	slices.SortStableFunc(admits, func(a, b atkAdmit) int { return cmp.Compare(a.v, b.v) })
	for i := range admits {
		s := segs[admits[i].seg]
		sum := new(big.Rat)
		for j := i; j < len(admits) && j < i+300; j++ {
			if admits[j].seg != admits[i].seg {
				continue
			}
			sum.Add(sum, new(big.Rat).SetFloat64(admits[j].amount))
			lim := new(big.Rat).SetFrac64(admits[j].v-admits[i].v, int64(s.period))
			lim.Mul(lim, new(big.Rat).SetFloat64(s.maxRate))
			lim.Add(lim, new(big.Rat).SetFloat64(s.maxRate))
			if sum.Cmp(lim) > 0 {
				t.Fatalf("seed %d: %s units admitted from v=%d (%s, op %d) to v=%d (%s, op %d), more than %v per %v allows",
					seed, sum.FloatString(12), admits[i].v, admits[i].what, admits[i].op, admits[j].v, admits[j].what, admits[j].op, s.maxRate, s.period)
			}
		}
	}
	for _, a := range admits {
		for _, p := range pauses {
			if int64(a.op) > p[2] && a.v < p[1] {
				t.Fatalf("seed %d: %v admitted at v=%d (%s, op %d) during a pause [%d, %d) from op %d", seed, a.amount, a.v, a.what, a.op, p[0], p[1], p[2])
			}
		}
	}
}

func TestAttackRandomized(t *testing.T) {
	seeds := uint64(150)
	if testing.Short() {
		seeds = 40
	}
	for seed := range seeds {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			atkRandomRun(t, c, seed, 300)
		})
	}
}
