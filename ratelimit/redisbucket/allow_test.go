package redisbucket

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// allowRates take a whole number of nanoseconds per unit, divisible by 4,
// so that amounts in quarters cost exactly what they cost in
// ratelimit's ticks (see TestMatchesLocalLimiter).
var allowRates = []struct {
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

// pendingPair is an Acquire made on both sides of a differential run, not
// yet returned on both.
type pendingPair struct {
	key           string
	local, remote <-chan result
}

// TestAllowMatchesKeyed drives a ratelimit.Keyed and a Keyed on the same
// mock clock through the same random calls on three keys: Allow, Acquire
// left to wait its turn, Pause, amounts that can never fit, and clock steps
// in whole microseconds. Every decision must be the same at the same time:
// OK, RetryAfter, Remaining and Err alike (the rates and amounts cost whole
// nanoseconds, so no rounding differs). Reset must be the same while no
// caller waits on the key. While callers wait, Redis has their units in
// the bucket already, and Reset counts them: it must be the wait that
// ratelimit gives an amount of MaxRate, which fits once the bucket is
// empty behind them. Every Acquire must return at the same time on both
// sides. After each Allow, HasCapacity must admit Remaining and refuse the
// next float64 above it: Remaining is exactly what TryAcquire would admit.
//
// Pauses come only while no caller waits on the key: ratelimit moves the
// turns of waiters behind a pause, and Redis keeps them.
func TestAllowMatchesKeyed(t *testing.T) {
	addr := redisAddr(t)
	// What the Allows compared met, so that a schedule that misses a case
	// fails rather than passes untested.
	var admitted, refused, refusedWaiting, refusedPaused, fractional int
	t.Cleanup(func() {
		t.Logf("Allows: %d admitted, %d refused (%d while callers waited, %d during a pause), %d with a fraction of a unit remaining",
			admitted, refused, refusedWaiting, refusedPaused, fractional)
		if !t.Failed() && min(admitted, refused, refusedWaiting, refusedPaused, fractional) < 20 {
			t.Errorf("too few Allows of some kind to be sure")
		}
	})
	for seed := range uint64(24) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				// Cancelled when the test ends, also by a failure, so that
				// no waiter outlives it.
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				rdb := newClient(t, addr)
				rng := rand.New(rand.NewPCG(seed, 7))
				r := allowRates[rng.IntN(len(allowRates))]
				local := ratelimit.NewKeyed[string](r.maxRate, r.period, ratelimit.WithClock(c))
				remote := onMockTimeKeyed(NewKeyed(rdb, testPrefix(t, rdb), r.maxRate, r.period, WithClock(c)), c)
				keys := []string{"a", "b", "c"}
				amount := func() float64 {
					m := r.maxRate
					for {
						if a := []float64{0, 0.25, 0.5, 1, 1.5, m / 4, m, math.Floor(m*rng.Float64()*4) / 4}[rng.IntN(8)]; a <= m {
							return a
						}
					}
				}
				var pending []pendingPair
				waiting := map[string]int{}
				collect := func(step int) {
					t.Helper()
					pending = slices.DeleteFunc(pending, func(p pendingPair) bool {
						var lr, rr result
						var lok, rok bool
						select {
						case lr, lok = <-p.local:
						default:
						}
						select {
						case rr, rok = <-p.remote:
						default:
						}
						switch {
						case lok && rok:
							if lr.err != nil || rr.err != nil || lr.at != rr.at {
								t.Fatalf("step %d: Acquire on %s returned %v at %v; ratelimit's %v at %v", step, p.key, rr.err, rr.at, lr.err, lr.at)
							}
							waiting[p.key]--
							return true
						case lok || rok:
							t.Fatalf("step %d at %v: Acquire on %s returned on one side only (ratelimit %v, redis %v)", step, c.Elapsed(), p.key, lok, rok)
						}
						return false
					})
				}
				for step := range 300 {
					key := keys[rng.IntN(len(keys))]
					switch k := rng.IntN(24); {
					case k < 11:
						a := amount()
						want := local.Allow(key, a)
						got := remote.Allow(ctx, key, a)
						if got.Err != nil || got.OK != want.OK || got.RetryAfter != want.RetryAfter ||
							got.Remaining != want.Remaining {
							t.Fatalf("step %d at %v: Allow(%s, %v) = %+v; ratelimit's %+v", step, c.Elapsed(), key, a, got, want)
						}
						wantReset := want.Reset
						if waiting[key] > 0 {
							full := local.Allow(key, r.maxRate) // refused: callers wait
							if full.OK {
								t.Fatalf("step %d: ratelimit's Allow(%s, %v) admitted while callers wait", step, key, r.maxRate)
							}
							wantReset = full.RetryAfter
						}
						if got.Reset != wantReset {
							t.Fatalf("step %d at %v: Allow(%s, %v).Reset = %v; want %v (ratelimit's %+v, %d waiting)", step, c.Elapsed(), key, a, got.Reset, wantReset, want, waiting[key])
						}
						checkRemaining(t, step, got.Remaining, r.maxRate, func(a float64) (bool, error) { return remote.HasCapacity(ctx, key, a) })
						switch {
						case got.OK:
							admitted++
						case waiting[key] > 0:
							refused++
							refusedWaiting++
						case got.Reset > r.period:
							refused++
							refusedPaused++ // no waiters: only a pause's floor
						default:
							refused++
						}
						if got.Remaining != math.Trunc(got.Remaining) {
							fractional++
						}
					case k < 13:
						if len(pending) >= 4 {
							break
						}
						a := amount()
						lch := make(chan result, 1)
						go func() {
							err := local.Acquire(ctx, key, a)
							lch <- result{c.Elapsed(), err}
						}()
						c.Settle()
						pending = append(pending, pendingPair{key, lch, acquireKeyAt(ctx, c, remote, key, a)})
						waiting[key]++
					case k < 14:
						if waiting[key] > 0 {
							break // see above
						}
						d := time.Duration(rng.Int64N(int64(2 * r.period)))
						local.Pause(key, d)
						if err := remote.Pause(ctx, key, d); err != nil {
							t.Fatalf("step %d: Pause(%s, %v): %v", step, key, d, err)
						}
					case k < 15:
						a := []float64{-1, math.NaN(), math.Inf(1), r.maxRate * 2}[rng.IntN(4)]
						want, got := local.Allow(key, a), remote.Allow(ctx, key, a)
						if got.OK || want.OK || got.Err == nil || want.Err == nil ||
							errors.Is(got.Err, ratelimit.ErrInvalidAmount) != errors.Is(want.Err, ratelimit.ErrInvalidAmount) ||
							errors.Is(got.Err, ratelimit.ErrExceedsCapacity) != errors.Is(want.Err, ratelimit.ErrExceedsCapacity) {
							t.Fatalf("step %d: Allow(%s, %v) = %+v; ratelimit's %+v", step, key, a, got, want)
						}
					default:
						// Whole microseconds, as TIME has them.
						d := time.Duration(rng.Int64N(int64(r.period)/2000+1)+1) * time.Microsecond
						c.Advance(d)
					}
					collect(step)
				}
				for len(pending) > 0 {
					c.Advance(time.Millisecond)
					collect(-1)
				}
			})
		})
	}
}

