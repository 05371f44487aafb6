package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// goKeyed calls Acquire on key on a new goroutine and settles, so that the
// call has been admitted or queued when it returns.
func goKeyed(ctx context.Context, c *clocktest.Clock, k *ratelimit.Keyed[string], key string, amount float64) <-chan result {
	ch := make(chan result, 1)
	go func() {
		err := k.Acquire(ctx, key, amount)
		ch <- result{c.Elapsed(), err}
	}()
	c.Settle()
	return ch
}

// The Drip! tables hold on every key, with the callers of three keys
// interleaved: each key's callers arrive Gap apart from the key's own
// start, and are admitted on the table's schedule from there.
func TestKeyedDripTables(t *testing.T) {
	for _, d := range clocktest.Drips {
		t.Run(d.Name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				k := ratelimit.NewKeyed[string](d.MaxRate, d.Period, ratelimit.WithClock(c))
				keys := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}
				starts := []time.Duration{0, 3 * ms, 7 * ms}
				type arrival struct {
					at     time.Duration
					key, i int
				}
				var arrivals []arrival
				for j := range keys {
					for i := range d.Want {
						arrivals = append(arrivals, arrival{starts[j] + time.Duration(i)*d.Gap, j, i})
					}
				}
				slices.SortFunc(arrivals, func(a, b arrival) int { return int(a.at - b.at) })
				got := make([][]time.Duration, len(keys))
				for j := range got {
					got[j] = make([]time.Duration, len(d.Want))
				}
				var wg sync.WaitGroup
				for _, a := range arrivals {
					c.AdvanceTo(t, a.at)
					wg.Go(func() {
						if err := k.Wait(context.Background(), keys[a.key]); err != nil {
							t.Errorf("key %d caller %d: %v", a.key, a.i, err)
						}
						got[a.key][a.i] = c.Elapsed()
					})
					c.Settle()
				}
				last := starts[len(starts)-1] + d.Want[len(d.Want)-1]
				c.AdvanceTo(t, last)
				wg.Wait()
				for j := range keys {
					for i, want := range d.Want {
						if got[j][i] != starts[j]+want {
							t.Errorf("key %s caller %d admitted at %v, want %v", keys[j], i, got[j][i], starts[j]+want)
						}
					}
				}
				c.Settle()
				clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit")
			})
		})
	}
}

// Callers on one key are admitted in the order they came, whatever their
// amounts, while the other keys go on at their own rate; a cancelled
// waiter takes nothing and the next moves up.
func TestKeyedFIFOAndCancellationPerKey(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		k := ratelimit.NewKeyed[string](3, 3*time.Second, ratelimit.WithClock(c)) // a unit a second
		ctx := context.Background()
		if !k.TryAcquire("a", 3) {
			t.Fatal("burst refused")
		}
		big := goKeyed(ctx, c, k, "a", 3)
		cctx, cancel := context.WithCancel(ctx)
		mid := goKeyed(cctx, c, k, "a", 2)
		small := goKeyed(ctx, c, k, "a", 1)
		if n := k.Waiting("a"); n != 3 {
			t.Fatalf("%d waiting on a, want 3", n)
		}
		// No one barges in on a; b is another bucket.
		if k.TryAcquire("a", 0.001) || k.HasCapacity("a", 0.001) || !k.TryAcquire("b", 3) {
			t.Fatal("a admitted past its waiters, or b was held back by them")
		}
		c.AdvanceTo(t, 2*time.Second)
		pending(t, big, "a's first waiter")
		cancel()
		c.Settle()
		if r := returned(t, mid, "the cancelled waiter"); !errors.Is(r.err, context.Canceled) || r.at != 2*time.Second {
			t.Fatalf("cancelled waiter: %v at %v", r.err, r.at)
		}
		c.AdvanceTo(t, 3*time.Second)
		admittedAt(t, big, "a's first waiter", 3*time.Second)
		// The cancelled waiter's 2 units were never taken: the small one
		// goes a second later.
		c.AdvanceTo(t, 4*time.Second-1)
		pending(t, small, "a's last waiter")
		c.AdvanceTo(t, 4*time.Second)
		admittedAt(t, small, "a's last waiter", 4*time.Second)
		if k.Waiting("a") != 0 || !near(k.Level("a"), 3) || !near(k.Level("b"), 0) {
			t.Fatalf("after: %d waiting, levels %v and %v", k.Waiting("a"), k.Level("a"), k.Level("b"))
		}
	})
}

