package redisbucket

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// TestMatchesLocalLimiter drives a ratelimit.Limiter and a Limiter on the
// same mock clock through the same random calls, and requires the same
// answers: the script is the local bucket's arithmetic, done at the server.
// Pauses and SetRate come in any order, during a pause too.
//
// Acquire is asked with a deadline, and must either admit at once in both,
// or fail at once in both with the same wait (a deadline at or before the
// turn), or wait in both (a deadline after it); a waiting call is then
// cancelled, which in both leaves the bucket as it was. The local
// limiter's turn is read first, from a deadline that it cannot meet.
//
// The local limiter counts time in finer ticks than the script's
// nanoseconds. The rates here take a whole number of nanoseconds per unit,
// divisible by 4, and the amounts are multiples of 1/4, so that neither
// rounds a cost, and the two agree to the bit until a SetRate. Rescaling
// rounds up in both, but to a nanosecond in one and to a tick in the
// other: from then on the script's level may be higher, by less than a
// nanosecond's worth of units per SetRate (drift), and a call whose answer
// that could change is left out.
func TestMatchesLocalLimiter(t *testing.T) {
	addr := redisAddr(t)
	rates := []struct {
		maxRate float64
		period  time.Duration
	}{
		{4, 8 * time.Second},
		{3, 1500 * time.Millisecond},
		{1, 1500 * time.Millisecond},
		{0.5, time.Minute},
		{1000, time.Second},
		{7.25, 29 * time.Millisecond},
	}
	for seed := range uint64(32) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				rng := rand.New(rand.NewPCG(seed, 1))
				r := rates[rng.IntN(len(rates))]
				local := ratelimit.New(r.maxRate, r.period, ratelimit.WithClock(c))
				remote := onMockTime(New(rdb, testKey(t, rdb), r.maxRate, r.period, WithClock(c)), c)
				amount := func() float64 {
					m := local.MaxRate()
					for {
						if a := []float64{0, 0.5, 1, 1.5, m / 4, m, math.Floor(m*rng.Float64()*4) / 4}[rng.IntN(7)]; a <= m {
							return a
						}
					}
				}
				drift := 0.0 // units
				// fits returns whether amount a fits in the local bucket now,
				// and whether the script's answer must be the same: the
				// drift may leave its bucket too full for a.
				fits := func(a float64) (want, sure bool) {
					want = local.HasCapacity(a)
					if want && a > 0 && local.MaxRate()-local.Level()-a < drift {
						if lv, err := remote.Level(ctx); err != nil || lv != 0 || local.Level() != 0 {
							return want, false // the script's bucket may be too full
						}
						drift = 0 // both empty: the same again
					}
					return want, true
				}
				for step := range 300 {
					switch k := rng.IntN(22); {
					case k < 9:
						a := amount()
						want, sure := fits(a)
						if !sure {
							break
						}
						name, lf, rf := "TryAcquire", local.TryAcquire, remote.TryAcquire
						if k >= 6 {
							name, lf, rf = "HasCapacity", local.HasCapacity, remote.HasCapacity
						}
						lf(a)
						got, err := rf(ctx, a)
						if err != nil || got != want {
							t.Fatalf("step %d at %v: %s(%v) = %v, %v; local limiter says %v", step, c.Elapsed(), name, a, got, err, want)
						}
					case k < 12:
						want := local.Level()
						got, err := remote.Level(ctx)
						if err != nil || got < want || got > want+drift {
							t.Fatalf("step %d at %v: Level() = %v, %v; local limiter says %v (drift %v)", step, c.Elapsed(), got, err, want, drift)
						}
					case k < 13:
						d := time.Duration(rng.Int64N(int64(3 * local.Period())))
						if rng.IntN(10) == 0 {
							d = time.Duration(rng.IntN(48)) * time.Hour // long enough to outlive an epoch
						}
						local.Pause(d)
						if err := remote.Pause(ctx, d); err != nil {
							t.Fatalf("step %d: Pause(%v): %v", step, d, err)
						}
					case k < 14:
						r := rates[rng.IntN(len(rates))]
						if local.Level()*float64(r.period)/r.maxRate >= 1<<53 {
							break // past the span in which the script is exact to the nanosecond
						}
						local.SetRate(r.maxRate, r.period)
						if err := remote.SetRate(ctx, r.maxRate, r.period); err != nil {
							t.Fatalf("step %d: SetRate(%v, %v): %v", step, r.maxRate, r.period, err)
						}
						drift += r.maxRate / float64(r.period)
					case k < 20:
						// Whole microseconds, as TIME has them.
						d := time.Duration(rng.Int64N(int64(local.Period())/1000+1)) * time.Microsecond
						if rng.IntN(30) == 0 {
							d = 20 * time.Hour
						}
						c.Advance(d)
					default:
						a := amount()
						if now, sure := fits(a); sure {
							matchAcquire(t, c, local, remote, a, now, drift, rng, step)
						}
					}
				}
			})
		})
	}
}

