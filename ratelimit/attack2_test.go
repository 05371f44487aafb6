package ratelimit

// More adversarial tests of the leaky bucket: its wait estimate far ahead,
// its conversions and floors at the edges of float64, and differential
// and concurrent attacks, kept as regression tests.

import (
	"context"
	"errors"
	"math/big"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
)

// a2Queue queues n waiters of amount each on a context the caller cancels
// at the end, so that the bubble can end.
func a2Queue(t *testing.T, c *clocktest.Clock, l *Limiter, n int, amount float64) (context.CancelFunc, []<-chan atkResult) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var chs []<-chan atkResult
	for range n {
		chs = append(chs, atkGo(ctx, c, l, amount))
	}
	if got := l.Waiting(); got != n {
		t.Fatalf("%d waiting, want %d", got, n)
	}
	return cancel, chs
}

// The deadline estimate adds up the costs of the waiters queued beyond
// what ticks count (2^62 ticks is 52 days at 1/1024 ns a tick). A daily limiter, New(1, 24h), with a full bucket and 120 callers
// waiting for half a unit each admits a newcomer of 0.5 at 60.5 days; the
// estimate says 52.6 days. A deadline at 58 days is judged meetable, the
// caller queues and misses it (plain context.DeadlineExceeded, not a
// *DeadlineError), with no SetRate, Pause or clock move; the DeadlineError
// of an earlier deadline reports a Wait 8 days short.
func TestDeadlineEstimateFarAhead(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1, day, WithClock(c))
		if !l.TryAcquire(1) {
			t.Fatal("burst refused")
		}
		stop, _ := a2Queue(t, c, l, 120, 0.5)
		defer stop()
		const due = 121 * day / 2 // 60.5 days: 121 half units behind a full bucket

		short, cancel := c.WithTimeout(context.Background(), day)
		var de *DeadlineError
		if err := l.Acquire(short, 0.5); !errors.As(err, &de) {
			t.Fatalf("deadline in 1 day: %v, want a DeadlineError", err)
		} else if de.Wait != due {
			t.Errorf("DeadlineError.Wait = %v (%.2f days), want %v (60.5 days)", de.Wait, de.Wait.Hours()/24, time.Duration(due))
		}
		cancel()

		dctx, cancel2 := c.WithTimeout(context.Background(), 58*day)
		defer cancel2()
		w := atkGo(dctx, c, l, 0.5)
		if r, ok := atkPoll(w); ok {
			if !errors.As(r.err, &de) {
				t.Fatalf("deadline at 58 days: %v", r.err)
			}
			return // fails fast, as it should
		}
		t.Errorf("a newcomer due at 60.5 days queued with a deadline at 58 days")
		c.AdvanceTo(t, 59*day)
		if r, ok := atkPoll(w); ok {
			t.Errorf("... and missed it: %v at %v", r.err, r.at)
		}
	})
}

// The deadline estimate follows a queue with near-full waiters waiter by
// waiter, in nanoseconds, beyond what ticks count (2^63 ticks is 104 days
// at 1/1024 ns a tick). New(1, 24h) with a full
// bucket and 110 callers in Wait admits a newcomer at 111 days; the
// estimate says 104. A deadline at 108 days is judged meetable and missed.
func TestDeadlineEstimateOfFullWaitersFarAhead(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1, day, WithClock(c))
		if !l.TryAcquire(1) {
			t.Fatal("burst refused")
		}
		stop, _ := a2Queue(t, c, l, 110, 1)
		defer stop()
		dctx, cancel := c.WithTimeout(context.Background(), 108*day)
		defer cancel()
		w := atkGo(dctx, c, l, 1)
		var de *DeadlineError
		if r, ok := atkPoll(w); ok {
			if !errors.As(r.err, &de) || de.Wait != 111*day {
				t.Fatalf("deadline at 108 days: %v, want a DeadlineError with a wait of 111 days", r.err)
			}
			return
		}
		t.Errorf("a newcomer due at 111 days queued with a deadline at 108 days")
		c.AdvanceTo(t, 109*day)
		if r, ok := atkPoll(w); ok {
			t.Errorf("... and missed it: %v at %v", r.err, r.at)
		}
	})
}

