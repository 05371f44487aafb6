package redisbucket

// Adversarial tests: attacks that the limiter resists. The first ones each
// showed a way an earlier version admitted more than its model allows (or
// refunded what it did not own), and state the guarantee that fixed it.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/redis/go-redis/v9"
)

// --- Fixed ---------------------------------------------------------------

// TestGiveBackAfterSetRateKeepsNewRate: a reservation made before SetRate
// and given back after it (cancelled, or failed by SetRate lowering the
// capacity below its amount) is given back at the rate in force, and so
// never rescales the shared bucket back to the old rate. After SetRate(1,
// 1s) on a bucket of New(10, 1s) holding 11 (or 15) units, the bucket holds
// them at 1/s (the rescaling replaced the nonce: nothing is given back),
// and refuses a unit at 1.1s (1.5s), as ratelimit.Limiter does.
func TestGiveBackAfterSetRateKeepsNewRate(t *testing.T) {
	addr := redisAddr(t)
	for _, tc := range []struct {
		name   string
		amount float64 // the waiter's amount; 5 > the new capacity 1
		cancel bool    // the caller cancels (else SetRate fails it)
	}{
		{"cancelled waiter", 1, true},
		{"waiter over the new capacity", 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				lim := onMockTime(New(rdb, testKey(t, rdb), 10, time.Second, WithClock(c)), c)
				local := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
				if ok, err := lim.TryAcquire(ctx, 10); !ok || err != nil {
					t.Fatalf("TryAcquire(10) = %v, %v", ok, err)
				}
				local.TryAcquire(10)
				wctx, cancel := context.WithCancel(ctx)
				defer cancel()
				w := acquireAt(wctx, c, lim, tc.amount)
				if err := lim.SetRate(ctx, 1, time.Second); err != nil {
					t.Fatal(err)
				}
				local.SetRate(1, time.Second)
				if tc.cancel {
					cancel()
				}
				c.Settle()
				if r := <-w; r.err == nil {
					t.Fatalf("waiter admitted at %v", r.at)
				}
				// 1.1s (1.5s) after: the old rate would have drained it all.
				c.AdvanceTo(t, time.Duration(10+tc.amount)*100*time.Millisecond)
				lv, _ := lim.Level(ctx)
				ok, err := lim.TryAcquire(ctx, 1)
				if err != nil {
					t.Fatal(err)
				}
				if ok || local.HasCapacity(1) {
					t.Errorf("at %v after SetRate(1, 1s): TryAcquire(1) = %v (Level was %v); local limiter: level %v, HasCapacity(1) %v;"+
						" want false: the ~10 units left drain at 1/s, not at the old 10/s", c.Elapsed(), ok, lv, local.Level(), local.HasCapacity(1))
				}
			})
		})
	}
}

// TestLongPeriodCostsNeverLost: past 2^53 ns from the key's epoch (periods
// over ~104 days, which New accepts up to ~417), float64s are 2, 4, 8 ns
// apart, and a cost of 1 ns must still move the tat: the script rounds its
// sums up. A full bucket of New(period in ns, period) refuses every unit
// at the same instant, as ratelimit.Limiter does.
func TestLongPeriodCostsNeverLost(t *testing.T) {
	addr := redisAddr(t)
	for _, period := range []time.Duration{200 * 24 * time.Hour, maxPeriod} {
		t.Run(period.String(), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				maxRate := float64(period) // one unit per nanosecond
				lim := onMockTime(New(rdb, testKey(t, rdb), maxRate, period, WithClock(c)), c)
				local := ratelimit.New(maxRate, period, ratelimit.WithClock(c))
				if ok, err := lim.TryAcquire(ctx, maxRate); !ok || err != nil {
					t.Fatalf("TryAcquire(capacity) = %v, %v", ok, err)
				}
				local.TryAcquire(maxRate)
				extra := 0
				for range 200 {
					ok, err := lim.TryAcquire(ctx, 1)
					if err != nil {
						t.Fatal(err)
					}
					if ok {
						extra++
					}
				}
				if extra > 0 {
					t.Errorf("New(%v, %v): a full bucket admitted %d of 200 TryAcquire(1) at one instant (local limiter: HasCapacity(1) = %v); want 0",
						maxRate, period, extra, local.HasCapacity(1))
				}
			})
		})
	}
}