// checkRemaining checks that rem is exactly what TryAcquire would admit
// now: hasCapacity admits it, and refuses the next float64 above it (when
// that is within the capacity).
func checkRemaining(t *testing.T, step int, rem, maxRate float64, hasCapacity func(float64) (bool, error)) {
	t.Helper()
	if rem > 0 {
		if ok, err := hasCapacity(rem); !ok || err != nil {
			t.Fatalf("step %d: HasCapacity(%v) = %v, %v after Allow said %v remain", step, rem, ok, err, rem)
		}
	}
	if next := math.Nextafter(rem, math.Inf(1)); next <= maxRate {
		if ok, err := hasCapacity(next); ok || err != nil {
			t.Fatalf("step %d: HasCapacity(%v) = %v, %v after Allow said %v remain", step, next, ok, err, rem)
		}
	}
}

// TestAllowRetryAfter checks that a refused Allow's RetryAfter is the
// moment at which the same Allow succeeds, and not a nanosecond earlier:
// repeated a nanosecond before it, the Allow is refused, with a RetryAfter
// shorter by the time the server saw go by; repeated at it (at the first
// microsecond of the server's clock at or after it), it is admitted. The
// states come from random Allows, Acquires left to wait and Pauses, on
// rates whose unit takes a fraction of a nanosecond more than the exact
// quotient too, on which Remaining must still be exactly what TryAcquire
// admits (see checkRemaining).
func TestAllowRetryAfter(t *testing.T) {
	addr := redisAddr(t)
	rates := []struct {
		maxRate float64
		period  time.Duration
	}{
		{4, 8 * time.Second}, {3, time.Second}, {7, time.Second}, {2.7, time.Second}, {0.5, time.Second}, {1000, 100 * time.Millisecond},
	}
	for seed := range uint64(12) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel() // ends the waiters if the test fails
				rdb := newClient(t, addr)
				rng := rand.New(rand.NewPCG(seed, 3))
				r := rates[rng.IntN(len(rates))]
				lim := onMockTime(New(rdb, testKey(t, rdb), r.maxRate, r.period, WithClock(c)), c)
				amount := func() float64 { return min(r.maxRate, []float64{0.1, 0.3, 1, 1.7, r.maxRate}[rng.IntN(5)]) }
				var waiters []<-chan result
				probes := 0
				for step := 0; probes < 15 && step < 500; step++ {
					switch k := rng.IntN(10); {
					case k < 6:
						a := amount()
						d := lim.Allow(ctx, a)
						if d.Err != nil {
							t.Fatalf("step %d: Allow(%v): %v", step, a, d.Err)
						}
						checkRemaining(t, step, d.Remaining, r.maxRate, func(a float64) (bool, error) { return lim.HasCapacity(ctx, a) })
						if d.OK {
							if d.RetryAfter != 0 {
								t.Fatalf("step %d: Allow(%v) = %+v: admitted with a RetryAfter", step, a, d)
							}
							break
						}
						probes++
						// The server read its time in whole microseconds.
						at := c.Now().Truncate(time.Microsecond)
						due := at.Add(d.RetryAfter)
						// The server's last time before due, and its first at
						// or after it.
						before := due.Add(-time.Nanosecond).Truncate(time.Microsecond)
						after := before.Add(time.Microsecond)
						if before.After(c.Now()) {
							c.Advance(before.Sub(c.Now()))
							e := lim.Allow(ctx, a)
							if left := due.Sub(before); e.OK || e.Err != nil || e.RetryAfter != left {
								t.Fatalf("step %d: Allow(%v) %v before its RetryAfter %v = %+v; want refused, with %v left", step, a, left, d.RetryAfter, e, left)
							}
						}
						c.Advance(after.Sub(c.Now()))
						if e := lim.Allow(ctx, a); !e.OK || e.Err != nil {
							t.Fatalf("step %d: Allow(%v) at its RetryAfter %v (%v later) = %+v; want it admitted", step, a, d.RetryAfter, after.Sub(at), e)
						}
					case k < 7:
						if len(waiters) < 3 {
							waiters = append(waiters, acquireAt(ctx, c, lim, amount()))
						}
					case k < 8:
						if err := lim.Pause(ctx, time.Duration(rng.Int64N(int64(2*r.period)))); err != nil {
							t.Fatal(err)
						}
					default:
						c.Advance(time.Duration(rng.Int64N(int64(r.period/time.Microsecond))+1) * time.Microsecond / 4)
					}
					waiters = slices.DeleteFunc(waiters, func(ch <-chan result) bool {
						select {
						case r := <-ch:
							if r.err != nil {
								t.Fatalf("Acquire: %v", r.err)
							}
							return true
						default:
							return false
						}
					})
				}
				if probes < 15 {
					t.Errorf("only %d refused Allows checked", probes)
				}
				for _, ch := range waiters {
					if r := waitFor(t, c, ch, time.Hour); r.err != nil {
						t.Errorf("Acquire: %v", r.err)
					}
				}
			})
		})
	}
}

