package redisbucket

// Adversarial tests of Limiter.Allow and Keyed.Allow.
// TestAllowFullBurstFitsOnOddLongPeriod failed on the first version of the
// script; TestAllowAttack* tests probe hard cases that held.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// TestAllowFullBurstFitsOnOddLongPeriod: the first version of the script
// refused, in Allow and TryAcquire, a full burst on an empty bucket for ever, with a
// RetryAfter of a few nanoseconds each time, for a period beyond 2^54 ns
// (208 days) that is not a multiple of 4 ns: 2^54-2 ns here, 1 unit.
//
// The script's take (and allow) compares the new tat, now+cost rounded
// UP to a float64, with now+period rounded DOWN: beyond 2^53 float64s are
// 2, 4, 8 ns apart, and the server's now is a multiple of 1000 ns, so
// now+period falls between two float64s, and the rounded-up sum lies
// above the rounded-down limit although the exact sums are equal. The
// Decision says 1 unit remains and the bucket is empty (Reset 0), yet
// Allow(1) is refused, and retrying at RetryAfter (a few ns, the next
// microsecond of the server's clock) is refused again: a client told to
// come back never gets in. Acquire, whose reserve compares the other way,
// is admitted a few ns late. The same rounding made Remaining overstate
// on a bucket that is not empty. The script now compares the lead on now
// plus the cost, each rounded up, with the period.
func TestAllowFullBurstFitsOnOddLongPeriod(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		period := time.Duration(1<<54 - 2)
		lim := onMockTime(New(rdb, testKey(t, rdb), 1, period, WithClock(c)), c)
		c.Advance(time.Microsecond) // the server's now is not 0 within its second
		if d := lim.Allow(ctx, 0); d != (ratelimit.Decision{OK: true, Remaining: 1}) {
			t.Fatalf("Allow(0) on a new key = %+v; want OK with 1 remaining, Reset 0", d)
		}
		local := ratelimit.New(1, period, ratelimit.WithClock(c))
		if !local.TryAcquire(1) {
			t.Fatal("ratelimit's TryAcquire(1) on an empty bucket refused")
		}
		var refused int
		var last ratelimit.Decision
		for range 10 {
			d := lim.Allow(ctx, 1)
			if d.OK {
				break
			}
			refused++
			last = d
			if d.RetryAfter <= 0 || d.RetryAfter > time.Microsecond {
				break
			}
			// Come back when told: the next microsecond of the server's clock
			// at or after RetryAfter.
			c.Advance(time.Microsecond)
		}
		if refused > 0 {
			ok, err := lim.TryAcquire(ctx, 1)
			t.Errorf("Allow(1) on an empty bucket of 1 unit per %v refused %d times in a row, each time coming back at its RetryAfter "+
				"(last %+v; TryAcquire(1) now: %v, %v); ratelimit.Limiter admits it at once", period, refused, last, ok, err)
		}

		// The same rounding makes Remaining overstate on a bucket that is
		// not empty: 3 units per 2^54-2 ns, after Allow(1), the 2 units
		// (less an ulp) it reports do not fit.
		lim3 := onMockTime(New(rdb, testKey(t, rdb), 3, period, WithClock(c)), c)
		d := lim3.Allow(ctx, 1)
		if !d.OK || d.Remaining <= 1 {
			t.Fatalf("Allow(1) on a new key of 3 units = %+v", d)
		}
		if ok, err := lim3.HasCapacity(ctx, d.Remaining); !ok || err != nil {
			t.Errorf("Allow(1) of 3 units per %v = %+v, but HasCapacity(%v) = %v, %v: Remaining is more than TryAcquire admits",
				period, d, d.Remaining, ok, err)
		}
	})
}

// allowAttackRates are long periods, beyond 2^53 ns, where the script's
// sums round, with units of a whole and of a fractional number of
// nanoseconds, and a short one for comparison. Each period is a whole
// number of microseconds, as periods written by people are.
var allowAttackRates = []struct {
	maxRate float64
	period  time.Duration
}{
	{3, 200 * 24 * time.Hour},
	{7, 365 * 24 * time.Hour},
	{2.7, 300*24*time.Hour + 8*time.Microsecond},
	{1000, 400 * 24 * time.Hour},
	{1, 416 * 24 * time.Hour},
	{3, time.Second},
	{5e8, time.Second},
	{1e-6, time.Second},
	{1e6 / 3, 7 * time.Millisecond},
}