// TestLostKeyRestoredUpToItsEnd: a key lost at any time before the end
// that the limiter saw it hold comes back full, however close that end
// (the key outlives it by a few milliseconds, so that no expiry is taken
// for a loss): with one process nothing passes beyond the rate, also for
// New(1000, 1ms), whose whole burst drains in 1ms, and a bucket 1.5ms from
// empty.
func TestLostKeyRestoredUpToItsEnd(t *testing.T) {
	addr := redisAddr(t)
	for _, tc := range []struct {
		maxRate float64
		period  time.Duration
		at      time.Duration // when the key is lost
	}{
		{1000, time.Millisecond, 0},                                      // full bucket, 1ms to drain
		{1000, time.Second, 998*time.Millisecond + 500*time.Microsecond}, // 1.5 units left
	} {
		t.Run(fmt.Sprintf("New(%v, %v) lost at %v", tc.maxRate, tc.period, tc.at), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				key := testKey(t, rdb)
				lim := onMockTime(New(rdb, key, tc.maxRate, tc.period, WithClock(c)), c)
				if ok, err := lim.TryAcquire(ctx, tc.maxRate); !ok || err != nil {
					t.Fatalf("TryAcquire(capacity) = %v, %v", ok, err)
				}
				c.AdvanceTo(t, tc.at)
				if err := rdb.Del(ctx, key).Err(); err != nil { // FLUSHALL / restart / eviction
					t.Fatal(err)
				}
				ok, err := lim.TryAcquire(ctx, tc.maxRate)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					allowed := tc.maxRate + tc.maxRate*float64(tc.at)/float64(tc.period)
					t.Errorf("one process, key lost at %v: %v admitted in [0, %v], bound maxRate + rate·t = %v", tc.at, 2*tc.maxRate, tc.at, allowed)
				}
			})
		})
	}
}

// TestPauseHoldsAfterServerClockStepsBack: times are relative to the key's
// epoch e, and a pause's end of 0 means no pause. When the server's clock
// steps back (a failover to a replica 2s behind) to before e, the epoch
// moves back to now, so that Pause(d) still ends d later and admits
// nothing before: a step back only delays admissions.
func TestPauseHoldsAfterServerClockStepsBack(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		lim := New(rdb, testKey(t, rdb), 10, time.Second, WithClock(c))
		server := clocktest.Start // the Redis host's clock
		lim.script = mockTimeScript
		lim.serverTime = func() []any { return []any{server.Unix(), server.Nanosecond() / 1000} }

		if ok, err := lim.TryAcquire(ctx, 1); !ok || err != nil { // key created, epoch = Start
			t.Fatalf("TryAcquire(1) = %v, %v", ok, err)
		}
		server = server.Add(-2 * time.Second) // the server's clock steps back 2s
		if err := lim.Pause(ctx, 1990*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		pauseEnd := server.Add(1990 * time.Millisecond)
		server = server.Add(1300 * time.Millisecond) // 690ms before the pause ends
		n := 0
		for range 20 {
			ok, err := lim.TryAcquire(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				n++
			}
		}
		if n > 0 {
			t.Errorf("%d units admitted %v before the end of Pause(1.99s), on the server's clock; want 0", n, pauseEnd.Sub(server))
		}
	})
}