// A deadline at or before the time a key would admit the caller fails at
// once with a *DeadlineError that says how long the wait would be, on a
// key in its plain state as on one with waiters; a nanosecond later waits.
func TestKeyedDeadlineFailsFast(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		k := ratelimit.NewKeyed[string](2, 200*ms, ratelimit.WithClock(c))
		ctx := context.Background()
		if err := k.Acquire(ctx, "a", 2); err != nil {
			t.Fatal(err)
		}
		check := func(deadline, wantWait time.Duration) {
			t.Helper()
			dctx, cancel := c.WithTimeout(ctx, deadline)
			defer cancel()
			var de *ratelimit.DeadlineError
			err := k.Acquire(dctx, "a", 1)
			if !errors.As(err, &de) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Acquire with a deadline in %v = %v, want a DeadlineError", deadline, err)
			}
			if de.Wait != wantWait || de.Remaining != deadline || de.Amount != 1 {
				t.Fatalf("DeadlineError %+v, want a wait of %v with %v remaining", *de, wantWait, deadline)
			}
		}
		check(100*ms, 100*ms)
		check(time.Nanosecond, 100*ms)
		lctx, cancel := c.WithTimeout(ctx, 100*ms+1)
		defer cancel()
		w := goKeyed(lctx, c, k, "a", 1)
		// Behind that waiter, the next unit is due at 200 ms.
		check(200*ms, 200*ms)
		c.AdvanceTo(t, 100*ms)
		admittedAt(t, w, "the waiter with a deadline a nanosecond past its turn", 100*ms)
	})
}

// Pause on a key never used creates its state: the key admits nothing
// until the pause ends, then one unit, then the steady rate; other keys go
// on. Pause(0) creates nothing.
func TestKeyedPauseOnANewKey(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		k := ratelimit.NewKeyed[string](10, time.Second, ratelimit.WithClock(c))
		k.Pause("x", 0)
		k.Pause("y", -time.Second)
		if n := k.Len(); n != 0 {
			t.Fatalf("Len %d after pauses of 0 and less", n)
		}
		k.Pause("x", 5*time.Second)
		if n := k.Len(); n != 1 {
			t.Fatalf("Len %d after a pause on a new key, want 1", n)
		}
		ctx := context.Background()
		var ws []<-chan result
		for range 3 {
			ws = append(ws, goKeyed(ctx, c, k, "x", 1))
		}
		if !k.TryAcquire("y", 10) {
			t.Fatal("another key was paused too")
		}
		c.AdvanceTo(t, 5*time.Second-1)
		pending(t, ws[0], "first caller on the paused key")
		if k.TryAcquire("x", 0.001) {
			t.Fatal("a fraction of a unit passed during the pause")
		}
		for i, w := range ws {
			at := 5*time.Second + time.Duration(i)*100*ms
			c.AdvanceTo(t, at)
			admittedAt(t, w, fmt.Sprintf("caller %d", i), at)
		}
		// Once drained, the key holds nothing.
		c.AdvanceTo(t, 7*time.Second)
		if n := k.Len(); n != 0 {
			t.Fatalf("Len %d once every key drained, want 0", n)
		}
	})
}