// A level that would take longer than maxFullNs (about 146 years) to drain
// is held as a block cut at maxFullNs (fullCut), which every epoch move
// works out again from the units: the deadline estimate must not trust the
// cut end, and refuses any deadline.
func TestDeadlineEstimateOfCutOverfullBlock(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1e12, time.Second, WithClock(c))
		if !l.TryAcquire(1e12) {
			t.Fatal("burst refused")
		}
		l.SetRate(1e-6, time.Second) // 1e12 units at 1e-6 a second: 3e10 years
		if p := l.cur.Load(); !p.fullCut {
			t.Fatalf("expected a cut block, fullNs %v", time.Duration(p.fullNs))
		}
		deadline := time.Duration(maxFullNs) + day
		dctx, cancel := c.WithTimeout(context.Background(), deadline)
		defer cancel()
		w := atkGo(dctx, c, l, 1e-6)
		var de *DeadlineError
		if r, ok := atkPoll(w); ok {
			if !errors.As(r.err, &de) {
				t.Fatalf("unexpected: %v", r.err)
			}
			return // judged unmeetable: right
		}
		c.AdvanceTo(t, deadline+time.Hour)
		if r, ok := atkPoll(w); ok && r.err != nil {
			t.Errorf("judged meetable (estimate %v), then missed: %v at %v; level still %v",
				time.Duration(maxFullNs), r.err, r.at, l.Level())
		}
	})
}

// convert keeps the ticks unchanged only when two rates have the same
// scale and the same whole ticks a unit: above 2^53 different whole
// numbers of ticks share one float64.
// New(1, 2^55-3 ns) and New(1, 2^55 ns) both have 16 ticks a nanosecond and
// unit 2^59 (exactly 2^59-48 and 2^59 ticks): a full bucket, 2^59-48
// ticks, is kept as 2^59-48 ticks at the new rate, where a unit is 2^59.
// Level reports less than the unit in the bucket, and the next unit passes
// 3 ns before the unit SetRate kept has drained.
func TestSetRateSameRoundedUnitKeepsTicks(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1, 1<<55-3, WithClock(c))
		if !l.TryAcquire(1) {
			t.Fatal("burst refused")
		}
		l.SetRate(1, 1<<55) // the unit in the bucket drains in 2^55 ns from now
		if lv := l.Level(); lv < 1 {
			t.Errorf("level after SetRate = %v, want the 1 unit that was in the bucket", lv)
		}
		c.Advance(1<<55 - 3)
		if l.TryAcquire(1) {
			t.Errorf("a unit admitted %v after SetRate; the unit in the bucket drains in %v", time.Duration(1<<55-3), time.Duration(1<<55))
		}
	})
}

// The floor a pause leaves is one unit short of full, with the unit's
// ticks rounded down, so the floor rounds up: were it capacity - cost(1),
// with cost rounded up, the bucket would look emptier than that. Alone it is
// worth a few nanoseconds (up to 64 ticks, 4 ns at 16 ticks a
// nanosecond); a SetRate to a slower rate keeps the units, and so turns a
// fraction of a tick at a fast rate into microseconds or more.
func TestPauseFloorRoundsUp(t *testing.T) {
	// New(1.3, 2^55 ns) paused for 1 ns holds 0.3 units at 1 ns, which
	// drain by 8314337773607071.49 ns; the limiter admits the whole
	// capacity at 8314337773607069 ns.
	t.Run("alone", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			const maxRate, period = 1.3, time.Duration(1) << 55
			l := New(maxRate, period, WithClock(c))
			l.Pause(1)
			// Exactly: empty at 1 + (maxRate-1)/maxRate*period ns.
			m := a2Rat(maxRate)
			empty := new(big.Rat).Sub(m, big.NewRat(1, 1))
			empty.Quo(empty, m)
			empty.Mul(empty, new(big.Rat).SetInt64(int64(period)))
			empty.Add(empty, big.NewRat(1, 1))
			const at = 8314337773607069
			if new(big.Rat).SetInt64(at).Cmp(empty) >= 0 {
				t.Fatalf("test arithmetic: the bucket is empty at %s ns", empty.FloatString(3))
			}
			c.AdvanceTo(t, at)
			if l.TryAcquire(maxRate) {
				t.Errorf("the whole capacity admitted at %d ns; the 0.3 unit a pause leaves drains by %s ns", at, empty.FloatString(3))
			}
		})
	})
	// New(2.7, 1s) paused for 1 ns holds 1.7 units at 1 ns (0.74 of a tick
	// short); SetRate(1e-6, 1s) keeps them, to drain in 19.7 days: the
	// limiter admits 1.95 microseconds early.
	t.Run("after SetRate", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			l := New(2.7, time.Second, WithClock(c))
			l.Pause(1)
			c.Advance(1)
			l.SetRate(1e-6, time.Second)
			// Exactly: 2.7-1 units at 1 ns, empty at 1 + 1.7/1e-6 s.
			empty := new(big.Rat).Sub(a2Rat(2.7), big.NewRat(1, 1))
			empty.Quo(empty, a2Rat(1e-6))
			empty.Mul(empty, big.NewRat(int64(time.Second), 1))
			empty.Add(empty, big.NewRat(1, 1))
			f, _ := empty.Float64()
			at := time.Duration(f) - time.Microsecond
			c.AdvanceTo(t, at)
			if l.TryAcquire(1e-6) {
				t.Errorf("the whole capacity admitted at %v; the 1.7 units the pause left drain by %s ns", at, empty.FloatString(3))
			}
		})
	})
}