// TestPauseEndAdmitsOneUnit: at the end of a pause one unit fits, and no
// more: the floor leaves room for one unit's nanoseconds rounded down, as
// ratelimit.Limiter's does. For a unit of 1.5ns (New(2, 3ns)), 1.3 units
// do not pass at the end of the pause.
func TestPauseEndAdmitsOneUnit(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		lim := onMockTime(New(rdb, testKey(t, rdb), 2, 3*time.Nanosecond, WithClock(c)), c)
		local := ratelimit.New(2, 3*time.Nanosecond, ratelimit.WithClock(c))
		if err := lim.Pause(ctx, time.Millisecond); err != nil {
			t.Fatal(err)
		}
		local.Pause(time.Millisecond)
		c.AdvanceTo(t, time.Millisecond)
		ok, err := lim.TryAcquire(ctx, 1.3)
		if err != nil {
			t.Fatal(err)
		}
		if want := local.TryAcquire(1.3); ok != want {
			t.Errorf("TryAcquire(1.3) at the end of Pause(1ms) on New(2, 3ns) = %v; local limiter says %v (one unit fits)", ok, want)
		}
	})
}

// attackRepeater runs each reserve twice and each cancel three times, as
// go-redis may when replies are lost (MaxRetries 3: up to 4 runs).
type attackRepeater struct{ redis.Scripter }

func (r *attackRepeater) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	runs := 1
	if len(args) > 0 {
		switch args[0] {
		case opReserve:
			runs = 2
		case opCancel:
			runs = 3
		}
	}
	var cmd *redis.Cmd
	for range runs {
		cmd = r.Scripter.EvalSha(ctx, sha, keys, args...)
	}
	return cmd
}

// TestRetriedReserveAndCancelGiveBackOnce: a reserve that go-redis runs
// again finds its own nonce in the key, adds nothing and names no
// reservation before it, so that its cancel, however often it runs, gives
// back at most the one reservation. B fills New(2, 2s); A's reserve runs
// twice and its cancel three times: the bucket still holds B's 2 units,
// and nothing more passes at t=0. (go-redis's default MaxRetries of 3
// allows such runs.)
func TestRetriedReserveAndCancelGiveBackOnce(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		a := onMockTime(New(&attackRepeater{rdb}, key, 2, 2*time.Second, WithClock(c)), c)
		b := onMockTime(New(rdb, key, 2, 2*time.Second, WithClock(c)), c)
		if ok, err := b.TryAcquire(ctx, 2); !ok || err != nil {
			t.Fatalf("TryAcquire(2) = %v, %v", ok, err)
		}
		wctx, cancel := context.WithCancel(ctx)
		w := acquireAt(wctx, c, a, 1)
		cancel()
		c.Settle()
		if r := <-w; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("waiter: %v", r.err)
		}
		lv, _ := b.Level(ctx)
		if ok, err := b.TryAcquire(ctx, 1); ok || err != nil || lv < 2 {
			t.Errorf("at 0s, after B took the whole capacity 2 and A reserved and cancelled: Level %v, TryAcquire(1) = %v, %v;"+
				" want level >= 2 and false (A's repeated cancel refunded B's unit)", lv, ok, err)
		}
	})
}

// --- Attacks the limiter resists ------------------------------------------

