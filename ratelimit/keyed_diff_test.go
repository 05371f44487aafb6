package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
)

// diffClock is a clock that moves only when told, and has no timers: the
// differential test never waits.
type diffClock struct {
	clock.Clock // nil: calling anything else panics
	now         int64
}

func (c *diffClock) Now() time.Time                  { return time.Unix(0, c.now) }
func (c *diffClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// deadlineCtx is a context that never ends, with a deadline on a mocked
// clock.
type deadlineCtx struct {
	context.Context
	at time.Time
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.at, true }

// keyedRates are the rates of the differential runs, from units of a
// fraction of a nanosecond to units of days and beyond.
var keyedRates = []struct {
	maxRate float64
	period  time.Duration
}{
	{4, 8 * time.Second}, {3, time.Second}, {7, time.Second}, {999, time.Minute},
	{2.5, 100 * time.Millisecond}, {0.5, time.Second}, {2.7, time.Second}, {1e9 / 1.5, time.Second},
	{1e12, time.Second}, {1, time.Nanosecond}, {2, 3 * time.Nanosecond}, {1024, time.Nanosecond},
	{1e-6, time.Second}, {1e-200, time.Hour}, {5000, 400 * 24 * time.Hour}, {1e6, time.Microsecond},
}

// TestKeyedDifferential drives a Keyed and a map of Limiters, one per key
// and never dropped, through the same random operations over many keys:
// TryAcquire, HasCapacity, Allow, Level, Acquire that is admitted at once
// or whose deadline cannot be met, Pause, SetRate, and clock steps from a
// nanosecond to periods. Every admission, refusal, error and wait must be
// the same; the levels the same up to float rounding. Every so often, Len
// must count exactly the keys whose Limiter has not drained, and the keys
// the Keyed holds before Len sweeps must all have been active within the
// time its sweeps take to come round (two cycles of the shards, and the
// clock steps of the last 64 calls).
func TestKeyedDifferential(t *testing.T) {
	opsPerRun := 70000
	if testing.Short() {
		opsPerRun = 5000
	}
	var total atomic.Int64
	for i, s := range keyedRates {
		t.Run(fmt.Sprintf("%v per %v", s.maxRate, s.period), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(i), 11))
			total.Add(int64(keyedDiffRun(t, rng, s.maxRate, s.period, opsPerRun)))
		})
	}
	t.Cleanup(func() {
		t.Logf("%d random operations", total.Load())
		if !t.Failed() && !testing.Short() && total.Load() < 1000000 {
			t.Errorf("only %d operations", total.Load())
		}
	})
}