// ---------------------------------------------------------------------------
// Attacks the limiter withstands.
// ---------------------------------------------------------------------------

// a2Exact is the exact bucket of the documentation, in rationals, with
// Pause as documented: at its end the bucket holds at least maxRate-1
// units, at the rate of then.
type a2Exact struct {
	maxRate *big.Rat
	perNs   *big.Rat
	level   *big.Rat
	at      int64
	until   int64
	paused  bool
	unit    float64
}

func a2Rat(f float64) *big.Rat { return new(big.Rat).SetFloat64(f) }

func (b *a2Exact) setRate(maxRate float64, period time.Duration) {
	b.maxRate, b.unit = a2Rat(maxRate), min(1, maxRate)
	b.perNs = new(big.Rat).Quo(b.maxRate, new(big.Rat).SetInt64(int64(period)))
}

func (b *a2Exact) drain(now int64) {
	if b.paused && now >= b.until {
		b.paused = false
		b.drain(b.until)
		if f := new(big.Rat).Sub(b.maxRate, a2Rat(b.unit)); f.Cmp(b.level) > 0 {
			b.level = f
		}
	}
	if now <= b.at {
		return
	}
	b.level.Sub(b.level, new(big.Rat).Mul(b.perNs, new(big.Rat).SetInt64(now-b.at)))
	if b.level.Sign() <= 0 {
		b.level.SetInt64(0)
	}
	b.at = now
}

// admit adds amount at now and reports whether it fitted.
func (b *a2Exact) admit(now int64, amount float64) (bool, *big.Rat) {
	b.drain(now)
	r := new(big.Rat).Sub(b.maxRate, b.level)
	r.Sub(r, a2Rat(amount))
	b.level.Add(b.level, a2Rat(amount))
	return r.Sign() >= 0 && !(b.paused && now < b.until), r
}

type a2Waiter struct {
	amount float64
	ch     chan atkResult
	done   bool
	cancel context.CancelFunc
	dist   int           // disturbances (SetRate, Pause) at arrival
	canc   int           // cancellations at arrival
	pred   time.Duration // the limiter's own estimate of its admission, -1 if unknown
}