// TestAllowWorkedExample follows the package documentation's worked
// example with Allow: the state it reports at each step, by the server's
// clock.
func TestAllowWorkedExample(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // ends the waiters if the test fails
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		a := onMockTime(New(rdb, key, 4, 8*time.Second, WithClock(c)), c)
		b := onMockTime(New(rdb, key, 4, 8*time.Second, WithClock(c)), c)
		check := func(what string, got, want ratelimit.Decision) {
			t.Helper()
			if got != want {
				t.Errorf("%s at %v = %+v; want %+v", what, c.Elapsed(), got, want)
			}
		}
		check("A's Allow(0) on a new key", a.Allow(ctx, 0), ratelimit.Decision{OK: true, Remaining: 4})
		check("A's Allow(3)", a.Allow(ctx, 3), ratelimit.Decision{OK: true, Remaining: 1, Reset: 6 * time.Second})
		check("B's Allow(1)", b.Allow(ctx, 1), ratelimit.Decision{OK: true, Remaining: 0, Reset: 8 * time.Second})
		check("B's Allow(0.5) on the full bucket", b.Allow(ctx, 0.5),
			ratelimit.Decision{RetryAfter: time.Second, Reset: 8 * time.Second})
		wb := acquireAt(ctx, c, b, 1) // turn at 2s
		c.AdvanceTo(t, 500*time.Millisecond)
		wa := acquireAt(ctx, c, a, 1) // turn at 4s
		c.AdvanceTo(t, time.Second)
		// 3.5 units in the bucket and 2 reserved: empty at 12s; one more
		// unit's turn would be at 6s.
		check("A's Allow(1) while B and A wait", a.Allow(ctx, 1),
			ratelimit.Decision{RetryAfter: 5 * time.Second, Reset: 11 * time.Second})
		for _, w := range []<-chan result{wb, wa} {
			if r := waitFor(t, c, w, time.Minute); r.err != nil {
				t.Fatal(r.err)
			}
		}
		c.AdvanceTo(t, 5*time.Second) // 3.5 units left: half a unit fits
		check("Allow(0.25) at 5s", b.Allow(ctx, 0.25), ratelimit.Decision{OK: true, Remaining: 0.25, Reset: 7*time.Second + 500*time.Millisecond})
		if err := a.Pause(ctx, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		// During the pause nothing remains; at its end, 7s, the bucket
		// holds one unit short of full, and empties 6s later.
		check("Allow(0) during a pause", a.Allow(ctx, 0), ratelimit.Decision{OK: true, Reset: 8 * time.Second})
		check("Allow(1) during a pause", a.Allow(ctx, 1), ratelimit.Decision{RetryAfter: 2 * time.Second, Reset: 8 * time.Second})
	})
}

