package ratelimit

// Adversarial tests of the deadline estimate (due) and the queue's cached
// tail: the cache against a fresh walk, the estimate against an independent
// walk in exact integers and against the admissions process actually makes,
// across cancellations (alone and by shared-context group), TryAcquire,
// deadlines, pauses, epoch moves and mixes of near-full and small waiters.

import (
	"context"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
)

// a3Ref walks the queue as process admits it, in exact integers: from now
// (or the end of the blocks), each waiter on the first whole nanosecond,
// not before the one ahead, at which t + cost - capacity <= ns*scale, t
// being max(tat, floor) and the bucket empty at ns if t is below it. It
// returns the nanoseconds of each live waiter's admission and the
// newcomer's, or ok false for a cut over-full block. It requires lock.
func a3Ref(l *Limiter, p *params, now, cost int64) (ats []*big.Int, due *big.Int, ok bool) {
	ns := now / p.scale
	if p.fullCut && ns < p.fullNs {
		return nil, nil, false
	}
	b := func(x int64) *big.Int { return big.NewInt(x) }
	sc, capa := b(p.scale), b(p.capacity)
	T := b(l.tat(p))
	var cur *big.Int
	if ns < p.blockNs {
		cur = b(p.blockNs)
		start := new(big.Int).Mul(cur, sc)
		floor := new(big.Int).Add(start, b(p.floorOff))
		T = a3Max(T, floor, start)
	} else {
		cur = b(ns)
		T = a3Max(T, b(p.floor), b(now))
	}
	fit := func(c int64) *big.Int {
		x := new(big.Int).Add(T, b(c))
		x.Sub(x, capa)
		// ceil(x/sc)
		q, m := new(big.Int).DivMod(x, sc, new(big.Int)) // Euclidean: m >= 0
		if m.Sign() != 0 {
			q.Add(q, big.NewInt(1))
		}
		return a3Max(cur, q)
	}
	for w := range l.q.waiters() {
		at := fit(w.cost)
		T = a3Max(T, new(big.Int).Mul(at, sc))
		T.Add(T, b(w.cost))
		cur = at
		ats = append(ats, at)
	}
	return ats, fit(cost), true
}

func a3Max(xs ...*big.Int) *big.Int {
	m := new(big.Int).Set(xs[0])
	for _, x := range xs[1:] {
		if x.Cmp(m) > 0 {
			m.Set(x)
		}
	}
	return m
}

// a3Fresh returns l.due with the cache as it stands and with it forced
// stale, and leaves the cache as the first call left it, or, unless build,
// as it found it. It requires lock.
func a3Fresh(l *Limiter, p *params, now, cost int64, build bool) (cached, fresh int64) {
	tail, tailP, tailOK := l.q.tail, l.q.tailP, l.q.tailOK
	cached = l.due(p, now, cost)
	if build {
		tail, tailP, tailOK = l.q.tail, l.q.tailP, l.q.tailOK
	}
	l.q.tailOK = false
	fresh = l.due(p, now, cost)
	l.q.tail, l.q.tailP, l.q.tailOK = tail, tailP, tailOK
	return cached, fresh
}

type a3Waiter struct {
	idx      int
	amount   float64
	ch       chan atkResult
	done     bool
	cancel   context.CancelFunc // nil: not cancellable alone
	group    int                // shared-context group, -1 for none
	deadline time.Duration      // elapsed time of the deadline, -1 for none
	dist     int                // disturbances (SetRate, Pause) at arrival
	pred     time.Duration      // admission the walk predicts, elapsed
	exact    bool               // pred must hold exactly, not just as a bound
}

type a3Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	live   bool
}

type a3Key struct{}