// a2Run drives a limiter on a mock clock through random Acquire (with and
// without a cancellable context), cancellation, TryAcquire, HasCapacity,
// Level, SetRate, Pause and clock steps forward (across epoch moves), and
// checks: every admission, of a waiter or TryAcquire, fits the exact
// bucket at its time (never earlier than the exact model, across SetRate
// and Pause too); every waiter is admitted exactly when the limiter's
// deadline estimate (Limiter.due) said, or earlier only if someone ahead
// cancelled; HasCapacity agrees with TryAcquire and with Level; SetRate
// keeps the level; and everyone returns.
func a2Run(t *testing.T, c *clocktest.Clock, seed uint64, ops int, settings []atkSetting) {
	rng := rand.New(rand.NewPCG(seed, 7))
	s0 := settings[rng.IntN(len(settings))]
	l := New(s0.maxRate, s0.period, WithClock(c))
	ref := &a2Exact{level: new(big.Rat)}
	ref.setRate(s0.maxRate, s0.period)
	var (
		v          int64 // ns since the start; the clock never moves back here
		ws         []*a2Waiter
		dist, canc int
	)
	check := func(op int, what string, at int64, amount float64) {
		if ok, room := ref.admit(at, amount); !ok {
			t.Fatalf("seed %d op %d: %s admitted %v at %d ns beyond the exact bucket (room %s)", seed, op, what, amount, at, room.FloatString(18))
		}
	}
	collect := func(op int, vBefore int64, clockBefore time.Duration) {
		c.Settle()
		for i, w := range ws {
			if w.done {
				continue
			}
			r, ok := atkPoll(w.ch)
			if !ok {
				continue
			}
			w.done = true
			if r.err != nil {
				continue
			}
			if w.pred >= 0 && w.dist == dist && r.at != w.pred && (w.canc == canc || r.at > w.pred) {
				t.Fatalf("seed %d op %d: waiter %d (amount %v) admitted at %v, estimated %v (cancellations since: %d)", seed, op, i, w.amount, r.at, w.pred, canc-w.canc)
			}
			check(op, "waiter "+strconv.Itoa(i), vBefore+int64(r.at-clockBefore), w.amount)
		}
	}
	for op := range ops {
		vBefore, clockBefore := v, c.Elapsed()
		p := l.cur.Load()
		maxRate, period := p.maxRate, p.period
		unitNs := float64(period) / maxRate
		amount := func() float64 {
			switch rng.IntN(6) {
			case 0:
				return maxRate
			case 1:
				return min(1, maxRate)
			case 2:
				return maxRate / float64(rng.IntN(8)+1)
			case 3:
				return maxRate * 1e-9
			default:
				return maxRate * rng.Float64()
			}
		}
		switch k := rng.IntN(100); {
		case k < 30: // forward
			var d time.Duration
			switch rng.IntN(5) {
			case 0:
				d = 1
			case 1:
				d = time.Duration(min(rng.Float64()*3*unitNs, float64(10*period)))
			case 2:
				d = time.Duration(rng.Int64N(int64(period)) + 1)
			case 3:
				d = time.Duration(rng.Int64N(int64(8 * day)))
			default: // around whole units
				d = time.Duration(min(unitNs*float64(rng.IntN(3)+1), float64(10*period))) + time.Duration(rng.IntN(5)-2)
			}
			d = max(d, 0)
			c.Advance(d)
			v += int64(d)
		case k < 55: // Acquire
			a := amount()
			w := &a2Waiter{amount: a, ch: make(chan atkResult, 1), dist: dist, canc: canc, pred: -1}
			ctx := context.Background()
			if rng.IntN(2) == 0 {
				ctx, w.cancel = context.WithCancel(ctx)
			}
			l.mu.Lock()
			if pp := l.cur.Load(); a <= pp.maxRate {
				if ns, now, ok := pp.now(c); ok && now >= l.seen.Load() {
					w.pred = c.Elapsed() + time.Duration(l.due(pp, now, pp.cost(a))-ns)
				}
			}
			l.mu.Unlock()
			ws = append(ws, w)
			go func() {
				err := l.Acquire(ctx, a)
				w.ch <- atkResult{c.Elapsed(), err}
			}()
		case k < 70: // TryAcquire
			a := amount()
			has := l.HasCapacity(a)
			got := l.TryAcquire(a)
			if has != got {
				t.Fatalf("seed %d op %d: HasCapacity(%v) = %v but TryAcquire = %v", seed, op, a, has, got)
			}
			if got && a > 0 {
				check(op, "TryAcquire", v, a)
			}
		case k < 74: // Level against HasCapacity
			if l.Waiting() > 0 {
				break
			}
			lv := l.Level()
			if !(lv >= 0) {
				t.Fatalf("seed %d op %d: level %v", seed, op, lv)
			}
			if room := maxRate - lv; room > 0 {
				hi := room*(1+1e-9) + maxRate*1e-12
				lo := room*(1-1e-9) - maxRate*1e-12
				if hi <= maxRate && l.HasCapacity(hi) {
					t.Fatalf("seed %d op %d: level %v of %v, yet HasCapacity(%v)", seed, op, lv, maxRate, hi)
				}
				pp := l.cur.Load()
				if ns, _, ok := pp.now(c); ok && ns >= pp.blockNs && lo > 0 && !l.HasCapacity(lo) {
					t.Fatalf("seed %d op %d: level %v of %v, yet not HasCapacity(%v)", seed, op, lv, maxRate, lo)
				}
			}
		case k < 80: // cancel some
			for _, w := range ws {
				if !w.done && w.cancel != nil && rng.IntN(3) == 0 {
					canc++
					w.cancel()
				}
			}
		case k < 86: // SetRate
			collect(op, vBefore, clockBefore)
			vBefore, clockBefore = v, c.Elapsed()
			s := settings[rng.IntN(len(settings))]
			dist++
			p0 := l.cur.Load()
			ns0, _, ok0 := p0.now(c)
			ok0 = ok0 && l.Waiting() == 0 && p0.pauseNs <= ns0
			lv0 := l.Level()
			l.SetRate(s.maxRate, s.period)
			if p1 := l.cur.Load(); ok0 && p1.pauseNs == 0 {
				if lv1 := l.Level(); lv1 < lv0*(1-1e-12) || lv1 > lv0*(1+1e-9)+s.maxRate*1e-9+2/p1.unit {
					t.Fatalf("seed %d op %d: SetRate(%v, %v) from (%v, %v): level %v -> %v", seed, op, s.maxRate, s.period, maxRate, period, lv0, lv1)
				}
			}
			ref.drain(v)
			ref.setRate(s.maxRate, s.period)
		case k < 90: // Pause
			collect(op, vBefore, clockBefore)
			vBefore, clockBefore = v, c.Elapsed()
			d := time.Duration(rng.Int64N(int64(min(2*period, time.Hour))) + 1)
			dist++
			l.Pause(d)
			ref.drain(v)
			if until := v + int64(d); until > ref.until {
				ref.until, ref.paused = until, true
			}
		}
		collect(op, vBefore, clockBefore)
	}
	for _, w := range ws {
		if w.cancel != nil {
			w.cancel()
		}
	}
	dist++
	l.SetRate(1e12, time.Second)
	ref.drain(v)
	ref.setRate(1e12, time.Second)
	for range 5 {
		vb, cb := v, c.Elapsed()
		c.Advance(30 * day)
		v += int64(30 * day)
		collect(ops, vb, cb)
	}
	for i, w := range ws {
		if !w.done {
			t.Fatalf("seed %d: waiter %d (amount %v) never returned", seed, i, w.amount)
		}
	}
	l.mu.Lock()
	armed, timer := l.armed, l.timer
	l.mu.Unlock()
	if armed || timer != nil {
		t.Fatalf("seed %d: a timer is left after everyone returned", seed)
	}
}