// matchAcquire calls Acquire(a) on local and remote with the same
// deadline, at least a second away so that the round trip has the time it
// needs, and requires the same outcome; now says whether a fits in the
// local bucket now. See TestMatchesLocalLimiter.
func matchAcquire(t *testing.T, c *clocktest.Clock, local *ratelimit.Limiter, remote *Limiter, a float64,
	now bool, drift float64, rng *rand.Rand, step int) {
	t.Helper()
	ctx := context.Background()
	// The local turn, in the wait of a deadline it cannot meet, which takes
	// nothing; the script's may be later by the drift.
	var wait time.Duration
	if !now {
		probe, cancel := c.WithTimeout(ctx, 1)
		err := local.Acquire(probe, a)
		cancel()
		var de *ratelimit.DeadlineError
		if !errors.As(err, &de) {
			t.Fatalf("step %d at %v: local Acquire(%v) with a deadline 1ns away = %v; want a *DeadlineError", step, c.Elapsed(), a, err)
		}
		wait = de.Wait
	}
	slack := time.Duration(math.Ceil(drift * float64(local.Period()) / local.MaxRate()))
	d := time.Second + time.Duration(rng.Int64N(int64(local.Period())))
	refused := !now && wait >= time.Second && rng.IntN(2) == 0
	if refused {
		d = time.Second + time.Duration(rng.Int64N(int64(wait-time.Second)+1)) // at or before the turn
	} else if !now {
		d = max(d, wait+slack+1) // after the turn
	}
	dctx, cancel := c.WithTimeout(ctx, d)
	defer cancel()
	lch := make(chan error, 1)
	go func() { lch <- local.Acquire(dctx, a) }()
	rch := acquireAt(dctx, c, remote, a)
	c.Settle()
	var lerr error
	select {
	case lerr = <-lch:
	default:
		// Both wait: cancel them.
		if now || refused {
			t.Fatalf("step %d at %v: local Acquire(%v) with a deadline %v away waits; want an answer at once", step, c.Elapsed(), a, d)
		}
		select {
		case r := <-rch:
			t.Fatalf("step %d at %v: Acquire(%v) with a deadline %v away = %v; the local limiter waits", step, c.Elapsed(), a, d, r.err)
		default:
		}
		cancel()
		c.Settle()
		if err := <-lch; !errors.Is(err, context.Canceled) {
			t.Fatalf("step %d: cancelled local Acquire(%v) = %v", step, a, err)
		}
		if r := <-rch; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("step %d: cancelled Acquire(%v) = %v", step, a, r.err)
		}
		return
	}
	var r result
	select {
	case r = <-rch:
	default:
		t.Fatalf("step %d at %v: Acquire(%v) with a deadline %v away waits; local limiter says %v", step, c.Elapsed(), a, d, lerr)
	}
	var lde, rde *ratelimit.DeadlineError
	switch {
	case lerr == nil && now:
		if r.err != nil {
			t.Fatalf("step %d at %v: Acquire(%v) = %v; the local limiter admits at once", step, c.Elapsed(), a, r.err)
		}
	case errors.As(lerr, &lde) && refused && lde.Wait == wait:
		if !errors.As(r.err, &rde) || rde.Wait < wait || rde.Wait > wait+slack {
			t.Fatalf("step %d at %v: Acquire(%v) with a deadline %v away = %v; local limiter says %v (slack %v)", step, c.Elapsed(), a, d, r.err, lerr, slack)
		}
	default:
		t.Fatalf("step %d at %v: local Acquire(%v) with a deadline %v away = %v; want %s", step, c.Elapsed(), a, d, lerr,
			map[bool]string{true: "nil at once", false: fmt.Sprintf("a *DeadlineError with the wait %v", wait)}[now])
	}
}

// acquireAt starts Acquire(ctx, amount) on l, and returns a channel that
// gets when it returned (as time since clocktest.Start) and its error.
type result struct {
	at  time.Duration
	err error
}