// a3Run drives a limiter through random operations and checks, after
// every one: the cached estimate equals a fresh walk and the exact walk;
// every live waiter is admitted exactly when the exact walk said (or
// earlier, if someone ahead may leave before); a deadline judged
// meetable is met unless SetRate or Pause came since, and a DeadlineError
// reports the exact walk's wait; and at the end everyone returned and no
// timer is left.
func a3Run(t *testing.T, c *clocktest.Clock, seed uint64, ops int, settings []atkSetting) {
	rng := rand.New(rand.NewPCG(seed, 3))
	s0 := settings[rng.IntN(len(settings))]
	l := New(s0.maxRate, s0.period, WithClock(c))
	var (
		ws     []*a3Waiter
		groups []*a3Group
		dist   int
		live   []*a3Waiter // queued, in queue order
	)
	fail := func(op int, format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d op %d (%v per %v): "+format, append([]any{seed, op, s0.maxRate, s0.period}, args...)...)
	}
	amountOf := func(maxRate float64, p *params) float64 {
		switch rng.IntN(9) {
		case 0, 1, 2:
			return maxRate
		case 3: // near full: within a nanosecond's drain
			return max(maxRate*(1-float64(rng.IntN(int(p.scale))+1)/float64(p.capacity)*0.9), maxRate/8)
		case 4:
			return maxRate / 2
		case 5:
			return min(1, maxRate)
		case 6: // just not near full
			return max(maxRate*(1-1.5*float64(p.scale)/float64(p.capacity)), maxRate/4)
		default:
			return maxRate * rng.Float64()
		}
	}
	// check compares the estimates under lock and refreshes the
	// predictions of the live waiters.
	check := func(op int) {
		c.Settle()
		// Under mu alone, like a reader: taking lock here would move the
		// epoch more eagerly than the limiter's own callers do.
		l.mu.Lock()
		defer l.mu.Unlock()
		p := l.cur.Load()
		_, now, ok := p.now(c)
		if !ok || now < l.seen.Load() {
			return // the epoch must move first: the next lock does it
		}
		build := rng.IntN(2) == 0 // may the check build the cache?
		ns := now / p.scale
		base := c.Elapsed() - time.Duration(ns)
		if l.q.live != len(live) {
			fail(op, "%d live in the queue, %d in the test", l.q.live, len(live))
		}
		for _, a := range []float64{p.maxRate, p.maxRate / 3, amountOf(p.maxRate, p)} {
			cost := p.cost(a)
			cached, fresh := a3Fresh(l, p, now, cost, build)
			if cached != fresh {
				fail(op, "due(%v) = %d with the cache, %d fresh (queue %d, nearFull %d)", a, cached, fresh, l.q.live, l.q.nearFull)
			}
			ats, due, ok := a3Ref(l, p, now, cost)
			if !ok {
				if cached != math.MaxInt64 {
					fail(op, "due = %d in a cut over-full block", cached)
				}
				continue
			}
			if due.IsInt64() && due.Int64() < 1<<62 && due.Int64() != cached {
				fail(op, "due(%v) = %d, the exact walk says %s", a, cached, due)
			}
			if len(ats) != len(live) {
				fail(op, "walk of %d, %d live", len(ats), len(live))
			}
			// A waiter whose deadline falls at or before its admission
			// will leave: those behind it may go earlier.
			inexact := false
			for i, w := range live {
				if !ats[i].IsInt64() || ats[i].Int64() >= 1<<62 {
					w.pred, w.exact = -1, false
					continue
				}
				w.pred, w.exact = base+time.Duration(ats[i].Int64()), !inexact
				if w.deadline >= 0 && w.deadline <= w.pred {
					inexact = true
				}
			}
		}
	}
	collect := func(op int) {
		c.Settle()
		var still []*a3Waiter
		for _, w := range live {
			r, ok := atkPoll(w.ch)
			if !ok {
				still = append(still, w)
				continue
			}
			w.done = true
			switch {
			case r.err == nil:
				if w.pred >= 0 && (r.at > w.pred || w.exact && r.at != w.pred) {
					fail(op, "waiter %d (%v) admitted at %v, predicted %v (exact %v), now %v", w.idx, w.amount, r.at, w.pred, w.exact, c.Elapsed())
				}
				if w.deadline >= 0 && r.at >= w.deadline && w.dist == dist {
					fail(op, "waiter %d admitted at %v, at or after its deadline %v", w.idx, r.at, w.deadline)
				}
			case errors.Is(r.err, context.DeadlineExceeded):
				var de *DeadlineError
				if errors.As(r.err, &de) {
					fail(op, "waiter %d queued, then got a DeadlineError %v", w.idx, r.err)
				}
				if w.dist == dist {
					fail(op, "waiter %d (%v) judged meetable with a deadline at %v missed it at %v (predicted %v)", w.idx, w.amount, w.deadline, r.at, w.pred)
				}
			case errors.Is(r.err, context.Canceled), errors.Is(r.err, ErrExceedsCapacity):
			default:
				fail(op, "waiter %d: %v", w.idx, r.err)
			}
		}
		live = still
	}
	start := func(w *a3Waiter, ctx context.Context) {
		go func() {
			err := l.Acquire(ctx, w.amount)
			w.ch <- atkResult{c.Elapsed(), err}
		}()
		c.Settle()
		if r, ok := atkPoll(w.ch); ok {
			w.done = true
			var de *DeadlineError
			if errors.As(r.err, &de) && w.deadline < 0 {
				t.Fatalf("seed %d: DeadlineError without a deadline", seed)
			}
			if r.err != nil && !errors.As(r.err, &de) {
				t.Fatalf("seed %d: waiter %d returned at once: %v", seed, w.idx, r.err)
			}
			if de != nil && w.deadline >= 0 && w.pred >= 0 {
				if want := w.pred - c.Elapsed(); de.Wait != want {
					t.Fatalf("seed %d: waiter %d: DeadlineError.Wait %v, the exact walk says %v", seed, w.idx, de.Wait, want)
				}
				if w.deadline > w.pred {
					t.Fatalf("seed %d: waiter %d: deadline %v after the admission %v refused: %v", seed, w.idx, w.deadline, w.pred, r.err)
				}
			}
			if r.err == nil && w.pred >= 0 && w.pred != c.Elapsed() {
				t.Fatalf("seed %d: waiter %d admitted at once, walk said %v", seed, w.idx, w.pred)
			}
			return
		}
		if w.deadline >= 0 && w.pred >= 0 && w.deadline <= w.pred {
			t.Fatalf("seed %d: waiter %d (%v) queued with a deadline at %v, the walk says %v", seed, w.idx, w.amount, w.deadline, w.pred)
		}
		if w.pred >= 0 && w.pred <= c.Elapsed() {
			t.Fatalf("seed %d: waiter %d (%v) queued, the walk says it fits now", seed, w.idx, w.amount)
		}
		live = append(live, w)
	}
	// On failure too, let every waiter return, so that the bubble can end.
	defer func() {
		for _, g := range groups {
			g.cancel()
		}
		for _, w := range ws {
			if w.cancel != nil {
				w.cancel()
			}
		}
		l.SetRate(1e12, time.Second)
		c.Advance(time.Second)
	}()
	lastGroup := -1 // the group of the last waiter queued, -1 if none
	// advance moves the clock in steps of at most 2^62 ticks, reading the
	// level between them, so that no epoch moves by 2^63 ticks or more
	// (TestA3LongPauseEndsWithBurst).
	advance := func(d time.Duration) {
		for d > 0 {
			s := min(d, time.Duration((1<<62)/l.cur.Load().scale))
			c.Advance(s)
			l.Level()
			d -= s
		}
		c.Settle()
	}
	for op := range ops {
		p := l.cur.Load()
		maxRate, period := p.maxRate, p.period
		unitNs := float64(period) / maxRate
		k := rng.IntN(100)
		if os.Getenv("A3DEBUG") != "" {
			l.mu.Lock()
			pp := l.cur.Load()
			t.Logf("op %d k %d at %v: rate %v/%v scale %d cap %d block %d pause %d full %d cut %v over %v floorOff %d floor %d tat %d epoch %v live %d nearFull %d tailOK %v",
				op, k, c.Elapsed(), pp.maxRate, pp.period, pp.scale, pp.capacity, pp.blockNs, pp.pauseNs, pp.fullNs, pp.fullCut, pp.overUnits, pp.floorOff, pp.floor, tatOf(pp.state.Load()), pp.epoch.Sub(clocktest.Start), l.q.live, l.q.nearFull, l.q.tailOK)
			for _, w := range live {
				t.Logf("   waiter %d amount %v cost %d pred %v exact %v deadline %v", w.idx, w.amount, pp.cost(w.amount), w.pred, w.exact, w.deadline)
			}
			l.mu.Unlock()
		}
		switch {
		case k < 25: // forward
			var d time.Duration
			switch rng.IntN(6) {
			case 0:
				d = 1
			case 1, 2: // to the next predicted admission, or a nanosecond off it
				next := time.Duration(-1)
				for _, w := range live {
					if w.pred > c.Elapsed() && (next < 0 || w.pred < next) {
						next = w.pred
					}
				}
				if next >= 0 {
					d = next - c.Elapsed() + time.Duration(rng.IntN(3)-1)
				}
			case 3:
				d = time.Duration(min(rng.Float64()*2*unitNs, float64(3*period)))
			case 4:
				d = time.Duration(rng.Int64N(int64(3 * day)))
			default:
				d = time.Duration(rng.Int64N(int64(min(period, 10*day)))) + 1
			}
			advance(d)
			collect(op)
		case k < 60: // Acquire
			a := amountOf(maxRate, p)
			w := &a3Waiter{idx: len(ws), amount: a, ch: make(chan atkResult, 1), group: -1, deadline: -1, dist: dist, pred: -1}
			l.mu.Lock()
			pp := l.cur.Load()
			if ns, now, ok := pp.now(c); ok && now >= l.seen.Load() {
				if _, d, ok := a3Ref(l, pp, now, pp.cost(a)); ok && d.IsInt64() && d.Int64() < 1<<62 {
					w.pred = c.Elapsed() + time.Duration(d.Int64()-ns)
				}
			}
			l.mu.Unlock()
			// A deadline at, just before, just after or well after the
			// estimate, or anywhere in the next few periods.
			deadline := func() time.Duration {
				if w.pred < 0 {
					return c.Elapsed() + time.Duration(rng.Int64N(int64(4*period))) + 1
				}
				switch rng.IntN(5) {
				case 0:
					return w.pred
				case 1:
					return w.pred + 1
				case 2:
					return w.pred - 1
				case 3:
					return c.Elapsed() + time.Duration(rng.Int64N(int64(4*period))) + 1
				}
				return w.pred + time.Duration(rng.Int64N(int64(period)))
			}
			ctx := context.Background()
			switch rng.IntN(5) {
			case 0:
			case 1:
				ctx, w.cancel = context.WithCancel(ctx)
			case 2: // a shared context: joins the group of the last waiter, or starts one
				if lastGroup < 0 || !groups[lastGroup].live || rng.IntN(3) == 0 {
					gctx, cancel := context.WithCancel(context.Background())
					if rng.IntN(2) == 0 { // a group with a deadline
						gctx, cancel = c.WithDeadline(context.Background(), clocktest.Start.Add(deadline()))
					}
					groups = append(groups, &a3Group{gctx, cancel, true})
					lastGroup = len(groups) - 1
				}
				w.group = lastGroup
				ctx = context.WithValue(groups[lastGroup].ctx, a3Key{}, w.idx)
			default:
				ctx, w.cancel = c.WithDeadline(ctx, clocktest.Start.Add(deadline()))
			}
			if w.group < 0 {
				lastGroup = -1
			}
			if dl, ok := ctx.Deadline(); ok {
				w.deadline = dl.Sub(clocktest.Start)
			}
			if ctx.Err() != nil {
				if w.cancel != nil {
					w.cancel()
				}
				break // passed already
			}
			ws = append(ws, w)
			start(w, ctx)
		case k < 72: // cancel: a waiter at the front, the back or in the middle, or a group
			if len(live) == 0 {
				break
			}
			var w *a3Waiter
			switch rng.IntN(3) {
			case 0:
				w = live[0]
			case 1:
				w = live[len(live)-1]
			default:
				w = live[rng.IntN(len(live))]
			}
			for _, w := range live {
				w.exact = false // those behind may go earlier
			}
			if w.group >= 0 {
				groups[w.group].cancel()
				groups[w.group].live = false
			} else if w.cancel != nil {
				w.cancel()
			}
			collect(op)
		case k < 84: // TryAcquire and HasCapacity
			a := amountOf(maxRate, p)
			if has, got := l.HasCapacity(a), l.TryAcquire(a); has != got || got && len(live) > 0 {
				fail(op, "HasCapacity %v, TryAcquire %v with %d queued", has, got, len(live))
			}
		case k < 89: // a big step: across epoch moves
			advance(time.Duration(rng.Int64N(int64(8*day))) + time.Duration(p.rebaseAfter)/2)
			collect(op)
		case k < 93: // Pause
			dist++
			for _, w := range live {
				w.pred = -1
			}
			l.Pause(time.Duration(rng.Int64N(int64(min(2*period, 2*day)))) + 1)
			collect(op)
		case k < 96: // SetRate: a different setting, or the same (a new generation)
			dist++
			for _, w := range live {
				w.pred = -1
			}
			s := settings[rng.IntN(len(settings))]
			if rng.IntN(2) == 0 {
				s = atkSetting{maxRate, period}
			}
			l.SetRate(s.maxRate, s.period)
			collect(op)
		default:
			collect(op)
		}
		check(op)
	}
	for _, g := range groups {
		g.cancel()
	}
	for _, w := range ws {
		if w.cancel != nil {
			w.cancel()
		}
	}
	dist++
	for _, w := range live {
		w.pred = -1
	}
	l.SetRate(1e12, time.Second)
	for i := 0; i < 20 && len(live) > 0; i++ {
		advance(2 * day) // a pause of up to 2 days may be left
		collect(ops)
	}
	for _, w := range ws {
		if !w.done {
			if _, ok := atkPoll(w.ch); !ok {
				pp := l.cur.Load()
				t.Fatalf("seed %d: waiter %d (%v) never returned; at %v: rate %v/%v block %d pause %d full %d cut %v over %v tat %d epoch %v, Level %v",
					seed, w.idx, w.amount, c.Elapsed(), pp.maxRate, pp.period, pp.blockNs, pp.pauseNs, pp.fullNs, pp.fullCut, pp.overUnits, tatOf(pp.state.Load()), pp.epoch.Sub(clocktest.Start), l.Level())
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.armed || l.timer != nil || l.q.live != 0 || l.q.nearFull != 0 || l.q.costLo != 0 || l.q.costHi != 0 {
		t.Fatalf("seed %d: left behind: armed %v, timer %v, live %d, nearFull %d, cost %d:%d",
			seed, l.armed, l.timer != nil, l.q.live, l.q.nearFull, l.q.costHi, l.q.costLo)
	}
}

// a3Settings are rates where near-full waiters matter: scales of 1024 (an
// epoch move every 6.5 days), odd scales (1023 for thirds, 1022 for
// sevenths), units of a nanosecond and less, and a capacity of less than
// a nanosecond's ticks, at which every waiter is near full.
var a3Settings = []atkSetting{
	{3, time.Second}, {7, time.Second}, {1, day}, {2.5, day}, {1, time.Nanosecond},
	{3, 2 * time.Nanosecond}, {1e9 / 1.5, time.Second}, {4, 8 * time.Second}, {1, 3 * day},
	{10, time.Millisecond}, {0.3, time.Hour},
}

// The random attack above. A3SEEDS=n runs n seeds, A3SEED=i only seed i,
// and A3DEBUG=1 traces every operation.
func TestAttack3EstimateAndCache(t *testing.T) {
	seeds := uint64(60)
	if n, err := strconv.Atoi(os.Getenv("A3SEEDS")); err == nil {
		seeds = uint64(n)
	}
	only, err := strconv.Atoi(os.Getenv("A3SEED"))
	for seed := range seeds {
		if err == nil && seed != uint64(only) {
			continue
		}
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			a3Run(t, c, seed, 250, a3Settings)
		})
	}
}

// A pause that ends more than 2^63 ticks after the epoch (104 days at
// 1024 ticks a nanosecond) leaves its floor at the epoch move that follows
// it, counted from the new epoch: New(10, 10s) paused for 200 days admits
// one unit at 200 days, then one a second, not a burst.
func TestLongPauseEndsWithoutBurst(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(10, 10*time.Second, WithClock(c))
		l.Pause(200 * day)
		c.Advance(200 * day)
		n := 0
		for range 10 {
			if l.TryAcquire(1) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("at the end of a 200-day pause, %d TryAcquire(1) succeeded on New(10, 10s), want 1 (no burst)", n)
		}
	})
}