// TestAllowAttackTwinsLongPeriods drives two keys of the same rate through
// the same random calls on the mock clock, one taking with Allow and the
// other with TryAcquire, on long periods beyond 2^53 ns, with Pauses,
// SetRates (on both), rescales by a process at another rate (on both) and
// keys that Redis loses (both), and holds every Decision to what happens:
//   - OK is TryAcquire's answer on the twin, and their levels stay equal;
//   - Remaining fits (HasCapacity), and so does its whole part;
//   - a refusal's RetryAfter is > 0; the amount does not fit at the last
//     microsecond of the server before it, and fits at the first at or
//     after it;
//   - after Reset (rounded up to the microsecond) the level is 0 and
//     MaxRate fits.
func TestAllowAttackTwinsLongPeriods(t *testing.T) {
	addr := redisAddr(t)
	var probes, resets, losses int
	for i, r := range allowAttackRates {
		t.Run(fmt.Sprintf("%v per %v", r.maxRate, r.period), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				rng := rand.New(rand.NewPCG(uint64(i), 0xa77))
				ka, kb := testKey(t, rdb), testKey(t, rdb)
				a := onMockTime(New(rdb, ka, r.maxRate, r.period, WithClock(c)), c)
				b := onMockTime(New(rdb, kb, r.maxRate, r.period, WithClock(c)), c)
				// Another process, at another rate, on each key.
				oa := onMockTime(New(rdb, ka, r.maxRate*2, r.period, WithClock(c)), c)
				ob := onMockTime(New(rdb, kb, r.maxRate*2, r.period, WithClock(c)), c)
				cur := r.maxRate
				c.Advance(time.Duration(1+rng.IntN(999)) * time.Microsecond)
				// Every read is made on both twins, at the same time of the
				// server: a read may write the key too (moving its epoch, which
				// rounds beyond 2^53 ns, or writing back a lost key, full from
				// its own now), and the twins must stay alike.
				has := func(amount float64) bool {
					t.Helper()
					x, errA := a.HasCapacity(ctx, amount)
					y, errB := b.HasCapacity(ctx, amount)
					if errA != nil || errB != nil || x != y {
						t.Fatalf("HasCapacity(%v) on the twins: %v, %v and %v, %v", amount, x, errA, y, errB)
					}
					return x
				}
				level := func() float64 {
					t.Helper()
					x, errA := a.Level(ctx)
					y, errB := b.Level(ctx)
					if errA != nil || errB != nil || x != y {
						t.Fatalf("Level on the twins: %v, %v and %v, %v", x, errA, y, errB)
					}
					return x
				}
				usStep := int64(r.period / time.Microsecond / 4)
				for step := range 150 {
					switch k := rng.IntN(20); {
					case k < 11:
						amount := []float64{cur, 1, cur / 3, cur * rng.Float64(), math.Floor(cur*rng.Float64()*4) / 4}[rng.IntN(5)]
						amount = min(amount, cur)
						d := a.Allow(ctx, amount)
						ok, err := b.TryAcquire(ctx, amount)
						if err != nil || d.Err != nil {
							t.Fatalf("step %d: Allow(%v) = %+v; TryAcquire: %v", step, amount, d, err)
						}
						if d.OK != ok {
							t.Fatalf("step %d at %v: Allow(%v) = %+v, TryAcquire %v", step, c.Elapsed(), amount, d, ok)
						}
						level()
						if d.RetryAfter < 0 || d.Reset < 0 || !(d.Remaining >= 0) || d.Remaining > cur || (!d.OK && d.RetryAfter == 0) {
							t.Fatalf("step %d at %v: Allow(%v) = %+v (MaxRate %v)", step, c.Elapsed(), amount, d, cur)
						}
						if d.Remaining > 0 && !has(d.Remaining) {
							t.Fatalf("step %d at %v: Allow(%v) = %+v, but HasCapacity(Remaining) is false", step, c.Elapsed(), amount, d)
						}
						if f := math.Floor(d.Remaining); f >= 1 && !has(f) {
							t.Fatalf("step %d at %v: Allow(%v) = %+v, but HasCapacity(%v) is false", step, c.Elapsed(), amount, d, f)
						}
						switch {
						case !d.OK && rng.IntN(2) == 0:
							probes++
							at := c.Now().Truncate(time.Microsecond)
							due := at.Add(d.RetryAfter)
							before := due.Add(-time.Nanosecond).Truncate(time.Microsecond)
							if before.After(c.Now()) {
								c.Advance(before.Sub(c.Now()))
								if has(amount) {
									t.Fatalf("step %d: Allow(%v) = %+v, but it fits %v before", step, amount, d, due.Sub(before))
								}
							}
							c.Advance(before.Add(time.Microsecond).Sub(c.Now()))
							if !has(amount) {
								t.Fatalf("step %d: Allow(%v) = %+v at %v, but it does not fit at %v", step, amount, d, at.Sub(clocktest.Start), c.Elapsed())
							}
						case rng.IntN(3) == 0:
							resets++
							end := c.Now().Truncate(time.Microsecond).Add(d.Reset)
							if up := end.Truncate(time.Microsecond); up.Before(end) {
								end = up.Add(time.Microsecond)
							}
							c.Advance(end.Sub(c.Now()))
							if l := level(); l != 0 || !has(cur) {
								t.Fatalf("step %d: Allow(%v) = %+v; after Reset, level %v, HasCapacity(%v) %v", step, amount, d, l, cur, has(cur))
							}
						}
					case k < 12:
						d := time.Duration(rng.Int64N(int64(r.period)))
						if err := a.Pause(ctx, d); err != nil {
							t.Fatal(err)
						}
						if err := b.Pause(ctx, d); err != nil {
							t.Fatal(err)
						}
					case k < 13:
						// Another process's call rescales both keys to its rate, and
						// the next of ours back.
						if _, err := oa.HasCapacity(ctx, r.maxRate); err != nil {
							t.Fatal(err)
						}
						if _, err := ob.HasCapacity(ctx, r.maxRate); err != nil {
							t.Fatal(err)
						}
					case k < 14:
						cur = r.maxRate * []float64{0.5, 1, 1.5}[rng.IntN(3)]
						if err := a.SetRate(ctx, cur, r.period); err != nil {
							t.Fatal(err)
						}
						if err := b.SetRate(ctx, cur, r.period); err != nil {
							t.Fatal(err)
						}
					case k < 15:
						// Redis loses both keys; the next call writes each back full.
						losses++
						if err := rdb.Del(ctx, ka, kb).Err(); err != nil {
							t.Fatal(err)
						}
					default:
						c.Advance(time.Duration(1+rng.Int64N(usStep)) * time.Microsecond)
					}
				}
			})
		})
	}
	t.Logf("%d RetryAfter probes, %d Reset probes, %d losses", probes, resets, losses)
}