// TestAttackNonceChainAcrossProcesses: two limiters on separate clients
// reserve and cancel in random order at a frozen time; Level must always
// equal the model: a cancel refunds only the last live reservation of the
// chain (restoring the one before it), a TryAcquire or Pause breaks the
// chain. No one's units are ever refunded by another.
func TestAttackNonceChainAcrossProcesses(t *testing.T) {
	addr := redisAddr(t)
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rng := rand.New(rand.NewPCG(seed, 7))
				rdbA, rdbB := newClient(t, addr), newClient(t, addr)
				key := testKey(t, rdbA)
				lims := []*Limiter{
					onMockTime(New(rdbA, key, 1, time.Second, WithClock(c)), c),
					onMockTime(New(rdbB, key, 1, time.Second, WithClock(c)), c),
				}
				if ok, err := lims[0].TryAcquire(ctx, 1); !ok || err != nil {
					t.Fatal(ok, err)
				}
				type waiter struct {
					id     int
					cancel context.CancelFunc
					ch     <-chan result
					done   bool
				}
				var all []*waiter
				var chain []int // ids, bottom first: the cancellable order
				level := 1.0
				paused := false
				for step := range 60 {
					switch k := rng.IntN(10); {
					case k < 4 || len(all) == 0:
						wctx, cancel := context.WithCancel(ctx)
						w := &waiter{id: len(all), cancel: cancel}
						w.ch = acquireAt(wctx, c, lims[rng.IntN(2)], 1)
						all = append(all, w)
						chain = append(chain, w.id)
						level++
					case k < 8:
						live := []*waiter{}
						for _, w := range all {
							if !w.done {
								live = append(live, w)
							}
						}
						if len(live) == 0 {
							break
						}
						w := live[rng.IntN(len(live))]
						w.cancel()
						c.Settle()
						if r := <-w.ch; !errors.Is(r.err, context.Canceled) {
							t.Fatalf("step %d: cancelled waiter returned %v", step, r.err)
						}
						w.done = true
						if n := len(chain); n > 0 && chain[n-1] == w.id {
							chain = chain[:n-1]
							level--
						}
					case k < 9:
						if ok, err := lims[rng.IntN(2)].TryAcquire(ctx, 0.001); ok || err != nil {
							t.Fatalf("step %d: TryAcquire on a full bucket = %v, %v", step, ok, err)
						}
					default:
						if !paused { // a pause at a frozen time: the floor is below the level
							if err := lims[rng.IntN(2)].Pause(ctx, time.Millisecond); err != nil {
								t.Fatal(err)
							}
							paused = true
							chain = nil
						}
					}
					if !paused {
						if lv, err := lims[rng.IntN(2)].Level(ctx); err != nil || lv != level {
							t.Fatalf("step %d: Level = %v, %v; model says %v", step, lv, err, level)
						}
					}
				}
				for _, w := range all {
					if !w.done {
						w.cancel()
					}
				}
				c.Settle()
			})
		})
	}
}

// TestAttackExtremeRates: every call on the extremes (1/ns, 1e-6/s,
// 1e-200/s, periods and pauses of ~417 days, SetRate between any two of
// them, in both directions, during pauses) answers without an error or a
// panic, with a finite level >= 0, and a bucket that was just filled at a
// rate refuses more at that rate.
func TestAttackExtremeRates(t *testing.T) {
	addr := redisAddr(t)
	rates := []struct {
		maxRate float64
		period  time.Duration
	}{
		{1, time.Nanosecond},
		{1e9, time.Second},
		{1e-6, time.Second},
		{1e-200, time.Second},
		{1, maxPeriod},
		{1e9, maxPeriod},
		{3, time.Second},
	}
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		rng := rand.New(rand.NewPCG(9, 9))
		for i, from := range rates {
			for j, to := range rates {
				key := testKey(t, rdb)
				lim := onMockTime(New(rdb, key, from.maxRate, from.period, WithClock(c)), c)
				check := func(what string) {
					t.Helper()
					lv, err := lim.Level(ctx)
					if err != nil || math.IsNaN(lv) || math.IsInf(lv, 0) || lv < 0 {
						t.Fatalf("%d->%d %s: Level = %v, %v", i, j, what, lv, err)
					}
				}
				if ok, err := lim.TryAcquire(ctx, from.maxRate); !ok || err != nil {
					t.Fatalf("%d: TryAcquire(capacity) = %v, %v", i, ok, err)
				}
				if ok, err := lim.TryAcquire(ctx, from.maxRate); ok || err != nil {
					t.Fatalf("%d: second TryAcquire(capacity) = %v, %v", i, ok, err)
				}
				paused := rng.IntN(2) == 0
				if paused {
					if err := lim.Pause(ctx, maxPeriod+time.Hour); err != nil {
						t.Fatalf("Pause: %v", err)
					}
					check("after Pause(417d)")
				}
				before, _ := lim.Level(ctx)
				if err := lim.SetRate(ctx, to.maxRate, to.period); err != nil {
					t.Fatalf("%d->%d SetRate: %v", i, j, err)
				}
				check("after SetRate")
				// Acquire with a deadline; if it waits, cancel it at once:
				// no time passes.
				dctx, cancel := c.WithTimeout(ctx, time.Second)
				w := acquireAt(dctx, c, lim, to.maxRate)
				var err error
				select {
				case r := <-w:
					err = r.err
				default:
					cancel()
					c.Settle()
					if err = (<-w).err; errors.Is(err, context.Canceled) {
						err = nil
					}
				}
				cancel()
				var de *ratelimit.DeadlineError
				if err != nil && !errors.As(err, &de) {
					t.Fatalf("%d->%d Acquire: %v", i, j, err)
				}
				if err := lim.SetRate(ctx, from.maxRate, from.period); err != nil {
					t.Fatalf("%d->%d SetRate back: %v", i, j, err)
				}
				check("after SetRate back")
				// Rescaling rounds up and keeps every unit (see
				// TestSetRateThereAndBackKeepsUnits): at the same instant,
				// never emptier than before.
				if lv, _ := lim.Level(ctx); !paused && lv < before*(1-1e-12) {
					t.Errorf("%d->%d: Level %v after SetRate there and back; was %v", i, j, lv, before)
				}
				if _, err := lim.HasCapacity(ctx, from.maxRate/2); err != nil {
					t.Fatalf("HasCapacity: %v", err)
				}
				c.Advance(time.Duration(rng.Int64N(int64(time.Hour))))
				check("later")
			}
		}
	})
}

