package ratelimit

import (
	"context"
	"errors"
	"github.com/dripgo/drip/internal/clocktest"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// attackKeys returns n keys of k that all fall in one shard, so that
// sweeps, removals and resizes of that shard move them around.
func attackKeys(k *Keyed[int], n int) []int {
	var keys []int
	for i := 0; len(keys) < n; i++ {
		if k.hash(i)>>(64-shardBits) == 0 {
			keys = append(keys, i)
		}
	}
	return keys
}

// A clock that goes back and forth, with keys in one shard touched at
// different times, pauses, and SetRate: whatever the Keyed admits on a key
// must fit a leaky bucket that drains only while the clock moves forward
// (time counted as the sum of the forward steps), with Len and the tables
// consistent throughout.
func TestKeyedAttackClockBackBucketBound(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		mock := &diffClock{now: 1e15}
		maxRate, period := 4.0, time.Second
		k := NewKeyed[int](maxRate, period, WithClock(mock))
		keys := attackKeys(k, 6)
		level := map[int]float64{} // in units, drained by forward time only
		drain := func(d int64) {
			for key, l := range level {
				level[key] = max(0, l-float64(d)/float64(period)*maxRate)
			}
		}
		for op := range 2000 {
			switch x := rng.IntN(100); {
			case x < 30:
				d := rng.Int64N(int64(period))
				mock.now += d
				drain(d)
			case x < 34:
				mock.now -= rng.Int64N(int64(3 * period))
			case x < 36:
				k.Pause(keys[rng.IntN(len(keys))], time.Duration(rng.Int64N(int64(period))))
			case x < 37:
				// SetRate to a lower rate only, so the bound stays that of
				// the rate the levels are drained at (the lower one).
				if maxRate > 1 {
					maxRate--
					k.SetRate(maxRate, period)
					// SetRate keeps the units, so a bucket may be over-full:
					// capping the model at the new capacity only makes it
					// more lenient, never flags a sound admission.
					for key, l := range level {
						level[key] = min(l, maxRate)
					}
				}
			case x < 38:
				k.Len()
				checkTables(t, &k.keyed)
			default:
				key := keys[rng.IntN(len(keys))]
				amount := min([]float64{1, 0.5, 4, 2.5}[rng.IntN(4)], maxRate)
				if k.TryAcquire(key, amount) {
					level[key] += amount
					if level[key] > maxRate*(1+1e-9) {
						t.Fatalf("seed %d op %d: key %d holds %v units after admitting %v, above %v", seed, op, key, level[key], amount, maxRate)
					}
				}
			}
		}
	}
}

// After the clock moves back, a key's bucket counts from the latest reading
// of its shard, as the godoc says: here key a, which took its burst of 4 at
// T, has drained the 2 units of the 500 ms up to key b's reading at
// T+500ms, where a Limiter of its own, which never saw T+500ms, would hold
// all 4. It takes 2 more, and no more: never looser than a clock that stood
// still at T+500ms.
func TestKeyedClockBackCountsFromTheShardsLatestReading(t *testing.T) {
	mock := &diffClock{now: 1e15}
	k := NewKeyed[int](4, time.Second, WithClock(mock))
	keys := attackKeys(k, 2)
	a, b := keys[0], keys[1]
	la := New(4, time.Second, WithClock(mock))
	if !k.TryAcquire(a, 4) || !la.TryAcquire(4) {
		t.Fatal("burst refused")
	}
	mock.now += int64(500 * time.Millisecond)
	if !k.TryAcquire(b, 1) {
		t.Fatal("b refused")
	}
	mock.now -= int64(time.Hour)
	if la.TryAcquire(0.5) {
		t.Fatal("the Limiter admitted 0.5")
	}
	if !k.TryAcquire(a, 2) {
		t.Fatalf("key a refused the 2 units that drained up to its shard's latest reading (Level %v)", k.Level(a))
	}
	if k.TryAcquire(a, 0.001) {
		t.Fatalf("key a admitted more than drained up to its shard's latest reading (Level %v)", k.Level(a))
	}
}

// admissionLog records what each key admitted, and when, to check the
// leaky-bucket bound after.
type admissionLog struct {
	mu sync.Mutex
	at map[int][]admission
}

type admission struct {
	t      time.Duration
	amount float64
}

func (a *admissionLog) add(key int, t time.Duration, amount float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at == nil {
		a.at = map[int][]admission{}
	}
	a.at[key] = append(a.at[key], admission{t, amount})
}