// SetRate changes every key, those with waiters and those without, keeping
// each bucket's units; waiters above the new capacity fail at once.
func TestKeyedSetRateChangesEveryKey(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		k := ratelimit.NewKeyed[string](10, time.Second, ratelimit.WithClock(c))
		ctx := context.Background()
		k.TryAcquire("plain", 10)
		k.TryAcquire("waited", 10)
		a := goKeyed(ctx, c, k, "waited", 1)
		b := goKeyed(ctx, c, k, "waited", 8)
		k.SetRate(5, time.Second) // 10 units drain in 2 s; one fits at 1.2 s
		c.Settle()
		if r := returned(t, b, "a waiter above the new capacity"); !errors.Is(r.err, ratelimit.ErrExceedsCapacity) || r.at != 0 {
			t.Fatalf("waiter above the new capacity: %v at %v", r.err, r.at)
		}
		if k.MaxRate() != 5 || k.Period() != time.Second || !near(k.Level("plain"), 10) {
			t.Fatalf("after SetRate: %v per %v, level %v", k.MaxRate(), k.Period(), k.Level("plain"))
		}
		c.AdvanceTo(t, 1200*ms-1)
		if k.TryAcquire("plain", 1) {
			t.Fatal("the plain key admitted before 1.2 s")
		}
		pending(t, a, "waiter")
		c.AdvanceTo(t, 1200*ms)
		admittedAt(t, a, "waiter", 1200*ms)
		if !k.TryAcquire("plain", 1) || k.TryAcquire("plain", 0.01) {
			t.Fatal("the plain key does not drain at the new rate")
		}
		// A new key gets the new capacity.
		if !k.TryAcquire("new", 5) || k.TryAcquire("new", 0.01) {
			t.Fatal("a new key's burst is not the new capacity")
		}
	})
}

// Bad settings panic in NewKeyed, SetRate and WithMaxKeys, naming the
// values; bad amounts are refused as a Limiter refuses them.
func TestKeyedBadInput(t *testing.T) {
	msg := func(f func()) (msg string) {
		defer func() { msg, _ = recover().(string) }()
		f()
		return ""
	}
	for _, tt := range []struct {
		f    func()
		want string
	}{
		{func() { ratelimit.NewKeyed[string](0, time.Second) }, "ratelimit: NewKeyed: maxRate 0 must be a finite number > 0"},
		{func() { ratelimit.NewKeyed[int](math.NaN(), time.Second) }, "ratelimit: NewKeyed: maxRate NaN must be"},
		{func() { ratelimit.NewKeyed[int](1, -time.Second) }, "ratelimit: NewKeyed: period -1s must be > 0"},
		{func() { ratelimit.NewKeyed[int](1e-300, time.Second) }, "ratelimit: NewKeyed: maxRate 1e-300 per 1s"},
		{func() { ratelimit.WithMaxKeys(0) }, "ratelimit: WithMaxKeys: n 0 must be >= 1"},
		{func() { ratelimit.WithMaxKeys(-5) }, "ratelimit: WithMaxKeys: n -5 must be >= 1"},
	} {
		if got := msg(tt.f); !strings.HasPrefix(got, tt.want) {
			t.Errorf("panicked with %q, want %q", got, tt.want)
		}
	}
	k := ratelimit.NewKeyed[string](4, time.Second, ratelimit.WithClock(clock.NewMock()))
	k.TryAcquire("a", 1)
	if got := msg(func() { k.SetRate(1, 0) }); !strings.HasPrefix(got, "ratelimit: SetRate: period 0s must be > 0") {
		t.Errorf("SetRate panicked with %q", got)
	}
	if k.MaxRate() != 4 || k.Period() != time.Second || k.Level("a") != 1 {
		t.Errorf("a refused SetRate changed the Keyed: %v per %v, level %v", k.MaxRate(), k.Period(), k.Level("a"))
	}
	for _, tt := range []struct {
		amount float64
		want   error
		msg    string
	}{
		{-1, ratelimit.ErrInvalidAmount, "ratelimit: acquire -1: amount must be a finite number >= 0"},
		{math.NaN(), ratelimit.ErrInvalidAmount, "ratelimit: acquire NaN: amount must be a finite number >= 0"},
		{math.Inf(1), ratelimit.ErrInvalidAmount, "ratelimit: acquire +Inf: amount must be a finite number >= 0"},
		{4.5, ratelimit.ErrExceedsCapacity, "ratelimit: acquire 4.5 exceeds capacity 4"},
	} {
		for _, key := range []string{"a", "new"} {
			err := k.Acquire(context.Background(), key, tt.amount)
			if !errors.Is(err, tt.want) || err.Error() != tt.msg {
				t.Errorf("Acquire(%q, %v) = %v, want %q", key, tt.amount, err, tt.msg)
			}
			if k.TryAcquire(key, tt.amount) || k.HasCapacity(key, tt.amount) {
				t.Errorf("TryAcquire/HasCapacity(%q, %v) reported true", key, tt.amount)
			}
			if d := k.Allow(key, tt.amount); d.OK || !errors.Is(d.Err, tt.want) {
				t.Errorf("Allow(%q, %v) = %+v", key, tt.amount, d)
			}
		}
	}
	if k.Len() != 1 || k.Level("a") != 1 {
		t.Errorf("refused amounts changed the Keyed: Len %d, level %v", k.Len(), k.Level("a"))
	}
	// An amount of 0 always passes, and creates nothing.
	if err := k.Acquire(context.Background(), "zero", 0); err != nil || !k.TryAcquire("zero", 0) || !k.HasCapacity("zero", 0) || k.Len() != 1 {
		t.Errorf("an amount of 0: %v, Len %d", err, k.Len())
	}
}