// TestAllowConcurrent runs many goroutines, through two Keyeds sharing a
// prefix as two processes would, calling Allow and TryAcquire on three
// keys at a fixed time of the server, then again after the clock has
// moved: each key must admit exactly what its bucket holds, and the
// admitted Allows must report the bucket's state at distinct moments (their
// Remaining values are those of the bucket after each admission, in some
// order). Under -race it also checks the Keyed and the sightings for races.
func TestAllowConcurrent(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		rdb := newClient(t, addr)
		prefix := testPrefix(t, rdb)
		// 5 a second, a unit every 200ms.
		ks := []*Keyed{
			onMockTimeKeyed(NewKeyed(rdb, prefix, 5, time.Second, WithClock(c)), c),
			onMockTimeKeyed(NewKeyed(newClient(t, addr), prefix, 5, time.Second, WithClock(c)), c),
		}
		keys := []string{"a", "b", "c"}
		ctx := context.Background()
		round := func(wantAdmitted int, wantRemaining []float64) {
			t.Helper()
			var mu sync.Mutex
			admitted := map[string]int{}
			remaining := map[string][]float64{}
			var wg sync.WaitGroup
			for g := range 32 {
				wg.Go(func() {
					for i := range 12 {
						key, k := keys[(g+i)%len(keys)], ks[g%2]
						if g%4 == 3 {
							ok, err := k.TryAcquire(ctx, key, 1)
							if err != nil {
								t.Errorf("TryAcquire(%s, 1): %v", key, err)
							}
							if ok {
								mu.Lock()
								admitted[key]++
								mu.Unlock()
							}
							continue
						}
						d := k.Allow(ctx, key, 1)
						switch {
						case d.Err != nil:
							t.Errorf("Allow(%s, 1): %v", key, d.Err)
						case d.OK:
							mu.Lock()
							admitted[key]++
							remaining[key] = append(remaining[key], d.Remaining)
							mu.Unlock()
						case d.RetryAfter <= 0 || d.Remaining >= 1:
							t.Errorf("Allow(%s, 1) refused with %+v", key, d)
						}
					}
				})
			}
			wg.Wait()
			for _, key := range keys {
				if admitted[key] != wantAdmitted {
					t.Errorf("key %s: %d admitted at one time of the server; want %d", key, admitted[key], wantAdmitted)
				}
				// The Remaining of each admitted Allow is one of the bucket's
				// states after an admission, each reported at most once.
				got := slices.Compact(slices.Sorted(slices.Values(remaining[key])))
				if len(got) != len(remaining[key]) || slices.ContainsFunc(got, func(r float64) bool { return !slices.Contains(wantRemaining, r) }) {
					t.Errorf("key %s: Remaining of the admitted Allows %v; want distinct values among %v", key, remaining[key], wantRemaining)
				}
			}
		}
		round(5, []float64{0, 1, 2, 3, 4})
		c.Advance(500 * time.Millisecond) // 2.5 units drained
		round(2, []float64{0.5, 1.5})
		c.Advance(time.Hour)
		round(5, []float64{0, 1, 2, 3, 4})
	})
}