// check fails the test if any key admitted more than a bucket of maxRate
// units draining in period allows. The admissions of a key come in time
// order, since the clock only moves while every goroutine is blocked.
func (a *admissionLog) check(t *testing.T, maxRate float64, period time.Duration) {
	t.Helper()
	for key, as := range a.at {
		level, last := 0.0, time.Duration(0)
		for i, ad := range as {
			if ad.t < last {
				// Admissions within one step are logged in any order:
				// they all happened at the same mocked time.
				t.Fatalf("key %d: admission %d at %v before %v", key, i, ad.t, last)
			}
			level = max(0, level-float64(ad.t-last)/float64(period)*maxRate) + ad.amount
			last = ad.t
			if level > maxRate*(1+1e-9) {
				t.Fatalf("key %d: admission %d (%v at %v) fills the bucket to %v, above %v", key, i, ad.amount, ad.t, level, maxRate)
			}
		}
	}
}

// Many goroutines on more keys than the cap, with waits, timeouts,
// cancellations and Allow: the keys held never exceed the cap, the count
// of keys held stays exact, each key admits no more than its bucket
// allows, every call returns, and once every bucket drained, a new key is
// admitted (the count did not drift). Run with -race.
func TestKeyedAttackCapUnderConcurrency(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		const maxRate, period, maxKeys = 2, 100 * time.Millisecond, 8
		k := NewKeyed[int](maxRate, period, WithClock(c), WithMaxKeys(maxKeys))
		var log admissionLog
		var wg sync.WaitGroup
		done := make(chan struct{})
		for g := range 24 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				for range 40 {
					key := rng.IntN(20)
					amount := float64(1 + rng.IntN(2))
					switch rng.IntN(4) {
					case 0:
						if k.TryAcquire(key, amount) {
							log.add(key, c.Elapsed(), amount)
						}
					case 1:
						if d := k.Allow(key, amount); d.OK {
							log.add(key, c.Elapsed(), amount)
						}
					default:
						ctx, cancel := c.WithTimeout(context.Background(), time.Duration(rng.Int64N(int64(3*period))))
						err := k.Acquire(ctx, key, amount)
						cancel()
						switch {
						case err == nil:
							log.add(key, c.Elapsed(), amount)
						case errors.Is(err, ErrTooManyKeys), errors.Is(err, context.DeadlineExceeded):
						default:
							t.Errorf("Acquire: %v", err)
						}
					}
				}
			})
		}
		go func() { wg.Wait(); close(done) }()
		for steps := 0; ; steps++ {
			c.Settle()
			if n := heldKeys(&k.keyed); n > maxKeys {
				t.Fatalf("%d keys held, above the cap %d", n, maxKeys)
			}
			checkTables(t, &k.keyed)
			select {
			case <-done:
			default:
				if steps > 10000 {
					t.Fatal("calls stuck")
				}
				c.Advance(3 * time.Millisecond)
				continue
			}
			break
		}
		log.check(t, maxRate, period)
		c.Advance(2 * period)
		if n := k.Len(); n != 0 {
			t.Fatalf("Len %d after every bucket drained", n)
		}
		if h := k.held.Load(); h != 0 {
			t.Fatalf("held %d after every key drained", h)
		}
		for key := range 100 + maxKeys {
			if got := k.TryAcquire(1000+key, 1); got != (key < maxKeys) {
				t.Fatalf("new key %d: TryAcquire %v", key, got)
			}
		}
		c.Settle()
		checkNoKeyedGoroutines(t)
	})
}

// checkNoKeyedGoroutines is clocktest.CheckNoGoroutines for the code of a
// Keyed and its Limiters: the test itself runs code of the package.
func checkNoKeyedGoroutines(t *testing.T) {
	t.Helper()
	clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit.(*Limiter)")
	clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit.(*keyed)")
	clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit.(*Keyed[...])")
}

// keysInShards returns a key of k in shard 0 and one in another shard.
func keysInShards(k *Keyed[int]) (a, b int) {
	a, b = -1, -1
	for i := 0; a < 0 || b < 0; i++ {
		if sh := k.hash(i) >> (64 - shardBits); sh == 0 && a < 0 {
			a = i
		} else if sh != 0 && b < 0 {
			b = i
		}
	}
	return a, b
}