// TestAllowAttackFallbackPause follows Allow across a fallback that a
// Pause was taken on: while Redis is down the local limiter answers, and
// is paused; the probe that switches back pauses the bucket for what is
// left. Allow on Redis then must report the pause: refused, nothing
// remaining, RetryAfter the rest of the pause (to the microsecond the
// server reads), and a Reset past it; and at RetryAfter it must admit.
func TestAllowAttackFallbackPause(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		h := &hooked{Scripter: newClient(t, addr)}
		rdb := newClient(t, addr)
		lim := onMockTime(New(h, testKey(t, rdb), 10, 10*time.Second, WithClock(c),
			WithFallback(0.5, nil), WithProbeInterval(time.Second)), c)
		if d := lim.Allow(ctx, 1); !d.OK || d.Remaining != 9 {
			t.Fatalf("Allow(1) on Redis = %+v", d)
		}
		h.down.Store(true)
		if d := lim.Allow(ctx, 1); d.Err != nil {
			t.Fatalf("Allow(1) that switches to the fallback = %+v", d)
		}
		if err := lim.Pause(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if d := lim.Allow(ctx, 0); !d.OK || d.Remaining != 0 || d.Reset < 10*time.Second {
			t.Fatalf("Allow(0) on the paused fallback = %+v; want nothing remaining, Reset past the pause", d)
		}
		h.down.Store(false)
		for range 3 { // three probes a second apart switch back
			c.Advance(time.Second)
			lim.Allow(ctx, 0)
		}
		// Back on Redis at 3s: paused until 10s.
		d := lim.Allow(ctx, 1)
		if d.OK || d.Err != nil || d.Remaining != 0 || d.RetryAfter != 7*time.Second || d.Reset < 7*time.Second {
			t.Fatalf("Allow(1) back on Redis during the carried pause = %+v; want refused, RetryAfter 7s", d)
		}
		c.Advance(d.RetryAfter)
		if d := lim.Allow(ctx, 1); !d.OK {
			t.Fatalf("Allow(1) at the end of the pause = %+v; want OK", d)
		}
	})
}