func acquireAt(ctx context.Context, c *clocktest.Clock, l *Limiter, amount float64) <-chan result {
	ch := make(chan result, 1)
	go func() {
		err := l.Acquire(ctx, amount)
		ch <- result{c.Elapsed(), err}
	}()
	c.Settle()
	return ch
}

// waitFor advances the clock a millisecond at a time until ch has a result,
// for at most limit.
func waitFor(t *testing.T, c *clocktest.Clock, ch <-chan result, limit time.Duration) result {
	t.Helper()
	for start := c.Elapsed(); c.Elapsed()-start <= limit; c.Advance(time.Millisecond) {
		select {
		case r := <-ch:
			return r
		default:
		}
	}
	t.Fatalf("Acquire did not return within %v", limit)
	return result{}
}

// TestDripTables checks the admission times of the aiolimiter docs'
// examples, callers arriving 10ms apart, as ratelimit's test does.
func TestDripTables(t *testing.T) {
	addr := redisAddr(t)
	for _, d := range clocktest.Drips {
		t.Run(d.Name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				rdb := newClient(t, addr)
				lim := onMockTime(New(rdb, testKey(t, rdb), d.MaxRate, d.Period, WithClock(c)), c)
				chs := make([]<-chan result, len(d.Want))
				for i := range chs {
					c.AdvanceTo(t, time.Duration(i)*d.Gap)
					chs[i] = acquireAt(context.Background(), c, lim, 1)
				}
				for i, ch := range chs {
					r := waitFor(t, c, ch, 20*time.Second)
					if r.err != nil || r.at != d.Want[i] {
						t.Errorf("caller %d admitted at %v (%v), want %v", i, r.at, r.err, d.Want[i])
					}
				}
			})
		})
	}
}

// TestWorkedExample checks the example of the package documentation: two
// processes, FIFO turns, Level counting reservations, and a cancelled
// waiter giving its turn back.
func TestWorkedExample(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdbA, rdbB := newClient(t, addr), newClient(t, addr)
		key := testKey(t, rdbA)
		a := onMockTime(New(rdbA, key, 4, 8*time.Second, WithClock(c)), c)
		b := onMockTime(New(rdbB, key, 4, 8*time.Second, WithClock(c)), c)

		if ok, err := a.TryAcquire(ctx, 3); !ok || err != nil {
			t.Fatalf("A TryAcquire(3) at 0s = %v, %v; want true", ok, err)
		}
		if err := b.Acquire(ctx, 1); err != nil {
			t.Fatalf("B Acquire(1) at 0s: %v", err)
		}
		bTurn := acquireAt(ctx, c, b, 1)
		c.AdvanceTo(t, 500*time.Millisecond)
		actx, cancel := context.WithCancel(ctx)
		aTurn := acquireAt(actx, c, a, 1)
		c.AdvanceTo(t, time.Second)
		if lv, err := a.Level(ctx); lv != 5.5 || err != nil {
			t.Errorf("Level at 1s = %v, %v; want 5.5", lv, err)
		}
		cancel()
		c.Settle()
		if r := <-aTurn; !errors.Is(r.err, context.Canceled) || r.at != time.Second {
			t.Errorf("cancelled A returned %v at %v; want context.Canceled at 1s", r.err, r.at)
		}
		next := acquireAt(ctx, c, a, 1)
		c.AdvanceTo(t, 3*time.Second)
		if ok, err := b.TryAcquire(ctx, 0.001); ok || err != nil {
			t.Errorf("TryAcquire(0.001) at 3s = %v, %v; want false: callers wait", ok, err)
		}
		if r := waitFor(t, c, bTurn, time.Minute); r.err != nil || r.at != 2*time.Second {
			t.Errorf("B's second Acquire returned %v at %v; want nil at 2s", r.err, r.at)
		}
		if r := waitFor(t, c, next, time.Minute); r.err != nil || r.at != 4*time.Second {
			t.Errorf("the caller after the cancellation returned %v at %v; want nil at 4s (A's turn)", r.err, r.at)
		}
	})
}