// At the cap, the clock moves back an hour: once the key held has drained,
// counted from the time the Keyed (or a Limiter) notices the move, a new
// key is admitted within a sixteenth of a period: the cap's sweep, due an
// hour ahead, is brought back.
func TestKeyedAttackCapAfterClockBack(t *testing.T) {
	mock := &diffClock{now: 1e15}
	k := NewKeyed[int](2, time.Second, WithClock(mock), WithMaxKeys(1))
	a, b := keysInShards(k)
	if !k.TryAcquire(a, 2) {
		t.Fatal("a refused")
	}
	mock.now -= int64(time.Hour)
	for range 12 {
		if k.TryAcquire(b, 1) {
			return
		}
		mock.now += int64(100 * time.Millisecond)
	}
	t.Fatalf("a new key refused a second after the only key held drained (Len %d)", k.Len())
}

// Allow on a new key refused at the cap reports nothing remaining: a
// middleware that copies Remaining into its RateLimit header must not
// announce a full burst while it refuses the request. (It reported MaxRate.)
func TestKeyedAllowAtCapReportsNothingRemaining(t *testing.T) {
	mock := &diffClock{now: 1e15}
	k := NewKeyed[string](5, time.Second, WithClock(mock), WithMaxKeys(1))
	if !k.TryAcquire("a", 1) {
		t.Fatal("a refused")
	}
	d := k.Allow("b", 1)
	if d.OK || !errors.Is(d.Err, ErrTooManyKeys) {
		t.Fatalf("Allow(b) at the cap: %+v", d)
	}
	if k.TryAcquire("b", 0.001) {
		t.Fatal("TryAcquire(b) admitted at the cap")
	}
	if d.Remaining != 0 {
		t.Fatalf("Allow(b) at the cap: Remaining %v, but TryAcquire admits nothing (%+v)", d.Remaining, d)
	}
}

// A promoted key whose waiters sleep while its shard's table grows, is
// swept, compacted and shrinks around it (hashes crafted to share its home
// and surround it): its waiters are admitted at the very times a Limiter
// admits them, one cancelled takes nothing, and the key is demoted after
// with the Limiter's level.
func TestKeyedAttackPromotedKeyThroughGrowthAndSweeps(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		const maxRate, period = 2, time.Second
		k := NewKeyed[int](maxRate, period, WithClock(c))
		l := New(maxRate, period, WithClock(c))
		const hA = uint64(1) << 50 // shard 0, home 0 in any table
		bg := context.Background()
		if k.acquire(bg, hA, 2) != nil || l.Acquire(bg, 2) != nil {
			t.Fatal("burst refused")
		}
		type res struct {
			at  time.Duration
			err error
		}
		start := func(ctx context.Context, f func(context.Context) error) chan res {
			ch := make(chan res, 1)
			go func() { err := f(ctx); ch <- res{c.Elapsed(), err} }()
			c.Settle()
			return ch
		}
		var kw, lw []chan res
		var cancels []context.CancelFunc
		for range 3 {
			ctx, cancel := context.WithCancel(bg)
			cancels = append(cancels, cancel)
			kw = append(kw, start(ctx, func(ctx context.Context) error { return k.acquire(ctx, hA, 1) }))
			lw = append(lw, start(ctx, func(ctx context.Context) error { return l.Acquire(ctx, 1) }))
		}
		if k.waiting(hA) != 3 {
			t.Fatalf("%d waiting", k.waiting(hA))
		}
		// Crowd shard 0: hashes just below and above hA, and far off.
		for i := range uint64(300) {
			for _, h := range []uint64{hA - 1 - i, hA + 1 + i, hA + (i+1)<<40} {
				if !k.check(h, 1, true) {
					t.Fatalf("crowd %x refused", h)
				}
			}
			if i%50 == 0 {
				checkTables(t, &k.keyed)
			}
		}
		cancels[1]() // the middle waiter leaves
		c.Settle()
		c.Advance(250 * time.Millisecond)
		// Some of the crowd again, then let all of it drain and sweep.
		for i := range uint64(100) {
			k.check(hA+1+i, 0.5, true)
		}
		checkTables(t, &k.keyed)
		c.Advance(800 * time.Millisecond)
		k.length()
		checkTables(t, &k.keyed)
		c.Advance(2 * time.Second)
		for i, ch := range kw {
			rk, rl := <-ch, <-lw[i]
			if rk.at != rl.at || (rk.err == nil) != (rl.err == nil) {
				t.Fatalf("waiter %d: Keyed %v at %v, Limiter %v at %v", i, rk.err, rk.at, rl.err, rl.at)
			}
		}
		if lk, lr := k.level(hA), l.Level(); !near(lk, lr) {
			t.Fatalf("level %v, the Limiter's %v", lk, lr)
		}
		if n := k.length(); n != 0 {
			t.Fatalf("Len %d after everything drained", n)
		}
		checkTables(t, &k.keyed)
		for _, cancel := range cancels {
			cancel()
		}
		c.Settle()
		checkNoKeyedGoroutines(t)
	})
}