// Allow says what an HTTP middleware answers: admitted or not, what
// remains, when to come back, and when the bucket is empty.
func TestKeyedAllow(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		k := ratelimit.NewKeyed[string](10, time.Second, ratelimit.WithClock(c)) // a unit every 100 ms
		for i := range 10 {
			d := k.Allow("ip", 1)
			if !d.OK || d.Err != nil || !near(d.Remaining, float64(9-i)) || d.RetryAfter != 0 || d.Reset != time.Duration(i+1)*100*ms {
				t.Fatalf("call %d: %+v", i, d)
			}
		}
		d := k.Allow("ip", 1)
		if d.OK || d.Remaining != 0 || d.RetryAfter != 100*ms || d.Reset != time.Second || d.Err != nil {
			t.Fatalf("on a full bucket: %+v", d)
		}
		c.AdvanceTo(t, 250*ms)
		if d := k.Allow("ip", 3); d.OK || !near(d.Remaining, 2.5) || d.RetryAfter != 50*ms || d.Reset != 750*ms {
			t.Fatalf("3 units with 2.5 free: %+v", d)
		}
		// A waiter first: Allow refuses, and says when the amount would
		// come after it, and that the bucket is empty once the waiter's
		// 3 units have drained too.
		w := goKeyed(context.Background(), c, k, "ip", 3)
		if d := k.Allow("ip", 1); d.OK || d.Remaining != 0 || d.RetryAfter != 50*ms+100*ms || d.Reset != 1050*ms {
			t.Fatalf("behind a waiter: %+v", d)
		}
		c.AdvanceTo(t, 300*ms)
		admittedAt(t, w, "waiter", 300*ms)
		// A paused key: nothing remains until the pause ends, and then
		// the bucket is a unit short of full, so empty 0.9 s later.
		k.Pause("ip", time.Second)
		if d := k.Allow("ip", 1); d.OK || d.Remaining != 0 || d.RetryAfter != time.Second || d.Reset != 1900*ms {
			t.Fatalf("paused: %+v", d)
		}
		if d := k.Allow("other", 0); !d.OK || d.Remaining != 10 || d.Reset != 0 || k.Len() != 1 {
			t.Fatalf("an amount of 0 on a new key: %+v, Len %d", d, k.Len())
		}
	})
}