// TestAllowBadAmounts checks that amounts that can never fit give
// ratelimit's errors, named with their values as TryAcquire's, with OK
// false and no round trip, and keep nothing of the key; and that an
// amount of 0 is OK and reads the bucket, in one round trip.
func TestAllowBadAmounts(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		rdb := newClient(t, addr)
		var n counter
		rdb.AddHook(&n)
		ctx := context.Background()
		lim := onMockTime(New(rdb, testKey(t, rdb), 10, time.Second), c)
		k := onMockTimeKeyed(NewKeyed(rdb, testPrefix(t, rdb), 10, time.Second), c)
		if _, err := lim.Level(ctx); err != nil { // loads the script
			t.Fatal(err)
		}
		n.n.Store(0)
		tests := []struct {
			amount float64
			want   error
			text   string
		}{
			{11, ratelimit.ErrExceedsCapacity, "redisbucket: acquire 11 exceeds capacity 10"},
			{-1, ratelimit.ErrInvalidAmount, "redisbucket: acquire -1: amount must be a finite number >= 0"},
			{math.NaN(), ratelimit.ErrInvalidAmount, "redisbucket: acquire NaN: amount must be a finite number >= 0"},
			{math.Inf(1), ratelimit.ErrInvalidAmount, "redisbucket: acquire +Inf: amount must be a finite number >= 0"},
			{math.Inf(-1), ratelimit.ErrInvalidAmount, "redisbucket: acquire -Inf: amount must be a finite number >= 0"},
		}
		for _, tt := range tests {
			for name, d := range map[string]ratelimit.Decision{"Limiter": lim.Allow(ctx, tt.amount), "Keyed": k.Allow(ctx, "a", tt.amount)} {
				if !errors.Is(d.Err, tt.want) || d.Err.Error() != tt.text || d != (ratelimit.Decision{Err: d.Err}) {
					t.Errorf("%s.Allow(%v) = %+v; want only Err %q", name, tt.amount, d, tt.text)
				}
				_, terr := lim.TryAcquire(ctx, tt.amount)
				if terr == nil || terr.Error() != d.Err.Error() {
					t.Errorf("%s.Allow(%v).Err = %v; TryAcquire's is %v", name, tt.amount, d.Err, terr)
				}
			}
		}
		if got := n.n.Load(); got != 0 {
			t.Errorf("%d round trips for amounts that can never fit; want 0", got)
		}
		if len(k.seen) != 0 {
			t.Errorf("%d keys kept for calls that made no round trip; want 0", len(k.seen))
		}
		for name, allow := range map[string]func(float64) ratelimit.Decision{
			"Limiter": func(a float64) ratelimit.Decision { return lim.Allow(ctx, a) },
			"Keyed":   func(a float64) ratelimit.Decision { return k.Allow(ctx, "a", a) },
		} {
			before := n.n.Load()
			if d := allow(0); d != (ratelimit.Decision{OK: true, Remaining: 10}) {
				t.Errorf("%s.Allow(0) on an empty bucket = %+v; want OK, 10 remaining", name, d)
			}
			if d := allow(10); d != (ratelimit.Decision{OK: true, Reset: time.Second}) {
				t.Errorf("%s.Allow(10) on an empty bucket = %+v; want OK, none remaining", name, d)
			}
			if d := allow(0); d != (ratelimit.Decision{OK: true, Reset: time.Second}) {
				t.Errorf("%s.Allow(0) on a full bucket = %+v; want OK, none remaining", name, d)
			}
			if got := n.n.Load() - before; got != 3 {
				t.Errorf("%s: %d round trips for 3 Allows; want 3", name, got)
			}
		}
	})
}