// The differential attack above, on ordinary and extreme rates (units of
// days at 16 ticks a nanosecond, units of a tick, 1e-200 an hour, periods
// of 2^49 and 2^55 ns at which the costs of a few waiters add up past
// 2^60 ticks). A2SEEDS=n runs n seeds.
func TestAttack2DifferentialWithWaiters(t *testing.T) {
	settings := []atkSetting{
		{1, 1 << 49}, {1, 1 << 55}, {0.5, 1 << 55}, {63, 1 << 49}, {3, time.Second},
		{1e-200, time.Hour}, {1024, time.Nanosecond}, {1e12, time.Second}, {1e9 / 1.5, time.Second},
		{7, 1 << 50}, {1.5, 3 * time.Nanosecond}, {4, 8 * time.Second}, {2.7, time.Second}, {1e-6, time.Second},
		{5, 7 * day}, {1, time.Nanosecond},
	}
	seeds := uint64(200)
	if testing.Short() {
		seeds = 50
	}
	if n, err := strconv.Atoi(os.Getenv("A2SEEDS")); err == nil {
		seeds = uint64(n)
	}
	for seed := range seeds {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			a2Run(t, c, seed, 300, settings)
		})
	}
}

// Many goroutines on the default clock in a synctest bubble, racing
// TryAcquire, Acquire (with timeouts, cancellation and none), SetRate to
// the same rate (a new generation of params each time) and short pauses:
// the window bound holds exactly on the bubble's time, no one is left
// waiting and no timer is left. Run with -race.
func TestAttack2ConcurrentGenerations(t *testing.T) {
	for seed := range uint64(3) {
		synctest.Test(t, func(t *testing.T) {
			const maxRate, period = 5.0, 100 * time.Millisecond
			l := New(maxRate, period)
			start := time.Now()
			type adm struct {
				at time.Duration
				a  float64
			}
			var mu sync.Mutex
			var log []adm
			rec := func(a float64) {
				mu.Lock()
				log = append(log, adm{time.Since(start), a})
				mu.Unlock()
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(seed, uint64(g)))
					for range 150 {
						a := []float64{1, 0.5, 5, 2.5, 0.001, 4.999}[rng.IntN(6)]
						switch rng.IntN(10) {
						case 0, 1:
							if l.TryAcquire(a) {
								rec(a)
							}
						case 2, 3, 4:
							ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(300))*time.Millisecond)
							if l.Acquire(ctx, a) == nil {
								rec(a)
							}
							cancel()
						case 5:
							if l.Acquire(context.Background(), a) == nil {
								rec(a)
							}
						case 6:
							l.SetRate(maxRate, period)
						case 7:
							l.Pause(time.Duration(rng.IntN(50)) * time.Millisecond)
						case 8:
							ctx, cancel := context.WithCancel(context.Background())
							d := time.Duration(rng.IntN(50)) * time.Millisecond
							go func() { time.Sleep(d); cancel() }()
							if l.Acquire(ctx, a) == nil {
								rec(a)
							}
						default:
							time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
						}
					}
				})
			}
			wg.Wait()
			time.Sleep(time.Second) // the cancelling goroutines
			slices.SortStableFunc(log, func(x, y adm) int { return int(x.at - y.at) })
			for i := range log {
				sum := new(big.Rat)
				for j := i; j < len(log) && j < i+200; j++ {
					sum.Add(sum, a2Rat(log[j].a))
					lim := new(big.Rat).SetFrac64(int64(log[j].at-log[i].at)*int64(maxRate), int64(period))
					lim.Add(lim, a2Rat(maxRate))
					if sum.Cmp(lim) > 0 {
						t.Fatalf("seed %d: %s units admitted in [%v, %v]", seed, sum.FloatString(6), log[i].at, log[j].at)
					}
				}
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.q.live != 0 || l.timer != nil || l.armed {
				t.Fatalf("seed %d: %d waiting, timer %v, armed %v", seed, l.q.live, l.timer != nil, l.armed)
			}
		})
	}
}