func keyedDiffRun(t *testing.T, rng *rand.Rand, maxRate float64, period time.Duration, ops int) int {
	mock := &diffClock{now: 1e15 + rng.Int64N(1e15)}
	k := NewKeyed[int](maxRate, period, WithClock(mock))
	ref := map[int]*Limiter{}
	get := func(key int) *Limiter {
		l := ref[key]
		if l == nil {
			l = New(maxRate, period, WithClock(mock))
			ref[key] = l
		}
		return l
	}
	// drainAt is when each key's bucket is empty if nothing more happens;
	// pauseEnd when its pause ends.
	drainAt := map[int]int64{}
	pauseEnd := map[int]int64{}
	unitNs := func() float64 { return float64(period) / maxRate }
	// active holds the keys touched since their Limiter was last seen
	// drained: the others stay drained.
	active := map[int]bool{}
	// noteDrain reads the levels of both, at once: a Limiter's lock may
	// move its epoch, which rounds the units of a bucket over-full for
	// longer than ticks count, so the test reads both the same way.
	noteDrain := func(key int) {
		active[key] = true
		lk, lr := k.Level(key), get(key).Level()
		if !near(lk, lr) {
			t.Fatalf("key %d: Level %v, the Limiter's %v", key, lk, lr)
		}
		drainAt[key] = satAdd(mock.now, int64(min(math.Ceil(lr*unitNs()*(1+1e-9)), 1<<62))+2)
	}
	// calls are the times of the last 64 calls of the Keyed's methods
	// that read the clock, in a ring from calls[ncalls%64].
	var calls [numShards]int64
	ncalls := 0
	called := func() { calls[ncalls%numShards] = mock.now; ncalls++ }
	bg := context.Background()
	// keys slide: most operations fall on a window of keys that moves on,
	// a few on a handful of hot keys.
	window, slide := 1+rng.IntN(400), 50+rng.IntN(50)
	key := func(op int) int {
		if rng.IntN(4) == 0 {
			return -1 - rng.IntN(4)
		}
		return op/slide + rng.IntN(window)
	}
	amountOf := func() float64 {
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
			if rng.IntN(20) == 0 {
				return []float64{-1, math.NaN(), math.Inf(1), maxRate * 2, 0}[rng.IntN(5)]
			}
		}
		return maxRate * rng.Float64()
	}
	// waitFor returns how long l would make amount wait, from the
	// DeadlineError of a deadline of now, which changes nothing.
	waitFor := func(op int, l *Limiter, amount float64) time.Duration {
		var de *DeadlineError
		if err := l.Acquire(deadlineCtx{bg, mock.Now()}, amount); !errors.As(err, &de) {
			t.Fatalf("op %d: a deadline of now: %v", op, err)
		}
		return de.Wait
	}
	for op := range ops {
		x := rng.IntN(1000)
		if x >= 251 {
			called()
		}
		switch {
		case x < 250: // the clock moves
			var d int64
			switch rng.IntN(100) % 5 {
			case 4:
				if rng.IntN(20) == 0 {
					// Up to ten days: past the reach of the finest
					// ticks, 6.5 days, so that epochs move.
					d = rng.Int64N(int64(240 * time.Hour))
				}
			case 0:
				d = 1
			case 1:
				d = int64(min(rng.Float64()*3*unitNs(), float64(10*period)))
			case 2:
				d = int64(min(rng.Float64()*float64(period), 1e14))
			default:
				// At most a day or so: the clock stays within time's
				// range over the run.
				d = int64(min(rng.Float64()*3*float64(period), 1e14))
			}
			mock.now += d
		case x < 251 && rng.IntN(8) == 0: // SetRate, every key
			s := keyedRates[rng.IntN(len(keyedRates))]
			k.SetRate(s.maxRate, s.period)
			maxRate, period = s.maxRate, s.period
			for key, l := range ref {
				l.SetRate(s.maxRate, s.period)
				noteDrain(key)
			}
		case x < 262: // Pause, sometimes a key never used
			key := key(op)
			if rng.IntN(3) == 0 {
				key = 1<<40 + op
			}
			d := time.Duration(rng.Int64N(int64(min(2*period, 24*time.Hour)) + 1))
			k.Pause(key, d)
			get(key).Pause(d)
			if d > 0 {
				pauseEnd[key] = max(pauseEnd[key], mock.now+int64(d))
			}
			noteDrain(key)
		case x < 500: // HasCapacity and TryAcquire
			key, amount := key(op), amountOf()
			l := get(key)
			hk, hr := k.HasCapacity(key, amount), l.HasCapacity(amount)
			gk, gr := k.TryAcquire(key, amount), l.TryAcquire(amount)
			if hk != hr || gk != gr {
				t.Fatalf("op %d at %v: key %d amount %v: HasCapacity %v, TryAcquire %v; the Limiter's %v, %v",
					op, mock.now, key, amount, hk, gk, hr, gr)
			}
			noteDrain(key)
		case x < 650: // Allow
			key, amount := key(op), amountOf()
			l := get(key)
			valid := checkAmount(amount, maxRate) == nil
			var wantWait time.Duration
			if valid && amount > 0 && !(l.Waiting() == 0 && l.HasCapacity(amount)) {
				wantWait = waitFor(op, l, amount)
			}
			d := k.Allow(key, amount)
			ok := l.TryAcquire(amount)
			if d.OK != ok || (d.Err == nil) != valid || (!d.OK && !sameWait(d.RetryAfter, wantWait)) {
				t.Fatalf("op %d: key %d amount %v: Allow %+v; the Limiter admits %v, would wait %v\n%s\n%s", op, key, amount, d, ok, wantWait, describeKey(k, key), describeLimiter(l))
			}
			level := l.Level()
			remaining := l.Allow(0).Remaining // the units that fit now, rounded down
			if want := max(maxRate-level, 0); math.Abs(remaining-want) > 1e-9*maxRate && !(mock.now < pauseEnd[key]) || mock.now < pauseEnd[key] && remaining != 0 {
				t.Fatalf("op %d: key %d: the Limiter's Allow(0) says %v remain, at level %v", op, key, remaining, level)
			}
			reset := min(level*unitNs(), math.MaxInt64)
			if !near(d.Remaining, remaining) || math.Abs(float64(d.Reset)-reset) > 1+1e-9*reset {
				t.Fatalf("op %d: key %d: Allow %+v; the Limiter's level %v: want remaining %v, reset %v", op, key, d, level, remaining, reset)
			}
			noteDrain(key)
		case x < 750: // Level and Waiting
			key := key(op)
			l := get(key)
			if lk, lr := k.Level(key), l.Level(); !near(lk, lr) || k.Waiting(key) != 0 {
				t.Fatalf("op %d: key %d: Level %v, the Limiter's %v", op, key, lk, lr)
			}
		default: // Acquire: admitted at once, or a deadline that cannot be met
			key, amount := key(op), amountOf()
			l := get(key)
			if checkAmount(amount, maxRate) != nil || amount == 0 || l.HasCapacity(amount) {
				ek, er := k.Acquire(bg, key, amount), l.Acquire(bg, amount)
				if !errors.Is(ek, errors.Unwrap(er)) || (ek == nil) != (er == nil) {
					t.Fatalf("op %d: key %d: Acquire(%v) = %v, the Limiter's %v", op, key, amount, ek, er)
				}
				noteDrain(key)
				continue
			}
			wait := waitFor(op, l, amount)
			at := mock.Now().Add(time.Duration(rng.Int64N(int64(min(wait, 1<<62)) + 1)))
			ek, er := k.Acquire(deadlineCtx{bg, at}, key, amount), l.Acquire(deadlineCtx{bg, at}, amount)
			var dk, dr *DeadlineError
			if !errors.As(ek, &dk) || !errors.As(er, &dr) || dk.Amount != dr.Amount || dk.Remaining != dr.Remaining || !sameWait(dk.Wait, dr.Wait) {
				t.Fatalf("op %d: key %d: Acquire(%v) with deadline %v: %v, the Limiter's %v\n%s\n%s", op, key, amount, at, ek, er, describeKey(k, key), describeLimiter(l))
			}
		}
		if op%500 == 499 {
			// Before Len sweeps: a key that drained at T has been dropped
			// once 64 calls came at T + 65 shard gaps or later. (The 64th
			// such call finds that either 64 shards were swept since T,
			// or a sweep due.) SetRate drops the keys drained before it.
			gap := max(int64(period), int64(64*time.Millisecond)) / numShards
			if ncalls >= numShards {
				last64 := calls[ncalls%numShards]
				recent := 0
				for _, at := range drainAt {
					if at+65*gap > last64 {
						recent++
					}
				}
				if held := heldKeys(&k.keyed); held > recent {
					t.Fatalf("op %d: %d keys held, but only %d were active within the reach of the sweeps", op, held, recent)
				}
			}
			want := 0
			for key := range active {
				l := ref[key]
				lk, lr := k.Level(key), l.Level()
				if !near(lk, lr) {
					t.Fatalf("op %d: key %d: Level %v, the Limiter's %v", op, key, lk, lr)
				}
				if lr > 0 || l.Waiting() > 0 {
					want++
				} else {
					delete(active, key)
				}
			}
			if got := k.Len(); got != want {
				t.Fatalf("op %d: Len %d, but %d Limiters have not drained", op, got, want)
			}
			checkTables(t, &k.keyed)
		}
	}
	return ops
}