// TestAllowUnavailable checks that Allow with Redis down or silent gives OK
// false and an Err that wraps ErrUnavailable and the cause, naming the
// call, without panicking; that a context that ended gives its own error
// instead; and that with WithFallback, the local limiter answers, as its
// own Allow does, until Redis is back.
func TestAllowUnavailable(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	rdb := newClient(t, addr)
	h := &hooked{Scripter: rdb}
	lim := New(h, testKey(t, rdb), 10, time.Second, WithTimeout(20*time.Millisecond))
	k := NewKeyed(h, testPrefix(t, rdb), 10, time.Second, WithTimeout(20*time.Millisecond))
	allows := map[string]func(context.Context) ratelimit.Decision{
		"Limiter": func(ctx context.Context) ratelimit.Decision { return lim.Allow(ctx, 1) },
		"Keyed":   func(ctx context.Context) ratelimit.Decision { return k.Allow(ctx, "a", 1) },
	}
	for name, allow := range allows {
		h.down.Store(true)
		d := allow(ctx)
		if d.OK || !errors.Is(d.Err, ErrUnavailable) || !errors.Is(d.Err, syscall.ECONNREFUSED) || d != (ratelimit.Decision{Err: d.Err}) {
			t.Errorf("%s.Allow(1) with Redis down = %+v; want only an Err wrapping ErrUnavailable and ECONNREFUSED", name, d)
		} else if want := "Allow(1) on key"; !strings.Contains(d.Err.Error(), want) {
			t.Errorf("%s.Allow(1) with Redis down: %q does not say %q", name, d.Err, want)
		}
		h.down.Store(false)
		h.slow.Store(true)
		d = allow(ctx)
		var to interface{ Timeout() bool }
		if d.OK || !errors.Is(d.Err, ErrUnavailable) || errors.Is(d.Err, context.DeadlineExceeded) || !errors.As(d.Err, &to) || !to.Timeout() {
			t.Errorf("%s.Allow(1) with Redis silent = %+v; want an Err wrapping ErrUnavailable and a timeout", name, d)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if d := allow(cctx); d.OK || !errors.Is(d.Err, context.Canceled) || errors.Is(d.Err, ErrUnavailable) {
			t.Errorf("%s.Allow(1) with a cancelled context = %+v; want its error", name, d)
		}
		h.slow.Store(false)
		if d := allow(ctx); !d.OK || d.Err != nil {
			t.Errorf("%s.Allow(1) with Redis back = %+v; want OK", name, d)
		}
	}

	// A client of a port nothing listens on: the real refusal.
	gone := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialerRetries: 1, MaxRetries: -1})
	defer gone.Close()
	if d := New(gone, "k", 1, time.Second).Allow(ctx, 1); d.OK || !errors.Is(d.Err, ErrUnavailable) || !errors.Is(d.Err, syscall.ECONNREFUSED) {
		t.Errorf("Allow(1) on a port nothing listens on = %+v; want an Err wrapping ErrUnavailable and ECONNREFUSED", d)
	}

	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		h := &hooked{Scripter: newClient(t, addr)}
		var switches []bool
		// 10 units per 10s in Redis; 5 on the fallback, one every 2s.
		lim := onMockTime(New(h, testKey(t, rdb), 10, 10*time.Second, WithClock(c),
			WithFallback(0.5, func(local bool, _ error) { switches = append(switches, local) }), WithProbeInterval(time.Second)), c)
		if d := lim.Allow(ctx, 1); !d.OK || d.Remaining != 9 {
			t.Fatalf("Allow(1) on Redis = %+v", d)
		}
		h.down.Store(true)
		// The local bucket starts full: one unit in 2s, empty in 10s.
		if d, want := lim.Allow(ctx, 1), (ratelimit.Decision{RetryAfter: 2 * time.Second, Reset: 10 * time.Second}); d != want || len(switches) != 1 {
			t.Errorf("Allow(1) that switches to the fallback = %+v (switches %v); want %+v", d, switches, want)
		}
		if d := lim.Allow(ctx, 6); d.OK || !errors.Is(d.Err, ratelimit.ErrExceedsCapacity) {
			t.Errorf("Allow(6) on the fallback of capacity 5 = %+v; want ErrExceedsCapacity", d)
		}
		c.Advance(2 * time.Second)
		if d, want := lim.Allow(ctx, 1), (ratelimit.Decision{OK: true, Reset: 10 * time.Second}); d != want {
			t.Errorf("Allow(1) on the fallback once a unit drained = %+v; want %+v", d, want)
		}
		h.down.Store(false)
		for range 3 { // three probes a second apart switch back
			c.Advance(time.Second)
			lim.Allow(ctx, 0)
		}
		if !slices.Equal(switches, []bool{true, false}) {
			t.Fatalf("switches %v; want to local and back", switches)
		}
		if d := lim.Allow(ctx, 1); !d.OK || d.Err != nil {
			t.Errorf("Allow(1) back on Redis = %+v; want OK", d)
		}
	})
}