// The same with waiters, woken by the timer at the end of the pause: three
// callers of Wait on New(10, 10s) paused for 200 days are admitted at 200
// days, and 1 s and 2 s later, as the deadline estimate says.
func TestLongPauseWaitersWithoutBurst(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(10, 10*time.Second, WithClock(c))
		l.Pause(200 * day)
		bg := context.Background()
		var chs []<-chan atkResult
		for range 3 {
			chs = append(chs, atkGo(bg, c, l, 1))
		}
		c.AdvanceTo(t, 200*day+3*time.Second)
		for i, ch := range chs {
			want := 200*day + time.Duration(i)*time.Second
			if r, ok := atkPoll(ch); !ok || r.err != nil || r.at != want {
				t.Errorf("waiter %d: %v at %v (returned %v), want admitted at %v", i, r.err, r.at, ok, want)
			}
		}
	})
}

// The same for a bucket that SetRate left over-full for longer than 2^63
// ticks: New(1e9, 1s) filled, then set to 10 per 10 s, drains to full at
// fullNs (31 years), then admits one unit a second: three callers of Wait
// go at fullNs + 1 s, + 2 s and + 3 s.
func TestLongOverfullEndsWithoutBurst(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1e9, time.Second, WithClock(c))
		if !l.TryAcquire(1e9) {
			t.Fatal("burst refused")
		}
		l.SetRate(10, 10*time.Second)
		full := time.Duration(l.cur.Load().fullNs)
		if full < 30*365*day {
			t.Fatalf("fullNs %v, want about 31 years", full)
		}
		bg := context.Background()
		var chs []<-chan atkResult
		for range 3 {
			chs = append(chs, atkGo(bg, c, l, 1))
		}
		c.AdvanceTo(t, full+3*time.Second)
		for i, ch := range chs {
			want := full + time.Duration(i+1)*time.Second
			if r, ok := atkPoll(ch); !ok || r.err != nil || r.at != want {
				t.Errorf("waiter %d: %v at %v (returned %v), want admitted at fullNs+%ds = %v", i, r.err, r.at, ok, i+1, want)
			}
		}
	})
}