// A full bucket kept through SetRate to every rate whose conversion takes
// the exact (unitInt) or the float path never loses a tick: random rates,
// from ordinary to 417-day periods, ticks of the full bucket converted
// are at least its exact ticks at the new rate (or the limit, for a block).
func TestAttack2ConvertFullBucketNeverShort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randRate := func() rate {
		for {
			var m float64
			switch rng.IntN(4) {
			case 0:
				m = float64(rng.IntN(100) + 1)
			case 1:
				m = rng.Float64() * 100
			case 2:
				m = float64(rng.IntN(1000)+1) / 10
			default:
				m = rng.Float64() * 1e6
			}
			p := time.Duration(rng.Int64N(int64(maxPeriod))) + 1
			if rng.IntN(2) == 0 {
				p = time.Duration(rng.Int64N(int64(time.Hour))) + 1
			}
			var r rate
			ok := func() (ok bool) {
				defer func() { ok = recover() == nil }()
				r = newRate("attack", m, p)
				return
			}()
			if m > 0 && ok {
				return r
			}
		}
	}
	const limit = int64(1) << 62
	for range 20000 {
		from, to := randRate(), randRate()
		got := convert(from.capacity, &from, &to, limit)
		if got >= limit {
			continue
		}
		want := a2Rat(from.maxRate)
		want.Mul(want, new(big.Rat).SetInt64(int64(to.period)*to.scale))
		want.Quo(want, a2Rat(to.maxRate))
		if new(big.Rat).SetInt64(got).Cmp(want) < 0 {
			t.Fatalf("a full bucket of %v per %v kept at %v per %v: %d ticks, below the exact %s",
				from.maxRate, from.period, to.maxRate, to.period, got, want.FloatString(2))
		}
	}
}

// The deadline estimate of a queue with waiters that fill the bucket is a
// walk over the whole queue, under the mutex, on every Acquire that has to
// wait, with or without a deadline: queuing n callers of Wait on
// New(1, period) costs O(n^2). Compare ns/op across the sizes: it grows
// with the queue for amount 1 (near full), not for 0.5.
func BenchmarkQueueBuildUp(b *testing.B) {
	for _, amount := range []float64{1, 0.5} {
		for _, n := range []int{1000, 4000, 16000} {
			b.Run("amount="+strconv.FormatFloat(amount, 'g', -1, 64)+"/n="+strconv.Itoa(n), func(b *testing.B) {
				for range b.N {
					l := New(1, time.Second, WithClock(clock.NewMock()))
					l.TryAcquire(1)
					ctx, cancel := context.WithCancel(context.Background())
					var wg sync.WaitGroup
					for range n {
						wg.Go(func() { _ = l.Acquire(ctx, amount) })
					}
					for l.Waiting() < n {
						runtime.Gosched()
					}
					cancel()
					wg.Wait()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/waiter")
			})
		}
	}
}