// Random calls under a small cap, with pauses (which may take the Keyed
// past the cap), SetRate, and a clock that sometimes moves back: the count
// of keys held stays exact, and right after Len swept every shard, a new
// key is admitted if and only if fewer keys than the cap hold state.
func TestKeyedAttackCapCountStaysExact(t *testing.T) {
	for seed := range uint64(15) {
		rng := rand.New(rand.NewPCG(seed, 3))
		mock := &diffClock{now: 1e15}
		const maxKeys = 5
		rates := []struct {
			maxRate float64
			period  time.Duration
		}{{3, time.Second}, {1, 100 * time.Millisecond}, {10, time.Minute}, {0.5, time.Second}}
		r := rates[0]
		k := NewKeyed[int](r.maxRate, r.period, WithClock(mock), WithMaxKeys(maxKeys))
		fresh := 1 << 20
		for op := range 1500 {
			key := rng.IntN(12)
			switch x := rng.IntN(100); {
			case x < 25:
				mock.now += rng.Int64N(int64(r.period) / 2)
			case x < 27:
				mock.now -= rng.Int64N(int64(r.period))
			case x < 30:
				k.Pause(key, time.Duration(rng.Int64N(int64(r.period))))
			case x < 32:
				r = rates[rng.IntN(len(rates))]
				k.SetRate(r.maxRate, r.period)
			case x < 40:
				n := k.Len()
				checkTables(t, &k.keyed)
				fresh++
				got := k.HasCapacity(fresh, min(1, r.maxRate))
				if got != (n < maxKeys) {
					t.Fatalf("seed %d op %d: %d keys hold state, cap %d, yet HasCapacity on a new key is %v", seed, op, n, maxKeys, got)
				}
			case x < 60:
				k.Allow(key, min(float64(1+rng.IntN(3)), r.maxRate))
			default:
				k.TryAcquire(key, min(float64(1+rng.IntN(3)), r.maxRate))
			}
		}
		checkTables(t, &k.keyed)
	}
}

// Goroutines on overlapping keys under a cap, with waiters that time out
// or are cancelled, pauses, and SetRate to the same rate (which moves every
// shard's epoch and converts every tat) from other goroutines: each key
// admits no more than its bucket allows, the count of keys held is exact
// whenever all are blocked, every call returns, no goroutine is left, and
// once all drained the cap admits new keys again. Run with -race.
func TestKeyedAttackConcurrentPauseSetRateCap(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		const maxRate, period, maxKeys = 3, 60 * time.Millisecond, 6
		k := NewKeyed[int](maxRate, period, WithClock(c), WithMaxKeys(maxKeys))
		var log admissionLog
		var wg sync.WaitGroup
		done := make(chan struct{})
		for g := range 20 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 9))
				for range 30 {
					key := rng.IntN(10)
					amount := []float64{1, 0.5, 3, 2}[rng.IntN(4)]
					switch rng.IntN(8) {
					case 0:
						k.Pause(key, time.Duration(rng.Int64N(int64(period))))
					case 1:
						k.SetRate(maxRate, period)
					case 2:
						if k.TryAcquire(key, amount) {
							log.add(key, c.Elapsed(), amount)
						}
					default:
						ctx, cancel := context.WithCancel(context.Background())
						if rng.IntN(2) == 0 {
							ctx, cancel = c.WithTimeout(ctx, time.Duration(rng.Int64N(int64(2*period))))
						} else {
							// cancelled by a goroutine of its own, after a while
							d := time.Duration(rng.Int64N(int64(2 * period)))
							tm := c.AfterFunc(d, cancel)
							defer tm.Stop()
						}
						err := k.Acquire(ctx, key, amount)
						cancel()
						switch {
						case err == nil:
							log.add(key, c.Elapsed(), amount)
						case errors.Is(err, ErrTooManyKeys), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
						default:
							t.Errorf("Acquire: %v", err)
						}
					}
				}
			})
		}
		go func() { wg.Wait(); close(done) }()
		for steps := 0; ; steps++ {
			c.Settle()
			checkTables(t, &k.keyed)
			select {
			case <-done:
			default:
				if steps > 20000 {
					t.Fatal("calls stuck")
				}
				c.Advance(2 * time.Millisecond)
				continue
			}
			break
		}
		log.check(t, maxRate, period)
		c.Advance(3 * period)
		if n := k.Len(); n != 0 || k.held.Load() != 0 {
			t.Fatalf("Len %d, held %d after every bucket drained", n, k.held.Load())
		}
		for key := range maxKeys {
			if !k.TryAcquire(1000+key, 1) {
				t.Fatalf("new key %d refused under the cap", key)
			}
		}
		c.Advance(3 * period)
		c.Settle()
		checkNoKeyedGoroutines(t)
	})
}