// Goroutines on the bubble's own clock race Acquire with deadlines (many
// within a nanosecond of the estimate), Acquire on shared contexts that a
// timer cancels as a group, solo cancellations and TryAcquire, on rates
// where waiters fill the bucket to within a nanosecond. With no SetRate
// or Pause, no caller that was let queue with a deadline may miss it, and
// no one and no timer may be left.
func TestA3ConcurrentDeadlinesAreMet(t *testing.T) {
	for i, s := range []atkSetting{{3, time.Second}, {1, 3 * time.Nanosecond}, {7, 70 * time.Millisecond}} {
		synctest.Test(t, func(t *testing.T) {
			l := New(s.maxRate, s.period)
			unit := s.period / time.Duration(max(s.maxRate, 1))
			var missed, queued atomic.Int64
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
					amounts := []float64{s.maxRate, s.maxRate, s.maxRate * (1 - 1e-12), s.maxRate / 2, s.maxRate * 0.999999}
					var shared context.Context
					var cancelShared context.CancelFunc
					for range 200 {
						a := amounts[rng.IntN(len(amounts))]
						switch rng.IntN(8) {
						case 0, 1, 2: // a deadline near the estimate
							d := time.Duration(rng.Int64N(int64(time.Duration(l.Waiting()+3)*s.period))) + 1
							ctx, cancel := context.WithTimeout(context.Background(), d)
							err := l.Acquire(ctx, a)
							var de *DeadlineError
							if errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &de) {
								missed.Add(1)
							}
							if err == nil || !errors.As(err, &de) {
								queued.Add(1)
							}
							cancel()
						case 3, 4: // a shared context, cancelled as a group
							if shared == nil || rng.IntN(4) == 0 {
								if cancelShared != nil {
									cancelShared()
								}
								shared, cancelShared = context.WithTimeout(context.Background(), time.Duration(rng.Int64N(int64(4*unit)))+1)
							}
							go func(ctx context.Context) { _ = l.Acquire(ctx, a) }(context.WithValue(shared, a3Key{}, g))
							time.Sleep(time.Duration(rng.Int64N(int64(unit))))
						case 5:
							ctx, cancel := context.WithCancel(context.Background())
							after := time.Duration(rng.Int64N(int64(2 * unit)))
							go func() { time.Sleep(after); cancel() }()
							_ = l.Acquire(ctx, a)
							cancel()
						case 6:
							l.TryAcquire(a)
						default:
							time.Sleep(time.Duration(rng.Int64N(int64(unit))) + 1)
						}
					}
					if cancelShared != nil {
						cancelShared()
					}
				})
			}
			wg.Wait()
			time.Sleep(10 * s.period)
			t.Logf("%v per %v: %d queued with deadlines", s.maxRate, s.period, queued.Load())
			if missed.Load() != 0 {
				t.Errorf("%v per %v: %d of %d callers queued with a deadline judged meetable missed it", s.maxRate, s.period, missed.Load(), queued.Load())
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.q.live != 0 || l.timer != nil || l.armed || l.q.nearFull != 0 || l.q.costLo != 0 {
				t.Errorf("left behind: %d waiting, timer %v, armed %v, nearFull %d", l.q.live, l.timer != nil, l.armed, l.q.nearFull)
			}
		})
	}
}