// With WithMaxKeys, a new key is refused while every key held holds
// state, and none of them is evicted; a pause is kept even past the cap.
func TestKeyedMaxKeys(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		k := ratelimit.NewKeyed[string](2, time.Second, ratelimit.WithClock(c), ratelimit.WithMaxKeys(3))
		ctx := context.Background()
		for _, key := range []string{"a", "b", "c"} {
			if !k.TryAcquire(key, 2) {
				t.Fatalf("key %s refused", key)
			}
		}
		if k.TryAcquire("d", 1) || k.HasCapacity("d", 1) {
			t.Fatal("a fourth key was admitted past the cap")
		}
		err := k.Acquire(ctx, "d", 1)
		if !errors.Is(err, ratelimit.ErrTooManyKeys) || !strings.Contains(err.Error(), "maximum of 3 keys") {
			t.Fatalf("Acquire on a fourth key = %v, want ErrTooManyKeys naming the cap", err)
		}
		// Retry after a Period, by when the keys held have drained, and a
		// sixteenth, by when a sweep at the cap has found them.
		if d := k.Allow("d", 1); d.OK || !errors.Is(d.Err, ratelimit.ErrTooManyKeys) || d.RetryAfter != time.Second+time.Second/16 {
			t.Fatalf("Allow on a fourth key = %+v", d)
		}
		// The keys held keep their state: full.
		for _, key := range []string{"a", "b", "c"} {
			if k.TryAcquire(key, 0.01) || k.Level(key) != 2 {
				t.Fatalf("key %s lost its state: level %v", key, k.Level(key))
			}
		}
		// A pause on a new key is kept past the cap.
		k.Pause("p", time.Minute)
		if n := k.Len(); n != 4 {
			t.Fatalf("Len %d after a pause past the cap, want 4", n)
		}
		// Once a and b drain (c is refilled), a new key fits again (the
		// paused key still counts). The Keyed sweeps for a new key at
		// the cap at most 16 times a period: here, within 62.5 ms of the
		// keys draining.
		c.AdvanceTo(t, 999*ms)
		k.TryAcquire("c", 1.9)
		if k.TryAcquire("d", 1) {
			t.Fatal("a new key admitted before any key drained")
		}
		c.AdvanceTo(t, time.Second+62500*time.Microsecond)
		if !k.TryAcquire("d", 1) || k.TryAcquire("e", 1) {
			t.Fatal("a new key was refused once keys drained, or the cap ignored after")
		}
		if k.TryAcquire("p", 1) || k.Len() != 3 {
			t.Fatalf("the paused key admitted, or Len %d, want 3", k.Len())
		}
	})
}

// A key's view is an Acquirer that can pause, on the key's own bucket.
func TestKeyedKeyView(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		k := ratelimit.NewKeyed[string](2, time.Second, ratelimit.WithClock(c))
		var lim ratelimit.Acquirer = k.Key("h")
		var pauser interface{ Pause(time.Duration) } = k.Key("h")
		v := k.Key("h")
		if v.Key() != "h" || v.MaxRate() != 2 || v.Period() != time.Second {
			t.Fatalf("view of %q: %v per %v", v.Key(), v.MaxRate(), v.Period())
		}
		if err := lim.Acquire(context.Background(), 1); err != nil || !v.TryAcquire(1) || v.HasCapacity(0.1) || !near(k.Level("h"), 2) {
			t.Fatalf("the view does not take from the key's bucket: level %v", k.Level("h"))
		}
		if d := v.Allow(1); d.OK || d.RetryAfter != 500*ms {
			t.Fatalf("Allow through the view: %+v", d)
		}
		pauser.Pause(time.Minute)
		ch := make(chan error, 1)
		go func() { ch <- v.Wait(context.Background()) }()
		c.Settle()
		if v.Waiting() != 1 || !near(v.Level(), k.Level("h")) {
			t.Fatalf("%d waiting through the view", v.Waiting())
		}
		c.AdvanceTo(t, time.Minute)
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	})
}