// giveBackKit returns the helpers of the tests of give-backs on lim, a
// limiter of one unit a second: level checks Level, waiter queues an
// Acquire(1) that cancel ends, and cancelled cancels one and checks it
// returned context.Canceled.
func giveBackKit(t *testing.T, c *clocktest.Clock, lim *Limiter) (
	level func(want float64),
	waiter func() (context.CancelFunc, <-chan result),
	cancelled func(context.CancelFunc, <-chan result),
) {
	ctx := context.Background()
	level = func(want float64) {
		t.Helper()
		if lv, err := lim.Level(ctx); lv != want || err != nil {
			t.Errorf("Level at %v = %v, %v; want %v", c.Elapsed(), lv, err, want)
		}
	}
	waiter = func() (context.CancelFunc, <-chan result) {
		wctx, cancel := context.WithCancel(ctx)
		return cancel, acquireAt(wctx, c, lim, 1)
	}
	cancelled = func(cancel context.CancelFunc, ch <-chan result) {
		t.Helper()
		cancel()
		c.Settle()
		if r := <-ch; !errors.Is(r.err, context.Canceled) {
			t.Errorf("cancelled waiter returned %v", r.err)
		}
	}
	return level, waiter, cancelled
}

// TestCancelGivesBack checks which cancelled reservations go back: those
// that no later change to the bucket rests on.
func TestCancelGivesBack(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		lim := onMockTime(New(rdb, testKey(t, rdb), 1, time.Second, WithClock(c)), c)
		level, waiter, cancelled := giveBackKit(t, c, lim)

		if err := lim.Acquire(ctx, 1); err != nil {
			t.Fatal(err)
		}
		cancel1, w1 := waiter() // turn at 1s
		cancel2, w2 := waiter() // turn at 2s
		c.AdvanceTo(t, 500*time.Millisecond)
		level(2.5)
		cancelled(cancel1, w1) // w2 rests on it: it stays
		level(2.5)
		cancel3, w3 := waiter() // turn at 3s
		level(3.5)
		cancelled(cancel3, w3) // the last: back
		level(2.5)
		cancelled(cancel2, w2) // now the last: back
		level(1.5)
		w4 := acquireAt(ctx, c, lim, 1)
		if r := waitFor(t, c, w4, time.Minute); r.err != nil || r.at != 2*time.Second {
			t.Errorf("next waiter returned %v at %v; want nil at 2s (w1's units drained unused)", r.err, r.at)
		}
	})
}

// TestDeadline checks that a deadline at or before the caller's turn fails
// at once, taking nothing, as in ratelimit, and that one just after it is
// met.
func TestDeadline(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		lim := onMockTime(New(rdb, testKey(t, rdb), 2, 2*time.Second, WithClock(c)), c)
		if err := lim.Acquire(ctx, 2); err != nil {
			t.Fatal(err)
		}
		for _, d := range []time.Duration{999 * time.Millisecond, time.Second} {
			short, cancel := c.WithTimeout(ctx, d)
			defer cancel()
			err := lim.Acquire(short, 1)
			if !errors.Is(err, context.DeadlineExceeded) || c.Elapsed() != 0 {
				t.Errorf("Acquire with a deadline %v before its turn = %v at %v; want context.DeadlineExceeded at once", time.Second-d, err, c.Elapsed())
			}
			t.Log(err)
			if lv, err := lim.Level(ctx); lv != 2 || err != nil {
				t.Errorf("Level after the refusal = %v, %v; want 2: nothing taken", lv, err)
			}
		}
		after, cancel2 := c.WithTimeout(ctx, time.Second+time.Millisecond)
		defer cancel2()
		if r := waitFor(t, c, acquireAt(after, c, lim, 1), time.Minute); r.err != nil || r.at != time.Second {
			t.Errorf("Acquire with a deadline after its turn returned %v at %v; want nil at 1s", r.err, r.at)
		}
	})
}

// TestDeadlineAfterReply checks that a reservation whose turn, counted from
// the reply's arrival, falls past the deadline goes back at once.
func TestDeadlineAfterReply(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		slow := &hooked{Scripter: rdb}
		lim := onMockTime(New(slow, key, 1, time.Second, WithClock(c)), c)
		if err := lim.Acquire(ctx, 1); err != nil {
			t.Fatal(err)
		}
		dctx, cancel := c.WithTimeout(ctx, time.Second)
		defer cancel()
		slow.after = func() { // the reply takes 100ms
			slow.after = nil
			c.Add(100 * time.Millisecond)
		}
		err := lim.Acquire(dctx, 1)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Acquire = %v; want context.DeadlineExceeded", err)
		}
		if lv, err := lim.Level(ctx); lv != 0.9 || err != nil {
			t.Errorf("Level at %v = %v, %v; want 0.9: the reservation given back", c.Elapsed(), lv, err)
		}
	})
}