// Waiters on a key while the clock moves back an hour, then forward: the
// key's waiters are admitted when its own Limiter's would be, and once
// demoted (across the shard's epoch, moved by the clock going back) the key
// admits exactly what the Limiter admits, tick by tick.
func TestKeyedAttackWaitersAcrossClockBack(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		const maxRate, period = 4, time.Second
		k := NewKeyed[string](maxRate, period, WithClock(c))
		l := New(maxRate, period, WithClock(c))
		bg := context.Background()
		c.Advance(2 * time.Hour)
		if k.Acquire(bg, "a", 4) != nil || l.Acquire(bg, 4) != nil {
			t.Fatal("burst refused")
		}
		type res struct {
			at  time.Duration
			err error
		}
		start := func(f func() error) chan res {
			ch := make(chan res, 1)
			go func() { err := f(); ch <- res{c.Elapsed(), err} }()
			c.Settle()
			return ch
		}
		var kw, lw []chan res
		for range 3 {
			kw = append(kw, start(func() error { return k.Acquire(bg, "a", 1.5) }))
			lw = append(lw, start(func() error { return l.Acquire(bg, 1.5) }))
		}
		c.Advance(300 * time.Millisecond)
		c.Set(c.Now().Add(-time.Hour))
		c.Settle()
		k.Pause("a", 100*time.Millisecond)
		l.Pause(100 * time.Millisecond)
		for range 400 {
			c.Advance(7 * time.Millisecond)
			if k.TryAcquire("a", 0.25) != l.TryAcquire(0.25) {
				t.Fatalf("at %v: TryAcquire differs: levels %v, %v", c.Elapsed(), k.Level("a"), l.Level())
			}
		}
		for i := range kw {
			rk, rl := <-kw[i], <-lw[i]
			if rk != rl {
				t.Fatalf("waiter %d: Keyed %+v, Limiter %+v", i, rk, rl)
			}
		}
		if n := len(k.shards[k.hash("a")>>(64-shardBits)].side); n != 0 {
			t.Fatalf("%d Limiters left in a's shard", n)
		}
		c.Advance(2 * period)
		if k.Len() != 0 {
			t.Fatal("a still held")
		}
		c.Settle()
		checkNoKeyedGoroutines(t)
	})
}

// Hashes crowded at the very top of the last shard, where every run ends
// against the table's end (and one is the hash a key hashing to emptyHash
// is given): inserts grow the table as they must, each key keeps its own
// bucket, sweeps and removals keep the tables right, and a promoted key
// among them keeps its Limiter.
func TestKeyedAttackRunsAtTheTableEnd(t *testing.T) {
	mock := &diffClock{now: 1e15}
	k := NewKeyed[int](2, time.Second, WithClock(mock))
	const n = 300
	top := uint64(emptyHash - 1)
	for i := range uint64(n) {
		if !k.check(top-i, 2, true) {
			t.Fatalf("key %d refused", i)
		}
		if i%37 == 0 {
			checkTables(t, &k.keyed)
		}
	}
	k.pause(top-5, time.Second)
	for i := range uint64(n) {
		if k.check(top-i, 0.1, true) {
			t.Fatalf("key %d admitted past its burst", i)
		}
	}
	mock.now += int64(500 * time.Millisecond)
	for i := uint64(0); i < n; i += 2 {
		if got := k.check(top-i, 1, true); got != (i != 5) {
			t.Fatalf("key %d after half a period: %v", i, got)
		}
	}
	checkTables(t, &k.keyed)
	mock.now += int64(600 * time.Millisecond)
	if got := k.length(); got != n/2+1 {
		t.Fatalf("Len %d, want %d", got, n/2+1)
	}
	checkTables(t, &k.keyed)
	mock.now += int64(2 * time.Second)
	if got := k.length(); got != 0 {
		t.Fatalf("Len %d after all drained", got)
	}
	checkTables(t, &k.keyed)
}