// A Keyed made outside any bubble, as at package level, works on the
// schedule of the bubbles it is used in, one after the other: time that
// goes back makes it stricter, never looser.
var (
	packageKeyed     = ratelimit.NewKeyed[string](1, time.Second)
	packageKeyedUsed bool
)

func TestKeyedFromOutsideTheBubble(t *testing.T) {
	k := packageKeyed
	if packageKeyedUsed { // -count > 1: make a fresh one, outside the bubbles too
		k = ratelimit.NewKeyed[string](1, time.Second)
	}
	packageKeyedUsed = true
	for _, name := range []string{"first bubble", "second bubble"} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var got []time.Duration
				for range 4 {
					if err := k.Wait(context.Background(), "k"); err != nil {
						t.Fatal(err)
					}
					got = append(got, time.Since(start))
				}
				first := time.Duration(0)
				if name == "second bubble" {
					first = time.Second // the unit the first bubble left
				}
				for i, at := range got {
					if want := first + time.Duration(i)*time.Second; at != want {
						t.Fatalf("admissions at %v, want one a second from %v", got, first)
					}
				}
				clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit")
			})
		})
	}
}

// A clock that moves backwards makes every key stricter, never looser.
func TestKeyedClockMovingBackwards(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		k := ratelimit.NewKeyed[string](2, time.Second, ratelimit.WithClock(c))
		c.Advance(time.Hour)
		if !k.TryAcquire("a", 2) || !k.TryAcquire("b", 1) {
			t.Fatal("burst refused")
		}
		c.Set(clocktest.Start.Add(-time.Hour)) // two hours back
		if k.TryAcquire("a", 0.1) || k.TryAcquire("b", 1.1) || !near(k.Level("b"), 1) {
			t.Fatal("a bucket admitted more after the clock moved back")
		}
		w := goKeyed(context.Background(), c, k, "a", 1)
		c.Advance(500*ms - 1)
		pending(t, w, "waiter")
		c.Advance(1)
		if r := returned(t, w, "waiter"); r.err != nil {
			t.Fatalf("waiter: %v", r.err)
		}
	})
}

// Many goroutines on overlapping keys, with waits, cancellations, deadlines,
// pauses and SetRate: every call returns, each key admits no more than its
// rate allows, and no goroutine is left. Run with -race.
func TestKeyedConcurrentStress(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		const maxRate, period = 5, 100 * ms
		k := ratelimit.NewKeyed[int](maxRate, period, ratelimit.WithClock(c))
		keys := 7
		var mu sync.Mutex
		admitted := make([]float64, keys)
		var wg sync.WaitGroup
		var returnedCalls, made int
		const goroutines, calls = 64, 40
		for g := range goroutines {
			wg.Go(func() {
				for i := range calls {
					key := (g + i) % keys
					amount := float64(1 + (g+i)%3)
					ctx, cancel := context.WithCancel(context.Background())
					switch i % 5 {
					case 1:
						ctx, cancel = c.WithTimeout(context.Background(), time.Duration(i)*ms)
					case 2:
						go func() { // cancel it while it may wait
							sleep(c, time.Duration(g)*ms)
							cancel()
						}()
					}
					var ok bool
					switch i % 4 {
					case 3:
						ok = k.TryAcquire(key, amount)
					default:
						ok = k.Acquire(ctx, key, amount) == nil
					}
					cancel()
					mu.Lock()
					made++
					returnedCalls++
					if ok {
						admitted[key] += amount
					}
					mu.Unlock()
					switch {
					case g == 0 && i == 20:
						k.Pause(key, 10*ms)
					case g == 1 && i%10 == 0:
						k.SetRate(maxRate, period) // the same rate: a new generation of every key
					case g == 2 && i%7 == 0:
						k.Len()
					}
					sleep(c, time.Duration(g%3)*ms)
				}
			})
		}
		var done bool
		go func() { wg.Wait(); mu.Lock(); done = true; mu.Unlock() }()
		c.AdvanceUntil(t, time.Hour, func() bool { mu.Lock(); defer mu.Unlock(); return done })
		elapsed := c.Elapsed()
		for key, a := range admitted {
			if bound := maxRate + maxRate*elapsed.Seconds()/period.Seconds(); a > bound+1e-9 {
				t.Errorf("key %d admitted %v units in %v, more than %v", key, a, elapsed, bound)
			}
		}
		if returnedCalls != goroutines*calls || made != returnedCalls {
			t.Fatalf("%d calls returned of %d", returnedCalls, goroutines*calls)
		}
		c.Advance(time.Second)
		if n := k.Len(); n != 0 {
			t.Fatalf("Len %d after every key drained", n)
		}
		clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit")
	})
}