// TestSetRateWaiters checks that SetRate fails the waiters whose amount
// exceeds the new capacity, and that the others keep their turns.
func TestSetRateWaiters(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		lim := onMockTime(New(rdb, testKey(t, rdb), 2, 2*time.Second, WithClock(c)), c)
		if err := lim.Acquire(ctx, 2); err != nil {
			t.Fatal(err)
		}
		big := acquireAt(ctx, c, lim, 2)   // turn at 2s
		small := acquireAt(ctx, c, lim, 1) // turn at 3s
		c.AdvanceTo(t, 500*time.Millisecond)
		if err := lim.SetRate(ctx, 1, time.Second); err != nil {
			t.Fatal(err)
		}
		c.Settle()
		if r := <-big; !errors.Is(r.err, ratelimit.ErrExceedsCapacity) || r.at != 500*time.Millisecond {
			t.Errorf("waiter for 2 after SetRate(1, 1s) returned %v at %v; want ErrExceedsCapacity at once", r.err, r.at)
		}
		if r := waitFor(t, c, small, time.Minute); r.err != nil || r.at != 3*time.Second {
			t.Errorf("waiter for 1 returned %v at %v; want nil at 3s, its turn", r.err, r.at)
		}
	})
}

// TestBadAmounts checks that refused amounts name their values, wrap
// ratelimit's errors and make no round trip.
func TestBadAmounts(t *testing.T) {
	addr := redisAddr(t)
	rdb := newClient(t, addr)
	var n counter
	rdb.AddHook(&n)
	lim := New(rdb, testKey(t, rdb), 10, time.Second)
	ctx := context.Background()
	tests := []struct {
		amount float64
		want   error
		text   string
	}{
		{11, ratelimit.ErrExceedsCapacity, "redisbucket: acquire 11 exceeds capacity 10"},
		{-1, ratelimit.ErrInvalidAmount, "redisbucket: acquire -1: amount must be a finite number >= 0"},
		{math.NaN(), ratelimit.ErrInvalidAmount, "redisbucket: acquire NaN: amount must be a finite number >= 0"},
		{math.Inf(1), ratelimit.ErrInvalidAmount, "redisbucket: acquire +Inf: amount must be a finite number >= 0"},
	}
	for _, tt := range tests {
		err := lim.Acquire(ctx, tt.amount)
		if !errors.Is(err, tt.want) || err.Error() != tt.text {
			t.Errorf("Acquire(%v) = %v; want %q", tt.amount, err, tt.text)
		}
		for name, f := range map[string]func(context.Context, float64) (bool, error){"TryAcquire": lim.TryAcquire, "HasCapacity": lim.HasCapacity} {
			if ok, err := f(ctx, tt.amount); ok || !errors.Is(err, tt.want) {
				t.Errorf("%s(%v) = %v, %v; want false, %v", name, tt.amount, ok, err, tt.want)
			}
		}
	}
	if err := lim.Acquire(ctx, 0); err != nil {
		t.Errorf("Acquire(0) = %v", err)
	}
	for name, f := range map[string]func(context.Context, float64) (bool, error){"TryAcquire": lim.TryAcquire, "HasCapacity": lim.HasCapacity} {
		if ok, err := f(ctx, 0); !ok || err != nil {
			t.Errorf("%s(0) = %v, %v; want true", name, ok, err)
		}
	}
	if got := n.n.Load(); got != 0 {
		t.Errorf("%d round trips for refused amounts and amounts of 0; want 0", got)
	}
}