// a3OwnCtx is a context of a type the context package does not know, so
// that context.AfterFunc watches it with a goroutine of its own: one that
// is never stopped outlives the bubble, which synctest reports.
type a3OwnCtx struct {
	context.Context
	done chan struct{}
}

func (c a3OwnCtx) Done() <-chan struct{} { return c.done }

// The watch of a shared context passes from an owner admitted first to a
// context.AfterFunc, which must be stopped once the group is gone, however
// it goes: its members admitted, failed by SetRate for exceeding the
// capacity, with a member joining after the owner left, or the owner
// failed by SetRate while its members go on. The contexts are never
// cancelled, so a watch left behind would block for good.
func TestA3SharedContextWatchIsStopped(t *testing.T) {
	cases := []struct {
		name    string
		amounts []float64 // the group, owner first, behind a full bucket
		late    float64   // a member that joins once the owner is admitted, 0 for none
		setRate float64   // SetRate(setRate, period) once the owner is admitted, 0 for none
		first   float64   // SetRate before anyone is admitted, 0 for none
	}{
		{"admitted", []float64{4, 1, 4}, 0, 0, 0},
		{"late member", []float64{4, 4, 4}, 1, 0, 0},
		{"members fail", []float64{4, 4, 3}, 0, 2, 0},
		{"owner fails", []float64{4, 1, 1}, 0, 0, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				l := New(4, 4*time.Second, WithClock(c))
				l.TryAcquire(4)
				ctx := a3OwnCtx{context.Background(), make(chan struct{})} // never done
				var chs []<-chan atkResult
				for _, a := range tc.amounts {
					chs = append(chs, atkGo(context.WithValue(ctx, a3Key{}, a), c, l, a))
				}
				if tc.first != 0 {
					l.SetRate(tc.first, 4*time.Second)
				}
				c.AdvanceUntil(t, time.Minute, func() bool { return l.Waiting() < len(tc.amounts) })
				if tc.late != 0 {
					chs = append(chs, atkGo(context.WithValue(ctx, a3Key{}, 0), c, l, tc.late))
				}
				if tc.setRate != 0 {
					l.SetRate(tc.setRate, 4*time.Second)
				}
				c.AdvanceUntil(t, time.Minute, func() bool { return l.Waiting() == 0 })
				for i, ch := range chs {
					if _, ok := atkPoll(ch); !ok {
						t.Fatalf("waiter %d never returned", i)
					}
				}
				// A watch left behind is a goroutine blocked on ctx.Done()
				// for good: synctest panics as the bubble ends.
			})
		})
	}
}