// The benchmarks call TryAcquire on string keys like "10.1.2.3", every call
// admitted: one hot key, or keys drawn uniformly at random from a million,
// all held before the timing starts.
//
//	go test -run '^$' -bench Keyed -count 5 ./ratelimit/

// hotRate admits every call on one key: a burst of 2^40 that refills over a
// year.
const hotRate, hotPeriod = 1 << 40, 365 * 24 * time.Hour

func BenchmarkKeyedHotKey(b *testing.B) {
	k := ratelimit.NewKeyed[string](hotRate, hotPeriod)
	key := ipKey(12345)
	b.ReportAllocs()
	for b.Loop() {
		if !k.TryAcquire(key, 1) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkKeyedHotKeyParallel(b *testing.B) {
	k := ratelimit.NewKeyed[string](hotRate, hotPeriod)
	key := ipKey(12345)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !k.TryAcquire(key, 1) {
				b.Error("refused")
				return
			}
		}
	})
}

// randomKeys returns a million keys, and 2^22 indexes into them drawn
// uniformly, made once.
var randomKeys = sync.OnceValues(func() ([]string, []uint32) {
	keys := make([]string, 1_000_000)
	for i := range keys {
		keys[i] = ipKey(i)
	}
	r := rand.New(rand.NewPCG(1, 2))
	seq := make([]uint32, 1<<22)
	for i := range seq {
		seq[i] = uint32(r.IntN(len(keys)))
	}
	return keys, seq
})