// sameWait reports whether two waits are the same, as a Limiter counts
// them: a wait behind a bucket that takes longer than maxFullNs to drain
// is counted from the Limiter's epoch, and is just "longer than that".
func sameWait(a, b time.Duration) bool {
	return a == b || (a > maxFullNs && b > maxFullNs)
}

// TestKeyedDifferentialWaiting drives a Keyed and a map of Limiters through
// the same random calls on a few keys, with callers that wait: Acquire
// with contexts that are cancelled later or have deadlines, TryAcquire,
// Pause, SetRate and clock steps, in a synctest bubble. Every call must end
// the same way at the same time on both: admitted in the same order, with
// the same errors, and the same waits in DeadlineErrors.
func TestKeyedDifferentialWaiting(t *testing.T) {
	rates := keyedRates[:8]
	runs := 24
	if testing.Short() {
		runs = 3
	}
	for run := range runs {
		s := rates[run%len(rates)]
		t.Run(fmt.Sprintf("%d: %v per %v", run, s.maxRate, s.period), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				keyedWaitRun(t, c, rand.New(rand.NewPCG(uint64(run), 5)), s.maxRate, s.period)
			})
		})
	}
}

type waitResult struct {
	at  time.Duration
	err error
}

func keyedWaitRun(t *testing.T, c *clocktest.Clock, rng *rand.Rand, maxRate float64, period time.Duration) {
	k := NewKeyed[int](maxRate, period, WithClock(c))
	ref := map[int]*Limiter{}
	get := func(key int) *Limiter {
		l := ref[key]
		if l == nil {
			l = New(maxRate, period, WithClock(c))
			ref[key] = l
		}
		return l
	}
	type call struct {
		op, key int
		amount  float64
		k, r    chan waitResult
	}
	var calls []call
	var cancels, all []context.CancelFunc
	start := func(ctx context.Context, f func() error) chan waitResult {
		ch := make(chan waitResult, 1)
		go func() {
			err := f()
			ch <- waitResult{c.Elapsed(), err}
		}()
		c.Settle()
		return ch
	}
	for op := range 400 {
		key := rng.IntN(4)
		amount := []float64{1, min(1, maxRate), maxRate / 2, maxRate, maxRate * rng.Float64()}[rng.IntN(5)]
		switch x := rng.IntN(100); {
		case x < 25:
			c.Advance(time.Duration(rng.Int64N(int64(period)/2 + 1)))
		case x < 55:
			// Every call can be cancelled at the end; some before.
			ctx, cancel := context.WithCancel(context.Background())
			all = append(all, cancel)
			switch rng.IntN(3) {
			case 1:
				cancels = append(cancels, cancel)
			case 2:
				ctx, cancel = c.WithTimeout(ctx, time.Duration(rng.Int64N(int64(2*period))))
				cancels = append(cancels, cancel)
			}
			l := get(key)
			calls = append(calls, call{op, key, amount,
				start(ctx, func() error { return k.Acquire(ctx, key, amount) }),
				start(ctx, func() error { return l.Acquire(ctx, amount) })})
		case x < 65 && len(cancels) > 0:
			i := rng.IntN(len(cancels))
			cancels[i]()
			cancels = slices.Delete(cancels, i, i+1)
			c.Settle()
		case x < 85:
			if gk, gr := k.TryAcquire(key, amount), get(key).TryAcquire(amount); gk != gr {
				t.Fatalf("op %d: TryAcquire(%d, %v) = %v, the Limiter's %v", op, key, amount, gk, gr)
			}
		case x < 92:
			d := time.Duration(rng.Int64N(int64(period)))
			k.Pause(key, d)
			get(key).Pause(d)
			c.Settle()
		case x < 94:
			s := keyedRates[rng.IntN(8)]
			k.SetRate(s.maxRate, s.period)
			for _, l := range ref {
				l.SetRate(s.maxRate, s.period)
			}
			maxRate, period = s.maxRate, s.period
			c.Settle()
		default:
			want := 0
			for key, l := range ref {
				if lk, lr := k.Level(key), l.Level(); !near(lk, lr) || k.Waiting(key) != l.Waiting() {
					t.Fatalf("op %d: key %d: level %v, %d waiting; the Limiter's %v, %d", op, key, lk, k.Waiting(key), lr, l.Waiting())
				}
				if l.Level() > 0 || l.Waiting() > 0 {
					want++
				}
			}
			if got := k.Len(); got != want {
				t.Fatalf("op %d: Len %d, want %d", op, got, want)
			}
		}
	}
	// Ten periods more, then the callers still waiting give up.
	for range 10 {
		c.Advance(period)
	}
	for _, cancel := range all {
		cancel()
	}
	c.Settle()
	outcomes := map[string]int{}
	defer func() { t.Logf("%d calls: %v", len(calls), outcomes) }()
	for _, cl := range calls {
		rk, rr := <-cl.k, <-cl.r
		switch {
		case rk.err == nil:
			outcomes["admitted"]++
		case errors.Is(rk.err, context.Canceled):
			outcomes["cancelled"]++
		default:
			outcomes[fmt.Sprintf("%T", rk.err)]++
		}
		var dk, dr *DeadlineError
		same := rk.at == rr.at && (rk.err == nil) == (rr.err == nil)
		switch {
		case errors.As(rk.err, &dk):
			same = same && errors.As(rr.err, &dr) && dk.Amount == dr.Amount && dk.Remaining == dr.Remaining && sameWait(dk.Wait, dr.Wait)
		case rk.err != nil:
			same = same && (errors.Is(rr.err, rk.err) || errors.Is(rk.err, errors.Unwrap(rr.err)))
		}
		if !same {
			t.Fatalf("call at op %d on key %d for %v: %v at %v, the Limiter's %v at %v", cl.op, cl.key, cl.amount, rk.err, rk.at, rr.err, rr.at)
		}
	}
	c.Settle()
	for key, l := range ref {
		if k.Waiting(key) != 0 || l.Waiting() != 0 {
			t.Fatalf("key %d: %d waiting, the Limiter %d", key, k.Waiting(key), l.Waiting())
		}
	}
}