// TestAttackConcurrentLimitersRealTime: four limiters with their own
// clients on one key, on the server's real clock, run Acquire (with short
// deadlines and random cancels), TryAcquire and Pause concurrently. In any
// window the admissions stay within maxRate + rate·(window + slack), slack
// covering the reply latency; every waiter returns. Acquires that return
// nil well after their deadline are reported, not failed: on the real
// clock a loaded machine delays them.
func TestAttackConcurrentLimitersRealTime(t *testing.T) {
	addr := redisAddr(t)
	const (
		maxRate = 20.0
		period  = 100 * time.Millisecond // a unit every 5ms
		run     = 1500 * time.Millisecond
		procs   = 4
		slack   = 30 * time.Millisecond
	)
	key := testKey(t, newClient(t, addr))
	var mu sync.Mutex
	type adm struct {
		at     time.Time
		amount float64
	}
	var at []adm
	var late, bad atomic.Int64
	var badErr atomic.Value
	end := time.Now().Add(run)
	var wg sync.WaitGroup
	for p := range procs {
		rdb := newClient(t, addr)
		lim := New(rdb, key, maxRate, period)
		for w := range 4 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(p), uint64(w)))
				for time.Now().Before(end) {
					var ok bool
					var err error
					amount := 1.0
					switch k := rng.IntN(100); {
					case k < 50:
						d := time.Duration(rng.Int64N(int64(60 * time.Millisecond)))
						ctx, cancel := context.WithTimeout(context.Background(), d)
						if rng.IntN(3) == 0 {
							go func() { time.Sleep(d / 2); cancel() }()
						}
						deadline, _ := ctx.Deadline()
						amount = []float64{1, 0.5, 3}[rng.IntN(3)]
						err = lim.Acquire(ctx, amount)
						ok = err == nil
						// The turn is before the deadline; the return may
						// lag it by the scheduler's delay.
						if ok && time.Now().After(deadline.Add(25*time.Millisecond)) {
							late.Add(1)
						}
						cancel()
						if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
							err = nil
						}
					case k < 99:
						ok, err = lim.TryAcquire(context.Background(), 1)
					default:
						err = lim.Pause(context.Background(), time.Duration(rng.Int64N(int64(20*time.Millisecond))))
					}
					if err != nil {
						bad.Add(1)
						badErr.Store(err)
					}
					if ok {
						mu.Lock()
						at = append(at, adm{time.Now(), amount})
						mu.Unlock()
					}
					time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
				}
			})
		}
	}
	returns(t, wg.Wait)
	if n := bad.Load(); n > 0 {
		t.Errorf("%d unexpected errors, e.g. %v", n, badErr.Load())
	}
	if n := late.Load(); n > 0 {
		// Measured on the real clock, which a loaded machine delays: a
		// goroutine admitted in time may run again only later. The
		// deterministic tests check deadlines; this one only reports.
		t.Logf("%d Acquires returned nil more than 25ms after their deadline", n)
	}
	sort.Slice(at, func(i, j int) bool { return at[i].at.Before(at[j].at) })
	unit := float64(period) / maxRate
	worst, total := -math.MaxFloat64, 0.0
	for i := range at {
		sum := 0.0
		for j := i; j < len(at); j++ {
			sum += at[j].amount
			allowed := maxRate + float64(at[j].at.Sub(at[i].at)+slack)/unit
			worst = max(worst, sum-allowed)
		}
		total += at[i].amount
	}
	t.Logf("%d admissions, %v units in %v (rate allows %v); closest to the bound: %.2f units",
		len(at), total, run, maxRate+float64(run)/unit, worst)
	if worst > 0 {
		t.Errorf("admissions exceeded maxRate + rate·(t + %v) by %.2f units", slack, worst)
	}
}