// benchRandomKeys measures TryAcquire on keys drawn at random from a
// million, each of which the Keyed holds, with the spread rate; in
// parallel, each goroutine walks the draws from a random place.
func benchRandomKeys(b *testing.B, parallel bool) {
	keys, seq := randomKeys()
	k := ratelimit.NewKeyed[string](spreadRate, spreadPeriod)
	for _, key := range keys {
		k.TryAcquire(key, 1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	walk := func(next func() bool) {
		i := rand.IntN(len(seq))
		for next() {
			if !k.TryAcquire(keys[seq[i&(len(seq)-1)]], 1) {
				b.Error("refused")
				return
			}
			i++
		}
	}
	if parallel {
		b.RunParallel(func(pb *testing.PB) { walk(pb.Next) })
	} else {
		walk(b.Loop)
	}
}

func BenchmarkKeyedRandomKeys(b *testing.B)         { benchRandomKeys(b, false) }
func BenchmarkKeyedRandomKeysParallel(b *testing.B) { benchRandomKeys(b, true) }

// BenchmarkKeyedChurn measures calls on keys drawn at random from a
// million that have always drained since their last call (a rate of a
// billion a second): each call makes a new key, and the sweeps drop them.
func BenchmarkKeyedChurn(b *testing.B) {
	keys, seq := randomKeys()
	k := ratelimit.NewKeyed[string](1e9, time.Second)
	b.ReportAllocs()
	i := rand.IntN(len(seq))
	for b.Loop() {
		if !k.TryAcquire(keys[seq[i&(len(seq)-1)]], 1) {
			b.Fatal("refused")
		}
		i++
	}
}

// BenchmarkKeyedHeapPerKey reports the heap a Keyed holds per key once a
// million keys were hit once each (B/key), the keys not counted.
func BenchmarkKeyedHeapPerKey(b *testing.B) {
	var v float64
	for b.Loop() {
		v = heapPerKey(1_000_000)
	}
	b.ReportMetric(v, "B/key")
}

// A call on a key the Keyed holds allocates nothing; nor does a new key in
// a table with room; a deadline that cannot be met on a key no one waits on
// allocates only its error.
func TestKeyedAllocations(t *testing.T) {
	if keyedRace {
		t.Skip("the race detector allocates")
	}
	c := &stepClock{now: 1e15}
	k := ratelimit.NewKeyed[string](spreadRate, spreadPeriod, ratelimit.WithClock(c))
	key := ipKey(7)
	k.TryAcquire(key, 1)
	view := k.Key(key)
	ctx := context.Background()
	fresh := make([]string, 200)
	for i := range fresh {
		fresh[i] = ipKey(1000 + i)
	}
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"TryAcquire", func() { k.TryAcquire(key, 0.001) }},
		{"HasCapacity", func() { k.HasCapacity(key, 1) }},
		{"Acquire", func() { _ = k.Acquire(ctx, key, 0.001) }},
		{"Allow", func() { k.Allow(key, 0.001) }},
		{"Level", func() { k.Level(key) }},
		{"view TryAcquire", func() { view.TryAcquire(0.001) }},
		{"view Acquire", func() { _ = view.Acquire(ctx, 0.001) }},
		{"new key", func() { k.TryAcquire(fresh[0], 1); fresh = fresh[1:] }},
	} {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s: %v allocations a call", tt.name, n)
		}
	}
	k.TryAcquire("full", spreadRate)
	dctx := &deadlineCtx{ctx, c.Now().Add(time.Second)}
	var de *ratelimit.DeadlineError
	if err := k.Acquire(dctx, "full", 1); !errors.As(err, &de) {
		t.Fatalf("Acquire with a deadline that cannot be met: %v", err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = k.Acquire(dctx, "full", 1) }); n != 1 {
		t.Errorf("a deadline that cannot be met: %v allocations, want 1 (the error)", n)
	}
}

// deadlineCtx is a context that never ends, with a deadline on a mocked
// clock.
type deadlineCtx struct {
	context.Context
	at time.Time
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.at, true }

// On the real clock, goroutines that race for the same keys' locks read the
// clock before taking them: a key still admits no more than its rate
// allows over the run (an upper bound, which holds however slow the
// machine).
func TestKeyedRealClockParallel(t *testing.T) {
	const maxRate, period = 50, 10 * time.Millisecond
	k := ratelimit.NewKeyed[int](maxRate, period)
	var mu sync.Mutex
	admitted := make([]float64, 3)
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; time.Since(start) < 30*time.Millisecond; i++ {
				key, ok := (g+i)%3, false
				if i%4 == 0 {
					ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
					ok = k.Acquire(ctx, key, 1) == nil
					cancel()
				} else {
					ok = k.TryAcquire(key, 1)
				}
				if ok {
					mu.Lock()
					admitted[key]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for key, a := range admitted {
		if bound := maxRate + maxRate*float64(elapsed)/float64(period); a > bound {
			t.Errorf("key %d: %v admitted in %v, more than %v", key, a, elapsed, bound)
		}
		if k.Waiting(key) != 0 {
			t.Errorf("key %d: %d still waiting", key, k.Waiting(key))
		}
	}
}

// sleep sleeps for d on c, and not at all for d <= 0: clock.Mock's Sleep(0)
// fires its timer while it holds the mock's lock, and can block there on a
// send when other goroutines sleep at the same time, which deadlocks every
// caller of the clock.
func sleep(c *clocktest.Clock, d time.Duration) {
	if d > 0 {
		c.Sleep(d)
	}
}