// near reports whether two levels are the same up to float rounding.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(math.Abs(a), math.Abs(b))+1e-300 }

// describeKey and describeLimiter tell the state of a key in a Keyed, and
// of a Limiter, for the failures of the differential tests.
func describeKey(k *Keyed[int], key int) string {
	h := k.hash(key)
	s := &k.shards[h>>(64-shardBits)]
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := s.find(h)
	if !found {
		return "not held"
	}
	if s.slots[i].tat != promotedTat {
		return fmt.Sprintf("plain tat %d now %d (epoch %v) scale %d cap %d", s.slots[i].tat, int64(k.clock.Since(s.epoch))*s.r.scale, s.epoch, s.r.scale, s.r.capacity)
	}
	return "promoted: " + describeLimiter(s.side[h].lim)
}

func describeLimiter(l *Limiter) string {
	p := l.cur.Load()
	return fmt.Sprintf("tat %d now %d epoch %v scale %d cap %d pauseNs %d fullNs %d blockNs %d fullCut %v floor %d floorOff %d over %v waiting %d",
		tatOf(p.state.Load()), int64(l.clock.Since(p.epoch))*p.scale, p.epoch, p.scale, p.capacity, p.pauseNs, p.fullNs, p.blockNs, p.fullCut, p.floor, p.floorOff, p.overUnits, l.q.live)
}