// TestAllowRestoresLostKey checks that Allow keeps the protection against
// a key that Redis lost: a limiter whose only call was an Allow, and a
// Keyed's key, write the key back full when it goes missing while it
// should hold units, and find it empty once it has drained.
func TestAllowRestoresLostKey(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key, prefix := testKey(t, rdb), testPrefix(t, rdb)
		lim := onMockTime(New(rdb, key, 2, 2*time.Second, WithClock(c)), c)
		k := onMockTimeKeyed(NewKeyed(rdb, prefix, 2, 2*time.Second, WithClock(c)), c)
		allows := []struct {
			name  string
			rkey  string
			allow func(float64) ratelimit.Decision
		}{
			{"Limiter", key, func(a float64) ratelimit.Decision { return lim.Allow(ctx, a) }},
			{"Keyed", prefix + "x", func(a float64) ratelimit.Decision { return k.Allow(ctx, "x", a) }},
		}
		for _, a := range allows {
			if d := a.allow(1.5); !d.OK || d.Remaining != 0.5 || d.Reset != 1500*time.Millisecond {
				t.Fatalf("%s: Allow(1.5) = %+v", a.name, d)
			}
		}
		c.AdvanceTo(t, 500*time.Millisecond) // 1 unit left in each
		for _, a := range allows {
			if err := rdb.Del(ctx, a.rkey).Err(); err != nil {
				t.Fatal(err)
			}
			// Back full, no burst: a unit's wait for a unit.
			want := ratelimit.Decision{RetryAfter: time.Second, Reset: 2 * time.Second}
			if d := a.allow(1); d != want {
				t.Errorf("%s: Allow(1) after the loss = %+v; want %+v", a.name, d, want)
			}
		}
		c.AdvanceTo(t, 5*time.Second) // drained
		for _, a := range allows {
			if err := rdb.Del(ctx, a.rkey).Err(); err != nil {
				t.Fatal(err)
			}
			if d := a.allow(2); !d.OK || d.Remaining != 0 || d.Err != nil {
				t.Errorf("%s: Allow(2) once the bucket drained before its key went = %+v; want OK", a.name, d)
			}
		}
	})
}

// BenchmarkAllow compares Allow with TryAcquire, on the same server in the
// same run: on one key, and on 10,000 keys taken in turn (as many as a
// Keyed remembers), through a Keyed whose rate admits every call, so that
// every call writes its key. It reports round trips per call.
func BenchmarkAllow(b *testing.B) {
	addr := os.Getenv(addrEnv)
	if addr == "" {
		b.Skip(addrEnv + " is not set")
	}
	ctx := context.Background()
	calls := []struct {
		name string
		call func(k *Keyed, key string) error
	}{
		{"Allow", func(k *Keyed, key string) error {
			if d := k.Allow(ctx, key, 1); !d.OK {
				return fmt.Errorf("Allow(%s, 1) = %+v", key, d)
			}
			return nil
		}},
		{"TryAcquire", func(k *Keyed, key string) error {
			if ok, err := k.TryAcquire(ctx, key, 1); !ok {
				return fmt.Errorf("TryAcquire(%s, 1) = %v, %v", key, ok, err)
			}
			return nil
		}},
	}
	for _, n := range []int{1, keyedMemory} {
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("client-%d", i)
		}
		for _, c := range calls {
			b.Run(fmt.Sprintf("keys=%d/%s", n, c.name), func(b *testing.B) {
				rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
				defer rdb.Close()
				var rt counter
				rdb.AddHook(&rt)
				prefix := fmt.Sprintf("drip:bench:%x:", rand.Uint64())
				k := NewKeyed(rdb, prefix, 1e9, time.Second)
				if err := c.call(k, keys[0]); err != nil { // loads the script
					b.Fatal(err)
				}
				b.ReportAllocs()
				rt.n.Store(0)
				i := 0
				for b.Loop() {
					if err := c.call(k, keys[i]); err != nil {
						b.Fatal(err)
					}
					if i++; i == n {
						i = 0
					}
				}
				b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
			})
		}
	}
}