// TestAttackMatchesLocalOnExtremes drives ratelimit.Limiter and a Limiter
// through the same random TryAcquire, HasCapacity, Level, Pause and clock
// steps (no SetRate, so no rescaling drift) on rates with a whole number
// of nanoseconds a unit, including 1/ns and long periods, and requires the
// same answers.
func TestAttackMatchesLocalOnExtremes(t *testing.T) {
	addr := redisAddr(t)
	rates := []struct {
		maxRate float64
		period  time.Duration
	}{
		{1, time.Nanosecond},
		{1e9, time.Second},
		{1000, time.Millisecond},
		{5, 5 * time.Nanosecond},
		{1, 100 * 24 * time.Hour},
		{1e6, 100 * 24 * time.Hour},
		{2, 90 * 24 * time.Hour},
	}
	for seed := range uint64(14) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				rng := rand.New(rand.NewPCG(seed, 3))
				r := rates[int(seed)%len(rates)]
				local := ratelimit.New(r.maxRate, r.period, ratelimit.WithClock(c))
				remote := onMockTime(New(rdb, testKey(t, rdb), r.maxRate, r.period, WithClock(c)), c)
				amount := func() float64 {
					return []float64{1, r.maxRate, math.Floor(r.maxRate * rng.Float64()), 2}[rng.IntN(4)]
				}
				for step := range 150 {
					switch k := rng.IntN(10); {
					case k < 4:
						a := amount()
						if a > r.maxRate {
							break
						}
						want := local.TryAcquire(a)
						if got, err := remote.TryAcquire(ctx, a); err != nil || got != want {
							t.Fatalf("step %d at %v: TryAcquire(%v) = %v, %v; local says %v", step, c.Elapsed(), a, got, err, want)
						}
					case k < 5:
						a := amount()
						if a > r.maxRate {
							break
						}
						want := local.HasCapacity(a)
						if got, err := remote.HasCapacity(ctx, a); err != nil || got != want {
							t.Fatalf("step %d at %v: HasCapacity(%v) = %v, %v; local says %v", step, c.Elapsed(), a, got, err, want)
						}
					case k < 6:
						want := local.Level()
						if got, err := remote.Level(ctx); err != nil || math.Abs(got-want) > 1e-9*max(1, want) {
							t.Fatalf("step %d at %v: Level = %v, %v; local says %v", step, c.Elapsed(), got, err, want)
						}
					case k < 7:
						d := time.Duration(rng.Int64N(int64(min(3*r.period, 48*time.Hour))) + 1)
						local.Pause(d)
						if err := remote.Pause(ctx, d); err != nil {
							t.Fatal(err)
						}
					default:
						d := time.Duration(rng.Int64N(int64(r.period)/1000+2)) * time.Microsecond
						if rng.IntN(20) == 0 {
							d = 30 * time.Hour
						}
						c.Advance(d)
					}
				}
			})
		})
	}
}