// TestAllowAttackKeyedLostKeyWithWaiters checks a Keyed's Allow on a key
// that Redis lost while callers held reserved turns: the key comes back
// full and behind the turns the Keyed saw, so that Allow refuses, says a
// RetryAfter after the last turn, and its Reset leaves room for MaxRate
// only once the turns have drained; the waiters keep their turns.
func TestAllowAttackKeyedLostKeyWithWaiters(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rdb := newClient(t, addr)
		prefix := testPrefix(t, rdb)
		k := onMockTimeKeyed(NewKeyed(rdb, prefix, 4, 8*time.Second, WithClock(c)), c)
		if d := k.Allow(ctx, "x", 4); !d.OK {
			t.Fatalf("Allow(4) = %+v", d)
		}
		w1 := acquireKeyAt(ctx, c, k, "x", 2) // turn at 4s
		w2 := acquireKeyAt(ctx, c, k, "x", 2) // turn at 8s
		c.AdvanceTo(t, time.Second)
		if err := rdb.Del(ctx, prefix+"x").Err(); err != nil {
			t.Fatal(err)
		}
		d := k.Allow(ctx, "x", 1)
		// The bucket was seen to hold units until 16s: the next unit at 10s.
		if d.OK || d.Err != nil || d.Remaining != 0 || d.RetryAfter < 9*time.Second || d.Reset < 15*time.Second {
			t.Fatalf("Allow(1) on the lost key at 1s = %+v; want refused, RetryAfter >= 9s, Reset >= 15s", d)
		}
		for i, w := range []<-chan result{w1, w2} {
			if r := waitFor(t, c, w, 10*time.Second); r.err != nil || r.at != []time.Duration{4 * time.Second, 8 * time.Second}[i] {
				t.Fatalf("waiter %d: %+v", i, r)
			}
		}
		c.AdvanceTo(t, time.Second+d.Reset)
		if ok, err := k.HasCapacity(ctx, "x", 4); !ok || err != nil {
			t.Fatalf("HasCapacity(4) after Reset: %v, %v", ok, err)
		}
	})
}

// TestAllowAttackConcurrent runs Allow on one key from many goroutines,
// through two Limiters sharing it as two processes would, against
// Acquire (some cancelled, some with deadlines), TryAcquire, Pause and
// SetRate (on both Limiters, so that neither rescales the key back),
// while the mocked clock moves in steps: for the race detector, and for
// the Decision's invariants: no Err but ErrExceedsCapacity for an amount
// over a capacity that SetRate lowered meanwhile; RetryAfter and Reset
// >= 0; a refusal's RetryAfter > 0; 0 <= Remaining <= the largest
// MaxRate. Every Acquire must have returned at the end.
func TestAllowAttackConcurrent(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lims := []*Limiter{
			onMockTime(New(rdb, key, 10, time.Second, WithClock(c)), c),
			onMockTime(New(newClient(t, addr), key, 10, time.Second, WithClock(c)), c),
		}
		ctx, cancel := context.WithCancel(context.Background())
		errs := make(chan string, 64)
		report := func(format string, args ...any) {
			select {
			case errs <- fmt.Sprintf(format, args...):
			default:
			}
		}
		var mu sync.Mutex
		var allows, oks, acquired int
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 11))
				lim := lims[g%2]
				for i := 0; ctx.Err() == nil && i < 100; i++ {
					switch k := rng.IntN(10); {
					case k < 5:
						a := float64(rng.IntN(4))
						d := lim.Allow(ctx, a)
						mu.Lock()
						allows++
						if d.OK {
							oks++
						}
						mu.Unlock()
						switch {
						case d.Err != nil && !errors.Is(d.Err, ratelimit.ErrExceedsCapacity) && ctx.Err() == nil:
							report("Allow(%v): %v", a, d.Err)
						case d.RetryAfter < 0 || d.Reset < 0 || !(d.Remaining >= 0) || d.Remaining > 20 ||
							(!d.OK && d.Err == nil && d.RetryAfter <= 0):
							report("Allow(%v) = %+v", a, d)
						}
					case k < 7:
						actx, acancel := context.WithCancel(ctx)
						if rng.IntN(2) == 0 {
							actx, acancel = c.WithTimeout(ctx, time.Duration(rng.Int64N(int64(time.Second))))
						}
						if lim.Acquire(actx, float64(1+rng.IntN(3))) == nil {
							mu.Lock()
							acquired++
							mu.Unlock()
						}
						acancel()
					case k < 8:
						_, _ = lim.TryAcquire(ctx, 1)
					case k < 9:
						if g == 0 {
							r := []float64{5, 10, 20}[rng.IntN(3)]
							for _, l := range lims {
								if err := l.SetRate(ctx, r, time.Second); err != nil && ctx.Err() == nil {
									report("SetRate: %v", err)
								}
							}
						}
					default:
						if err := lim.Pause(ctx, time.Duration(rng.Int64N(int64(300*time.Millisecond)))); err != nil && ctx.Err() == nil {
							report("Pause: %v", err)
						}
					}
					c.Sleep(time.Duration(1+rng.Int64N(50)) * time.Millisecond)
				}
			})
		}
		for range 600 {
			c.Advance(10 * time.Millisecond)
		}
		cancel()
		c.Advance(time.Second)
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		t.Logf("%d Allows, %d OK; %d Acquires admitted", allows, oks, acquired)
		if allows < 50 || oks < 10 || acquired < 5 {
			t.Errorf("too little happened to be sure")
		}
	})
}