// a3Due returns the estimate for a newcomer of amount, in elapsed time,
// failing the test unless the cache, a fresh walk and the exact walk agree.
func a3Due(t *testing.T, c *clocktest.Clock, l *Limiter, amount float64) time.Duration {
	t.Helper()
	c.Settle()
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.cur.Load()
	ns, now, ok := p.now(c)
	if !ok || now < l.seen.Load() {
		t.Fatal("the epoch must move")
	}
	cost := p.cost(amount)
	cached, fresh := a3Fresh(l, p, now, cost, true)
	_, exact, _ := a3Ref(l, p, now, cost)
	if cached != fresh || !exact.IsInt64() || exact.Int64() != cached {
		t.Fatalf("due(%v): %d with the cache (tailOK %v), %d fresh, %s exact", amount, cached, l.q.tailOK, fresh, exact)
	}
	return c.Elapsed() + time.Duration(cached-ns)
}

// The cached tail through a scripted life of a queue on New(3, 1s) (a
// third of a second a unit, 1023 ticks a nanosecond): near-full waiters
// (3, and 3 less a third of a nanosecond's drain) between small ones;
// admissions; a group on a shared context cancelled together; waiters
// cancelled at the front, in the middle and at the back; TryAcquire
// refused meanwhile; and deadlines at the estimate (refused at once) and a
// nanosecond after it (met). The cache, a fresh walk and the exact walk
// agree at every step, and every waiter goes when the estimate said.
func TestA3CacheFollowsQueue(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(3, time.Second, WithClock(c))
		l.TryAcquire(3)
		bg := context.Background()
		near := 3 * (1 - 1e-10) // a third of a nanosecond short of full
		type entry struct {
			ch     <-chan atkResult
			due    time.Duration
			cancel context.CancelFunc
			gone   bool
		}
		var es []*entry
		add := func(ctx context.Context, amount float64, cancel context.CancelFunc) *entry {
			e := &entry{due: a3Due(t, c, l, amount), cancel: cancel}
			e.ch = atkGo(ctx, c, l, amount)
			es = append(es, e)
			return e
		}
		// withDeadline queues amount with a deadline a nanosecond after the
		// estimate, after checking that one at the estimate fails at once.
		withDeadline := func(amount float64) *entry {
			due := a3Due(t, c, l, amount)
			at, cancel := c.WithDeadline(bg, clocktest.Start.Add(due))
			var de *DeadlineError
			if err := l.Acquire(at, amount); !errors.As(err, &de) || de.Wait != due-c.Elapsed() {
				t.Fatalf("deadline at the estimate %v: %v", due, err)
			}
			cancel()
			ctx, cancel := c.WithDeadline(bg, clocktest.Start.Add(due+1))
			return add(ctx, amount, cancel)
		}
		cancellable := func(amount float64) *entry {
			ctx, cancel := context.WithCancel(bg)
			return add(ctx, amount, cancel)
		}
		cancellable(3) // the front
		add(bg, 1, nil)
		withDeadline(near)
		g, cancelG := context.WithCancel(bg)
		var group []*entry
		for _, a := range []float64{3, 0.5, near} {
			group = append(group, add(context.WithValue(g, a3Key{}, a), a, nil))
		}
		mid := cancellable(near)
		withDeadline(1)
		withDeadline(3)
		back := cancellable(3)
		a3Due(t, c, l, 3)

		c.AdvanceTo(t, 1500*time.Millisecond) // the front waiter is admitted
		a3Due(t, c, l, 3)
		if l.TryAcquire(0.001) {
			t.Fatal("TryAcquire passed the queue")
		}
		cancelG()
		for _, e := range group {
			e.gone = true
		}
		a3Due(t, c, l, near)
		mid.cancel()
		mid.gone = true
		withDeadline(near)
		back.cancel()
		back.gone = true
		withDeadline(3)
		withDeadline(0.25)
		a3Due(t, c, l, 3)

		c.AdvanceTo(t, 30*time.Second)
		for i, e := range es {
			r, ok := atkPoll(e.ch)
			switch {
			case !ok:
				t.Errorf("waiter %d never returned", i)
			case e.gone:
				if !errors.Is(r.err, context.Canceled) {
					t.Errorf("waiter %d: %v, want cancelled", i, r.err)
				}
			case r.err != nil:
				t.Errorf("waiter %d: %v at %v, estimated %v", i, r.err, r.at, e.due)
			case r.at > e.due:
				t.Errorf("waiter %d admitted at %v, after the estimate %v", i, r.at, e.due)
			}
			if e.cancel != nil {
				e.cancel()
			}
		}
	})
}