func TestNewPanics(t *testing.T) {
	rdb := newClient(t, "127.0.0.1:1")
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"nil client", func() { New(nil, "k", 1, time.Second) }, "redisbucket: New: nil client"},
		{"empty key", func() { New(rdb, "", 1, time.Second) }, "redisbucket: New: empty key"},
		{"zero rate", func() { New(rdb, "k", 0, time.Second) }, "redisbucket: New: maxRate 0 must be a finite number > 0"},
		{"zero period", func() { New(rdb, "k", 1, 0) }, "redisbucket: New: period 0s must be > 0 and at most 10007h59m57.018963968s"},
		{"bad share", func() { WithFallback(1.5, nil) }, "redisbucket: WithFallback: share 1.5 must be > 0 and <= 1"},
		{"SetRate", func() { New(rdb, "k", 1, time.Second).SetRate(context.Background(), math.Inf(1), time.Second) }, "redisbucket: SetRate: maxRate +Inf must be a finite number > 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != tt.want {
					t.Errorf("panic %v; want %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
}

// TestRoundTrips checks that each call is one round trip once the server
// has the script, and that a cancelled wait adds one to give its
// reservation back.
func TestRoundTrips(t *testing.T) {
	addr := redisAddr(t)
	rdb := newClient(t, addr)
	var n counter
	rdb.AddHook(&n)
	lim := New(rdb, testKey(t, rdb), 10, time.Hour)
	ctx := context.Background()
	if _, err := lim.Level(ctx); err != nil { // loads the script if need be
		t.Fatal(err)
	}
	calls := []struct {
		name string
		f    func() error
	}{
		{"TryAcquire", func() error { _, err := lim.TryAcquire(ctx, 1); return err }},
		{"HasCapacity", func() error { _, err := lim.HasCapacity(ctx, 1); return err }},
		{"Acquire", func() error { return lim.Acquire(ctx, 1) }},
		{"Level", func() error { _, err := lim.Level(ctx); return err }},
		{"Pause", func() error { return lim.Pause(ctx, time.Millisecond) }},
		{"SetRate", func() error { return lim.SetRate(ctx, 10, time.Hour) }},
	}
	for _, call := range calls {
		before := n.n.Load()
		if err := call.f(); err != nil {
			t.Fatalf("%s: %v", call.name, err)
		}
		if got := n.n.Load() - before; got != 1 {
			t.Errorf("%s made %d round trips; want 1", call.name, got)
		}
	}
	before := n.n.Load()
	wctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := lim.Acquire(wctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context = %v", err)
	}
	if got := n.n.Load() - before; got != 0 {
		t.Errorf("Acquire with a cancelled context made %d round trips; want 0", got)
	}
}

// TestEpochMoves checks that a key in use for more than a day counts its
// times from a later second, keeping them exact, and that the bucket is
// the same afterwards.
func TestEpochMoves(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lim := onMockTime(New(rdb, key, 4, time.Second, WithClock(c)), c)
		if err := lim.Pause(ctx, 30*time.Hour); err != nil {
			t.Fatal(err)
		}
		epoch := func() string {
			t.Helper()
			v, err := rdb.Get(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(v) != 56 {
				t.Fatalf("key holds %q, not seven float64s", v)
			}
			return fmt.Sprint(int64(math.Float64frombits(binary.BigEndian.Uint64([]byte(v[:8])))))
		}
		if got, want := epoch(), fmt.Sprint(clocktest.Start.Unix()); got != want {
			t.Fatalf("epoch %s; want %s, the first call's second", got, want)
		}
		c.Advance(25*time.Hour + 1500*time.Microsecond)
		// The pause left the bucket empty at 30h+750ms (a unit fits at 30h);
		// units are 250ms.
		want := float64(30*time.Hour+750*time.Millisecond-c.Elapsed()) / float64(250*time.Millisecond)
		if lv, err := lim.Level(ctx); lv != want || err != nil {
			t.Errorf("Level after 25h = %v, %v; want %v", lv, err, want)
		}
		if got, want := epoch(), fmt.Sprint(c.Now().Unix()); got != want {
			t.Errorf("epoch %s after 25h; want %s", got, want)
		}
	})
}

// TestKeyExpires checks, with the server's own clock, that a key expires
// once its bucket has drained, and that reading an empty bucket creates no
// key.
func TestKeyExpires(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	rdb := newClient(t, addr)
	key := testKey(t, rdb)
	lim := New(rdb, key, 1000, time.Second) // a unit drains in 1ms
	if _, err := lim.Level(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := lim.HasCapacity(ctx, 1); !ok || err != nil {
		t.Fatalf("HasCapacity(1) = %v, %v", ok, err)
	}
	if n := rdb.Exists(ctx, key).Val(); n != 0 {
		t.Fatalf("Level and HasCapacity on an empty bucket created the key")
	}
	if ok, err := lim.TryAcquire(ctx, 50); !ok || err != nil {
		t.Fatalf("TryAcquire(50) = %v, %v", ok, err)
	}
	// 50 units drain in 50ms: the key lives at most that, plus the 3ms it
	// lingers, so that its expiry is never taken for a loss.
	if ttl := rdb.PTTL(ctx, key).Val(); ttl > 53*time.Millisecond {
		t.Errorf("PTTL %v; want at most 53ms", ttl)
	}
	for i := 0; rdb.Exists(ctx, key).Val() != 0; i++ {
		if i == 1000 {
			t.Fatal("the key outlived its bucket by 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