// TestAttackKeyLostDuringPause: the key is lost in the middle of a pause
// with a waiter reserved during it; the limiter that saw it writes it back
// full, so nothing passes before the pause ends, the waiter keeps its
// turn, and the steady rate follows with no burst.
func TestAttackKeyLostDuringPause(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lim := onMockTime(New(rdb, key, 10, time.Second, WithClock(c)), c)
		if err := lim.Pause(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		w := acquireAt(ctx, c, lim, 1) // turn at 10s, on top of the pause's 9
		c.AdvanceTo(t, 5*time.Second)
		if err := rdb.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		for _, at := range []time.Duration{5 * time.Second, 9999 * time.Millisecond, 10 * time.Second} {
			c.AdvanceTo(t, at)
			if ok, err := lim.TryAcquire(ctx, 0.01); ok || err != nil {
				t.Errorf("TryAcquire(0.01) at %v after the key was lost in the pause = %v, %v; want false", at, ok, err)
			}
		}
		if r := waitFor(t, c, w, time.Minute); r.err != nil || r.at != 10*time.Second {
			t.Errorf("waiter reserved in the pause admitted at %v (%v); want 10s", r.at, r.err)
		}
		c.AdvanceTo(t, 10100*time.Millisecond)
		if ok, err := lim.TryAcquire(ctx, 1); !ok || err != nil {
			t.Errorf("TryAcquire(1) at 10.1s = %v, %v; want true, the steady rate", ok, err)
		}
	})
}

// TestFallbackTryAcquireOverShare: WithFallback documents that an amount
// above share*maxRate fails with ratelimit.ErrExceedsCapacity while the
// fallback is in use, and TryAcquire that an amount Acquire would refuse
// gives false and that error: on the fallback both give it.
func TestFallbackTryAcquireOverShare(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		h := &hooked{Scripter: rdb}
		h.down.Store(true)
		lim := onMockTime(New(h, testKey(t, rdb), 4, 4*time.Second, WithClock(c), WithFallback(0.5, nil)), c)
		c.Advance(time.Hour) // the local bucket (2 per 4s) has drained since the switch fill
		if _, err := lim.HasCapacity(ctx, 1); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Hour)
		aerr := lim.Acquire(ctx, 3)
		ok, err := lim.TryAcquire(ctx, 3)
		if !errors.Is(err, ratelimit.ErrExceedsCapacity) {
			t.Errorf("on the fallback (capacity 2): TryAcquire(3) = %v, %v; Acquire(3) = %v; want ErrExceedsCapacity from both", ok, err, aerr)
		}
	})
}

// TestSetRateThereAndBackKeepsUnits: SetRate keeps the units in the bucket
// however long they take to drain at the new rate, so that a SetRate back
// brings them back. New(1000, 1s) full, SetRate(1, 1 week) (1000 weeks to
// drain) or SetRate(1e-200, 1s), then SetRate(1000, 1s): the bucket holds
// the 1000 units and admits nothing more at the same instant, as
// ratelimit.Limiter does.
func TestSetRateThereAndBackKeepsUnits(t *testing.T) {
	addr := redisAddr(t)
	for _, to := range []struct {
		maxRate float64
		period  time.Duration
	}{{1, 7 * 24 * time.Hour}, {1e-200, time.Second}} {
		t.Run(fmt.Sprintf("%v per %v", to.maxRate, to.period), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				lim := onMockTime(New(rdb, testKey(t, rdb), 1000, time.Second, WithClock(c)), c)
				local := ratelimit.New(1000, time.Second, ratelimit.WithClock(c))
				if ok, err := lim.TryAcquire(ctx, 1000); !ok || err != nil {
					t.Fatal(ok, err)
				}
				local.TryAcquire(1000)
				if err := lim.SetRate(ctx, to.maxRate, to.period); err != nil {
					t.Fatal(err)
				}
				local.SetRate(to.maxRate, to.period)
				if err := lim.SetRate(ctx, 1000, time.Second); err != nil {
					t.Fatal(err)
				}
				local.SetRate(1000, time.Second)
				lv, _ := lim.Level(ctx)
				n := 0.0
				for _, a := range []float64{1000, 500, 250, 125, 64, 32, 16, 8, 4, 2, 1} {
					if ok, err := lim.TryAcquire(ctx, a); err == nil && ok {
						n += a
					}
				}
				if n > 0 {
					t.Errorf("after SetRate(%v, %v) and back to (1000, 1s), at the same instant: Level %v, %v more units admitted; local limiter: Level %v, HasCapacity(1) %v",
						to.maxRate, to.period, lv, n, local.Level(), local.HasCapacity(1))
				}
			})
		})
	}
}

// attackGate holds each reserve until release is closed, after telling
// held: a round trip that is slow to reach Redis.
type attackGate struct {
	redis.Scripter
	held, release chan struct{}
}

func (g *attackGate) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if len(args) > 0 && args[0] == opReserve {
		close(g.held)
		<-g.release
	}
	return g.Scripter.EvalSha(ctx, sha, keys, args...)
}

// TestSetRateWaitsForCallsInFlight: an Acquire that loaded the params
// before SetRate must reach Redis before SetRate returns, and so with the
// old rate before SetRate rescales the bucket to the new one; it must
// never reach Redis after SetRate and rescale the key back to the old
// rate. New(10, 1s) full, Acquire(1) held on its way to Redis,
// SetRate(1, 1s): SetRate waits for the Acquire, which gets its turn at
// 0.1s at the old rate; then the 11 units drain at 1/s, so that a
// TryAcquire(1) at 1.1s fails.
func TestSetRateWaitsForCallsInFlight(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		g := &attackGate{Scripter: rdb, held: make(chan struct{}), release: make(chan struct{})}
		lim := onMockTime(New(g, testKey(t, rdb), 10, time.Second, WithClock(c)), c)
		if ok, err := lim.TryAcquire(ctx, 10); !ok || err != nil {
			t.Fatal(ok, err)
		}
		w := acquireAt(ctx, c, lim, 1)
		<-g.held
		set := make(chan error, 1)
		go func() { set <- lim.SetRate(ctx, 1, time.Second) }()
		// Until SetRate waits for the lock (the bubble's time cannot tell:
		// a goroutine blocked on a mutex is not durably blocked).
		for lim.rateMu.TryRLock() {
			lim.rateMu.RUnlock()
			runtime.Gosched()
		}
		select {
		case err := <-set:
			t.Errorf("SetRate(1, 1s) returned (%v) while an Acquire with the old rate was on its way to Redis", err)
		default:
		}
		close(g.release)
		if err := <-set; err != nil {
			t.Fatal(err)
		}
		r := waitFor(t, c, w, time.Minute)
		c.AdvanceTo(t, max(c.Elapsed(), 1100*time.Millisecond))
		ok, _ := lim.TryAcquire(ctx, 1)
		if r.at != 100*time.Millisecond || r.err != nil || ok {
			t.Errorf("Acquire(1) in flight across SetRate(1, 1s) admitted at %v (%v), want 100ms, before SetRate; TryAcquire(1) at %v = %v, want false",
				r.at, r.err, c.Elapsed(), ok)
		}
	})
}
