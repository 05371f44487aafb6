package ratelimit

// Adversarial tests of the Window: its deadline estimate (due, and the
// cached windowSim behind it) against an independent walk of the queue in
// exact integers and against the admissions process actually makes, across
// cancellations, deadlines, admissions, SetRate, Pause, clock moves back
// and the merges of WithResolution, with the timer firing on time or late;
// the window rule under concurrency; extreme rates; amounts near the
// capacity. The bugs they found, fixed since, are kept at the end.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
)

// waRef walks the queue as the window rule admits it, from the log and the
// pause as they stand at now, in exact integers: each live waiter in turn
// at the first time, not before the one ahead of it (nor now, nor the end
// of the pause), at which the window's count plus its own quanta are at
// most the capacity. The count is, over the log's segments (the entries
// admitted at one rate), their quanta in the current rate's, rounded up.
// Each admission is recorded at the current rate as the log records it:
// merged into the newest entry if that is of the current rate and on the
// same nanosecond or, with a resolution, its first admission less than
// the resolution before. It returns each live waiter's admission time,
// and a newcomer's of q quanta. It requires mu.
func waRef(w *Window, now int64, q uint64) (ats []int64, due int64) {
	type seg struct {
		shift int
		sum   *big.Int
	}
	type ent struct {
		at  int64
		q   *big.Int
		seg int
	}
	l := &w.log
	var segs []seg
	for _, s := range l.segs {
		segs = append(segs, seg{s.shift, new(big.Int)})
	}
	cur := len(segs) - 1
	if segs[cur].shift != w.shift {
		panic("the log's newest segment is not at the current rate")
	}
	var es []ent
	for i := range l.n {
		seq := l.headSeq + uint64(i)
		k := len(l.segs) - 1
		for l.segs[k].start > seq {
			k--
		}
		e := l.buf[(l.head+i)%len(l.buf)]
		es = append(es, ent{e.at, new(big.Int).SetUint64(e.q), k})
		segs[k].sum.Add(segs[k].sum, es[i].q)
	}
	count := func(q uint64) *big.Int {
		c := new(big.Int).SetUint64(q)
		for _, s := range segs {
			x := new(big.Int).Set(s.sum)
			if d := w.shift - s.shift; d >= 0 {
				x.Lsh(x, uint(d))
			} else { // rounded up
				x.Add(x, new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(-d)), big.NewInt(1)))
				x.Rsh(x, uint(-d))
			}
			c.Add(c, x)
		}
		return c
	}
	first, p := l.first, int64(w.period)
	capa := new(big.Int).SetUint64(w.capacity)
	t := max(now, w.pause)
	fit := func(q uint64) {
		for {
			for len(es) > 0 && es[0].at <= t-p {
				segs[es[0].seg].sum.Sub(segs[es[0].seg].sum, es[0].q)
				es = es[1:]
			}
			if count(q).Cmp(capa) <= 0 {
				return
			}
			t = es[0].at + p // the oldest leaves then
		}
	}
	for s := range w.q.waiters() {
		q := new(big.Int).SetInt64(s.cost)
		fit(uint64(s.cost))
		segs[cur].sum.Add(segs[cur].sum, q)
		if n := len(es); n > 0 && es[n-1].seg == cur && (es[n-1].at == t || t-first < w.res) {
			es[n-1] = ent{t, new(big.Int).Add(es[n-1].q, q), cur}
		} else {
			es = append(es, ent{t, q, cur})
			first = t
		}
		ats = append(ats, t)
	}
	fit(q)
	return ats, t
}

// waSnapshot saves the cached estimate; restore puts it back, so that a
// check leaves the Window as it found it.
type waSnapshot struct {
	sim    windowSim
	tailOK bool
}

func waSave(w *Window) waSnapshot {
	s := waSnapshot{sim: w.sim, tailOK: w.q.tailOK}
	s.sim.own = slices.Clone(w.sim.own)
	return s
}

func (s waSnapshot) restore(w *Window) { w.sim, w.q.tailOK = s.sim, s.tailOK }

// waEstimate returns due(now, q) as the cache has it and as a fresh walk
// has it, leaving the cache as it was. It requires mu.
func waEstimate(w *Window, now int64, q uint64) (cached, fresh int64) {
	saved := waSave(w)
	cached = w.due(now, q)
	w.q.tailOK = false
	fresh = w.due(now, q)
	saved.restore(w)
	return cached, fresh
}

type waResult struct {
	at  time.Duration
	err error
}

// waLateClock is a mocked clock on which the Window's timer fires late:
// when the mock's timer fires, the Window's function is only put aside,
// and runs when the test calls fireLate. Timers the test makes itself,
// such as context deadlines (made by the embedded Mock), fire on time.
type waLateClock struct {
	*clock.Mock
	mu  sync.Mutex
	due []func()
}

func (c *waLateClock) AfterFunc(d time.Duration, f func()) *clock.Timer {
	return c.Mock.AfterFunc(d, func() {
		c.mu.Lock()
		c.due = append(c.due, f)
		c.mu.Unlock()
	})
}

func (c *waLateClock) fireLate() int {
	c.mu.Lock()
	fs := c.due
	c.due = nil
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
	return len(fs)
}

type waWaiter struct {
	id     int
	amount float64
	ch     chan waResult
	cancel context.CancelFunc // nil: not cancellable alone
	group  int                // shared context, -1 for none
	dl     time.Duration      // deadline, elapsed on the clock; -1 for none
	pred   time.Duration      // when the reference walk says it goes, elapsed
	gone   bool               // cancelled by the test
	tooBig bool               // SetRate lowered the capacity below its amount
	done   bool
	r      waResult
	mono   time.Duration // r.at on the time that never runs back
}

// waAdm is an admission, on the time that never runs back, and when it
// leaves the window: Period after it, at the Period in force (SetRate moves
// it for the admissions still in the window).
type waAdm struct {
	mono, leave time.Duration
	amount      float64
}

type waSetting struct {
	maxRate float64
	period  time.Duration
}

// waDriver drives a Window through operations on a mocked clock and checks
// it after each one: the cached estimate, a fresh one and the reference
// walk agree; every waiter goes exactly when the reference walk said (on a
// clock whose timer fires on time); no window of length Period on the
// time that never runs back (mono) holds more than MaxRate; FIFO; no
// TryAcquire past a waiter; and at the end, no one and no timer is left.
type waDriver struct {
	t        *testing.T
	c        *clocktest.Clock
	late     *waLateClock // nil: the timer fires on time
	w        *Window
	rng      *rand.Rand
	settings []waSetting
	amounts  []float64
	set      int // index of the setting in force
	ws       []*waWaiter
	groups   []context.Context
	gcancel  []context.CancelFunc
	adms     []waAdm
	// mono is the time that never runs back: the clock's forward moves
	// added up. Since the clock last moved back, mono = monoAt +
	// (elapsed - clockAt).
	monoAt, clockAt time.Duration
	seed            uint64
	jumps           int // clock moves past 2^61 ns
	op              int
	desc            string
	immediate       bool // the operation is not a clock move: admissions happen now
	checked         int  // estimates compared
	deadlines       int  // waiters queued with a deadline a nanosecond after the estimate
}

func (d *waDriver) fatalf(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("seed %d op %d (%s) at %v: %s", d.seed, d.op, d.desc, d.c.Elapsed(), fmt.Sprintf(format, args...))
}

func (d *waDriver) mono(elapsed time.Duration) time.Duration {
	return d.monoAt + elapsed - d.clockAt
}

func (d *waDriver) live() []*waWaiter {
	var l []*waWaiter
	for _, x := range d.ws {
		if !x.done {
			l = append(l, x)
		}
	}
	return l
}

// record checks the window rule at an admission of amount at mono time m,
// in exact arithmetic on the amounts as asked: the admissions still in the
// window then, and amount, are at most MaxRate. Admissions come in order of
// their times.
func (d *waDriver) record(m time.Duration, amount float64) {
	d.t.Helper()
	s := d.settings[d.set]
	sum := new(big.Rat).SetFloat64(amount)
	for _, a := range d.adms {
		if a.mono > m {
			d.fatalf("admissions recorded out of order: %v after %v", m, a.mono)
		}
		if a.leave > m {
			sum.Add(sum, new(big.Rat).SetFloat64(a.amount))
		}
	}
	if sum.Cmp(new(big.Rat).SetFloat64(s.maxRate)) > 0 {
		d.fatalf("%s units admitted in the window of %v ending at mono %v, above %v", sum.FloatString(9), s.period, m, s.maxRate)
	}
	d.adms = append(d.adms, waAdm{m, m + s.period, amount})
}

// setRate moves the window to setting i, as SetRate does: admissions still
// in it leave at their time plus the new period; those that left stay out.
func (d *waDriver) setRate(i int) {
	d.set = i
	s := d.settings[i]
	m := d.mono(d.c.Elapsed())
	for j := range d.adms {
		if a := &d.adms[j]; a.leave > m {
			a.leave = a.mono + s.period
		}
	}
	for _, x := range d.live() {
		x.tooBig = x.tooBig || x.amount > s.maxRate
	}
	d.w.SetRate(s.maxRate, s.period)
}

// collect takes the results of the waiters that returned, and checks them.
func (d *waDriver) collect() {
	d.t.Helper()
	d.c.Settle()
	var got []*waWaiter
	expired := time.Duration(-1) // when a waiter missed its deadline, if one did
	for _, x := range d.ws {
		if x.done {
			continue
		}
		select {
		case x.r = <-x.ch:
		default:
			continue
		}
		x.done = true
		x.mono = d.mono(x.r.at)
		got = append(got, x)
		if x.dl >= 0 && errors.Is(x.r.err, context.DeadlineExceeded) {
			expired = x.r.at
		}
	}
	for _, x := range got {
		switch {
		case x.r.err == nil:
			if x.gone {
				continue // cancelled as it was admitted: the admission stands
			}
			// On time, exactly when the walk said; or at once when a
			// waiter ahead missed its deadline (the walk counted it in),
			// or an operation (a cancellation, SetRate) made room.
			early := d.immediate || x.r.at == expired && expired < x.pred
			onTime := x.r.at == x.pred || x.dl >= 0 && x.dl == x.pred || early
			if d.late == nil && !onTime {
				d.fatalf("waiter %d (%v) admitted at %v, the reference walk said %v", x.id, x.amount, x.r.at, x.pred)
			}
			if x.r.at < x.pred && !early {
				d.fatalf("waiter %d (%v) admitted at %v, before the reference walk's %v", x.id, x.amount, x.r.at, x.pred)
			}
			for _, y := range d.ws[:x.id] {
				if !y.gone && (!y.done || y.r.err == nil && y.mono > x.mono) {
					d.fatalf("waiter %d admitted at %v before waiter %d, queued ahead of it", x.id, x.r.at, y.id)
				}
			}
			d.record(x.mono, x.amount)
		case errors.Is(x.r.err, ErrExceedsCapacity):
			if !x.tooBig || x.r.at != d.c.Elapsed() {
				d.fatalf("waiter %d (%v): %v at %v", x.id, x.amount, x.r.err, x.r.at)
			}
		case errors.Is(x.r.err, context.Canceled):
			if !x.gone {
				d.fatalf("waiter %d: %v, not cancelled", x.id, x.r.err)
			}
		case errors.Is(x.r.err, context.DeadlineExceeded):
			var de *DeadlineError
			if errors.As(x.r.err, &de) || x.dl < 0 || x.r.at != x.dl || d.late == nil && x.dl > x.pred {
				d.fatalf("waiter %d: %v at %v, deadline %v, due %v", x.id, x.r.err, x.r.at, x.dl, x.pred)
			}
		default:
			d.fatalf("waiter %d (%v): %v", x.id, x.amount, x.r.err)
		}
	}
}

// check collects, then compares, under mu, the queue with the waiters the
// test knows, works out when each is due by the reference walk, and (on
// time, when the forecast holds) checks that the cached forecast follows.
func (d *waDriver) check() {
	d.t.Helper()
	// Reading the clock may admit waiters (after the clock moved back, the
	// Window sets its timer again, admitting those whose time has come):
	// read it first, then collect.
	d.w.Level()
	d.collect()
	w := d.w
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	live := d.live()
	if w.q.live != len(live) {
		d.fatalf("%d waiting, the test knows of %d", w.q.live, len(live))
	}
	ats, _ := waRef(w, now, 1)
	i := 0
	for s := range w.q.waiters() {
		if x := live[i]; s.amount != x.amount {
			d.fatalf("queue position %d holds %v, the test queued waiter %d of %v there", i, s.amount, x.id, x.amount)
		}
		live[i].pred = d.c.Elapsed() + time.Duration(ats[i]-now)
		i++
	}
	if d.late == nil {
		d.compare(now, w.quanta(min(d.amounts[d.rng.IntN(len(d.amounts))], w.maxRate)))
	}
}

// compare checks due for a newcomer of q quanta: cached, fresh and by the
// reference walk. It requires mu.
func (d *waDriver) compare(now int64, q uint64) int64 {
	d.t.Helper()
	w := d.w
	cached, fresh := waEstimate(w, now, q)
	_, ref := waRef(w, now, q)
	if cached != fresh || fresh != ref {
		d.fatalf("due(%d quanta): %d cached (tailOK %v), %d fresh, %d by the reference walk (now %d)", q, cached, w.q.tailOK, fresh, ref, now)
	}
	d.checked++
	return ref
}

// acquire queues a caller of a random amount and kind, after checking the
// estimate for it as Acquire works it out (after admitting whoever's time
// has come), and a deadline at the estimate, which must fail at once.
func (d *waDriver) acquire() {
	w, c := d.w, d.c
	amount := d.amounts[d.rng.IntN(len(d.amounts))]
	if m := d.settings[d.set].maxRate; amount > m {
		want := fmt.Sprintf("ratelimit: acquire %v exceeds capacity %v", amount, m)
		if err := w.Acquire(context.Background(), amount); !errors.Is(err, ErrExceedsCapacity) || err.Error() != want {
			d.fatalf("Acquire(%v) = %v, want %q", amount, err, want)
		}
		return
	}
	w.mu.Lock()
	now := w.now()
	if !w.q.empty() {
		w.process(now)
	}
	q := w.quanta(amount)
	immediate := w.q.empty() && w.admit(now, q, false)
	due := d.compare(now, q)
	w.mu.Unlock()
	d.collect() // process may have admitted late waiters
	wait := time.Duration(due - now)
	if immediate && wait != 0 {
		d.fatalf("an amount that fits now is due in %v", wait)
	}
	x := &waWaiter{id: len(d.ws), amount: amount, ch: make(chan waResult, 1), group: -1, dl: -1, pred: c.Elapsed() + wait}
	ctx := context.Background()
	switch kind := d.rng.IntN(6); {
	case kind == 0 && wait > 0: // a deadline at the estimate: refused at once
		dctx, cancel := c.WithTimeout(ctx, wait)
		err := w.Acquire(dctx, amount)
		cancel()
		var de *DeadlineError
		if !errors.As(err, &de) || de.Wait != wait || de.Remaining != wait || de.Amount != amount {
			d.fatalf("Acquire(%v) with the deadline at the estimate %v: %v", amount, wait, err)
		}
		d.desc += " refused at the estimate"
		return
	case kind <= 1 && wait > 0: // a deadline a nanosecond after the estimate: met
		ctx, x.cancel = c.WithTimeout(ctx, wait+1)
		x.dl = c.Elapsed() + wait + 1
		d.deadlines++
	case kind == 2:
		ctx, x.cancel = context.WithCancel(ctx)
	case kind == 3 && len(d.groups) > 0: // a shared context
		x.group = d.rng.IntN(len(d.groups))
		ctx = context.WithValue(d.groups[x.group], waKey{}, x.id)
	}
	d.desc += fmt.Sprintf(" %v due in %v (deadline %v, group %d)", amount, wait, x.dl, x.group)
	d.ws = append(d.ws, x)
	go func() {
		err := w.Acquire(ctx, amount)
		x.ch <- waResult{c.Elapsed(), err}
	}()
}

type waKey struct{}

func (d *waDriver) cancelOne() {
	var cs []*waWaiter
	for _, x := range d.live() {
		if x.cancel != nil && x.dl < 0 {
			cs = append(cs, x)
		}
	}
	if len(cs) == 0 {
		return
	}
	x := cs[d.rng.IntN(len(cs))]
	d.desc += fmt.Sprintf(" waiter %d", x.id)
	x.gone = true
	x.cancel()
}

func (d *waDriver) cancelGroup() {
	i := d.rng.IntN(len(d.groups))
	d.desc += fmt.Sprintf(" group %d", i)
	for _, x := range d.live() {
		if x.group == i {
			x.gone = true
		}
	}
	d.gcancel[i]()
	d.groups[i], d.gcancel[i] = context.WithCancel(context.Background())
}

// try calls HasCapacity and TryAcquire, which must agree with each other
// and with the reference walk: true exactly when no one waits, no pause
// holds and amount fits now.
func (d *waDriver) try() {
	w := d.w
	amount := d.amounts[d.rng.IntN(len(d.amounts))]
	w.mu.Lock()
	now := w.now()
	want := w.q.empty() && amount <= w.maxRate
	if want {
		_, due := waRef(w, now, w.quanta(amount))
		want = due == now
	}
	w.mu.Unlock()
	has := w.HasCapacity(amount)
	if d.rng.IntN(3) == 0 {
		if has != want {
			d.fatalf("HasCapacity(%v) = %v, want %v (%d waiting)", amount, has, want, w.Waiting())
		}
		return
	}
	if got := w.TryAcquire(amount); got != want || got != has {
		d.fatalf("TryAcquire(%v) = %v, HasCapacity %v, want %v (%d waiting)", amount, got, has, want, w.Waiting())
	} else if got {
		d.record(d.mono(d.c.Elapsed()), amount)
		d.desc += fmt.Sprintf(" took %v", amount)
	}
}

// advance moves the clock forward to elapsed, stopping at the deadlines
// of waiters that will miss them, so that every admission in between is
// where the reference walk put it.
func (d *waDriver) advance(to time.Duration) {
	for d.c.Elapsed() < to {
		stop := to
		if d.late == nil {
			for _, x := range d.live() {
				if x.dl > d.c.Elapsed() && x.dl <= x.pred {
					stop = min(stop, x.dl)
				}
			}
		}
		d.c.AdvanceTo(d.t, stop)
		d.check()
	}
}

func (d *waDriver) step() {
	d.op++
	d.desc = ""
	d.immediate = true
	defer func() { d.immediate = false }()
	switch op := d.rng.IntN(20); {
	case op < 5:
		d.desc = "acquire"
		d.acquire()
	case op == 5:
		d.desc = "cancel"
		d.cancelOne()
	case op == 6:
		d.desc = "cancel"
		d.cancelGroup()
	case op < 9:
		d.desc = "try"
		d.try()
	case op == 9:
		d.desc = "level"
		if l := d.w.Level(); l < 0 || math.IsNaN(l) {
			d.fatalf("Level() = %v", l)
		}
	case op == 10:
		i := d.rng.IntN(len(d.settings))
		d.desc = fmt.Sprintf("SetRate(%v, %v)", d.settings[i].maxRate, d.settings[i].period)
		d.setRate(i)
	case op == 11:
		p := time.Duration(d.rng.Int64N(int64(2 * d.settings[d.set].period)))
		d.desc = fmt.Sprintf("Pause(%v)", p)
		d.w.Pause(p)
	case op == 12:
		back := time.Duration(d.rng.Int64N(int64(d.settings[d.set].period)))
		d.desc = fmt.Sprintf("clock back %v", back)
		d.monoAt, d.clockAt = d.mono(d.c.Elapsed()), d.c.Elapsed()-back
		d.c.Set(clocktest.Start.Add(d.clockAt))
		d.c.Settle()
	case op == 13 && d.late != nil:
		d.desc = "fire late"
		d.late.fireLate()
	case op == 14 && d.jumps < 2 && d.rng.IntN(4) == 0:
		// Past 2^61 ns, where the Window moves its epoch, with the
		// waiters due on the way admitted at their times.
		d.jumps++
		to := d.c.Elapsed() + 1<<61 + time.Duration(d.rng.Int64N(int64(time.Hour)))
		d.desc = fmt.Sprintf("jump to %v", to)
		d.immediate = false
		d.advance(to)
		return
	default:
		// To the next admission exactly, a nanosecond before it, or on.
		next := time.Duration(math.MaxInt64)
		for _, x := range d.live() {
			next = min(next, x.pred)
		}
		p := d.settings[d.set].period
		to := d.c.Elapsed() + time.Duration(d.rng.Int64N(int64(p)))
		if next != math.MaxInt64 && next > d.c.Elapsed() {
			switch d.rng.IntN(3) {
			case 0:
				to = next
			case 1:
				to = next - 1
			}
		}
		d.desc = fmt.Sprintf("advance to %v", to)
		d.immediate = false
		d.advance(max(to, d.c.Elapsed()))
		return
	}
	d.check()
}

// finish lets everyone go, and checks that no one and no timer is left.
func (d *waDriver) finish() {
	d.desc = "finish"
	d.immediate = true // the cancellations below may let others go at once
	for i, cancel := range d.gcancel {
		for _, x := range d.live() {
			if x.group == i {
				x.gone = true
			}
		}
		cancel()
	}
	d.check()
	d.immediate = false
	for range 1000 {
		if d.late != nil {
			d.late.fireLate()
		}
		d.check()
		if len(d.live()) == 0 {
			break
		}
		d.advance(d.c.Elapsed() + d.settings[d.set].period)
	}
	if n := len(d.live()); n != 0 {
		d.fatalf("%d waiters never returned", n)
	}
	for _, x := range d.ws {
		if x.cancel != nil {
			x.cancel()
		}
	}
	d.c.Settle()
	w := d.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.q.live != 0 || w.timer != nil || w.armed {
		d.fatalf("left behind: %d waiting, timer %v, armed %v", w.q.live, w.timer != nil, w.armed)
	}
}

func waRun(t *testing.T, c *clocktest.Clock, seed uint64, ops int, late bool) *waDriver {
	rng := rand.New(rand.NewPCG(seed, 10))
	d := &waDriver{t: t, c: c, rng: rng, seed: seed,
		settings: []waSetting{{4, time.Second}, {6, 700 * time.Millisecond}, {4, 1500 * time.Millisecond}, {8, 250 * time.Millisecond}},
		// Up to the largest capacity: SetRate down keeps admissions above
		// the new capacity in the window, and fails waiters above it.
		amounts: []float64{4, 4, 2, 1, 1, 0.5, 3, 4 * (1 - 0x1p-20), 0.25, 1.75, 6, 8, 0x1p-30},
	}
	var clk clock.Clock = c
	if late {
		d.late = &waLateClock{Mock: c.Mock}
		clk = d.late
	}
	var opts []WindowOption
	if res := []time.Duration{0, 0, 37 * time.Millisecond, 1}[rng.IntN(4)]; res > 0 {
		opts = append(opts, WithResolution(res))
	}
	d.set = rng.IntN(len(d.settings))
	s := d.settings[d.set]
	d.w = NewWindow(s.maxRate, s.period, append(opts, WithClock(clk))...)
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		d.groups, d.gcancel = append(d.groups, ctx), append(d.gcancel, cancel)
	}
	for range ops {
		d.step()
	}
	d.finish()
	return d
}

func waSeeds(t *testing.T, env string, n uint64) []uint64 {
	if v, err := strconv.ParseUint(os.Getenv(env), 10, 64); err == nil {
		t.Logf("%s=%d", env, v)
		return []uint64{v}
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = uint64(i)
	}
	return seeds
}

// The estimate and its cache against the reference walk and against the
// admissions, on random queues, on a clock whose timer fires on time.
// WASEED=n runs seed n only.
func TestWindowAttackEstimateOnTime(t *testing.T) {
	checked, deadlines, jumps := 0, 0, 0
	for _, seed := range waSeeds(t, "WASEED", 16) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			d := waRun(t, c, seed, 400, false)
			checked += d.checked
			deadlines += d.deadlines
			jumps += d.jumps
		})
	}
	t.Logf("%d estimates compared, %d waiters queued with a deadline a nanosecond after theirs, %d jumps past 2^61 ns",
		checked, deadlines, jumps)
}

// The same with the timer firing late: admissions happen when the timer's
// function finally runs, or when a caller, a cancellation, SetRate or
// Pause comes first; the cache must notice. WASEED=n runs seed n only.
func TestWindowAttackEstimateLateTimer(t *testing.T) {
	checked := 0
	for _, seed := range waSeeds(t, "WASEED", 16) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			d := waRun(t, c, seed, 400, true)
			checked += d.checked
		})
	}
	t.Logf("%d estimates compared", checked)
}

// A scripted queue on NewWindow(4, 1s), exact and with a resolution of 30
// ms that merges the admissions: weighted waiters with deadlines a
// nanosecond after their estimates between cancellable ones and a group
// on a shared context; the front, a middle waiter and the group
// cancelled; Level (which drops entries from the log) between the
// estimates; SetRate to a longer and a shorter period; Pause; the clock
// moved back. Every waiter goes exactly when the reference walk said,
// and the cache, a fresh walk and the reference walk agree at every step.
func TestWindowAttackEstimateScript(t *testing.T) {
	for _, res := range []time.Duration{0, 30 * time.Millisecond} {
		t.Run(fmt.Sprintf("resolution %v", res), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				const ms = time.Millisecond
				d := &waDriver{t: t, c: c, rng: rand.New(rand.NewPCG(1, 2)),
					settings: []waSetting{{4, time.Second}, {4, 2 * time.Second}, {4, 600 * ms}},
					amounts:  []float64{1},
				}
				var opts []WindowOption
				if res > 0 {
					opts = append(opts, WithResolution(res))
				}
				d.w = NewWindow(4, time.Second, append(opts, WithClock(c))...)
				w := d.w
				ctx := context.Background()
				g, gcancel := context.WithCancel(ctx)
				d.groups, d.gcancel = []context.Context{g}, []context.CancelFunc{gcancel}
				queue := func(amount float64, kind string) *waWaiter {
					t.Helper()
					d.op++
					d.desc = fmt.Sprintf("queue %v %s", amount, kind)
					w.mu.Lock()
					now := w.now()
					due := d.compare(now, w.quanta(amount))
					w.mu.Unlock()
					wait := time.Duration(due - now)
					x := &waWaiter{id: len(d.ws), amount: amount, ch: make(chan waResult, 1), group: -1, dl: -1, pred: c.Elapsed() + wait}
					actx := ctx
					switch kind {
					case "deadline":
						at, cancel := c.WithTimeout(ctx, wait)
						var de *DeadlineError
						if err := w.Acquire(at, amount); !errors.As(err, &de) || de.Wait != wait {
							d.fatalf("deadline at the estimate %v: %v", wait, err)
						}
						cancel()
						actx, x.cancel = c.WithTimeout(ctx, wait+1)
						x.dl = x.pred + 1
					case "cancel":
						actx, x.cancel = context.WithCancel(ctx)
					case "group":
						actx, x.group = context.WithValue(g, waKey{}, x.id), 0
					}
					d.ws = append(d.ws, x)
					go func() {
						err := w.Acquire(actx, amount)
						x.ch <- waResult{c.Elapsed(), err}
					}()
					d.check()
					return x
				}
				do := func(desc string, f func()) {
					t.Helper()
					d.op++
					d.desc = desc
					d.immediate = true
					f()
					d.check()
					d.immediate = false
				}
				for i, a := range []float64{1, 1.5, 0.5} {
					c.AdvanceTo(t, time.Duration(i)*20*ms)
					w.TryAcquire(a)
				}
				front := queue(2, "cancel")
				queue(0.5, "deadline")
				queue(4, "group")
				queue(0.25, "group")
				mid := queue(3, "cancel")
				queue(1, "deadline")
				queue(4, "deadline")
				queue(1, "plain")
				back := queue(2, "cancel")
				do("level", func() { w.Level() })
				d.advance(500 * ms)
				do("cancel the front", func() { front.gone = true; front.cancel() })
				queue(2, "deadline")
				d.advance(1010 * ms)
				do("level", func() { w.Level() })
				queue(1.5, "deadline")
				do("cancel the middle", func() { mid.gone = true; mid.cancel() })
				queue(3.5, "deadline")
				do("SetRate(4, 2s)", func() { d.setRate(1) })
				queue(1, "deadline")
				d.advance(d.live()[0].pred - 1)
				do("level", func() { w.Level() })
				d.advance(d.live()[0].pred)
				do("cancel the group", func() { d.cancelGroup() })
				queue(0.75, "deadline")
				do("Pause(700ms)", func() { w.Pause(700 * ms) })
				queue(2.5, "deadline")
				do("SetRate(4, 600ms)", func() { d.setRate(2) })
				queue(4, "deadline")
				do("clock back 300ms", func() {
					d.monoAt, d.clockAt = d.mono(c.Elapsed()), c.Elapsed()-300*ms
					c.Set(clocktest.Start.Add(d.clockAt))
				})
				queue(1, "deadline")
				do("cancel the back", func() { back.gone = true; back.cancel() })
				queue(3, "deadline")
				for len(d.live()) > 0 {
					d.advance(d.live()[0].pred)
				}
				d.finish()
				if d.checked < 20 {
					t.Fatalf("only %d estimates compared", d.checked)
				}
			})
		})
	}
}

// Goroutines on the default clock in a synctest bubble race TryAcquire,
// Acquire (with deadlines, cancellations and none), SetRate, Pause and
// Level, exact and with a resolution. Admissions are recorded on the
// bubble's time: no window of length Period may hold more than MaxRate,
// nobody may miss a deadline that Acquire let them queue with (no SetRate
// or Pause changes the setting: SetRate sets the same one), and no one and
// no timer may be left. Run with -race.
func TestWindowAttackConcurrent(t *testing.T) {
	for i, res := range []time.Duration{0, 0, 7 * time.Millisecond} {
		synctest.Test(t, func(t *testing.T) {
			const maxRate, period = 5.0, 100 * time.Millisecond
			var opts []WindowOption
			if res > 0 {
				opts = append(opts, WithResolution(res))
			}
			w := NewWindow(maxRate, period, opts...)
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
			var missed, queuedWithDeadline int
			var wg sync.WaitGroup
			for g := range 12 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
					var shared context.Context
					var cancelShared context.CancelFunc = func() {}
					for range 250 {
						a := []float64{1, 0.5, 5, 2.5, 0.125, 4.75}[rng.IntN(6)]
						switch rng.IntN(12) {
						case 0, 1:
							if w.TryAcquire(a) {
								rec(a)
							}
						case 2, 3, 4:
							d := time.Duration(rng.IntN(300))*time.Millisecond + 1
							ctx, cancel := context.WithTimeout(context.Background(), d)
							err := w.Acquire(ctx, a)
							var de *DeadlineError
							if err == nil {
								rec(a)
							}
							mu.Lock()
							if !errors.As(err, &de) {
								queuedWithDeadline++
								if errors.Is(err, context.DeadlineExceeded) && res == 0 && i == 0 {
									missed++
								}
							}
							mu.Unlock()
							cancel()
						case 5:
							if w.Acquire(context.Background(), a) == nil {
								rec(a)
							}
						case 6:
							w.SetRate(maxRate, period)
						case 7:
							if i > 0 {
								w.Pause(time.Duration(rng.IntN(50)) * time.Millisecond)
							}
						case 8:
							ctx, cancel := context.WithCancel(context.Background())
							d := time.Duration(rng.IntN(50)) * time.Millisecond
							go func() { time.Sleep(d); cancel() }()
							if w.Acquire(ctx, a) == nil {
								rec(a)
							}
						case 9:
							if shared == nil || rng.IntN(3) == 0 {
								cancelShared()
								shared, cancelShared = context.WithTimeout(context.Background(), time.Duration(rng.IntN(200))*time.Millisecond)
							}
							go func(ctx context.Context) {
								if w.Acquire(ctx, a) == nil {
									rec(a)
								}
							}(context.WithValue(shared, waKey{}, g))
						case 10:
							if l := w.Level(); l < 0 || l > maxRate {
								t.Errorf("Level() = %v", l)
							}
						default:
							time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
						}
					}
					cancelShared()
				})
			}
			wg.Wait()
			time.Sleep(time.Second) // the cancelling goroutines and the shared contexts
			synctest.Wait()
			slices.SortStableFunc(log, func(x, y adm) int { return int(x.at - y.at) })
			for j := range log {
				sum := new(big.Rat)
				for k := j; k >= 0 && log[k].at > log[j].at-period; k-- {
					sum.Add(sum, new(big.Rat).SetFloat64(log[k].a))
				}
				if sum.Cmp(new(big.Rat).SetFloat64(maxRate)) > 0 {
					t.Fatalf("run %d: %s units admitted in the window ending at %v", i, sum.FloatString(6), log[j].at)
				}
			}
			if missed != 0 {
				t.Errorf("run %d: %d of %d callers queued with a deadline missed it", i, missed, queuedWithDeadline)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.q.live != 0 || w.timer != nil || w.armed {
				t.Fatalf("run %d: %d waiting, timer %v, armed %v", i, w.q.live, w.timer != nil, w.armed)
			}
			t.Logf("run %d: %d admissions, %d queued with a deadline", i, len(log), queuedWithDeadline)
			if len(log) < 100 {
				t.Errorf("run %d: only %d admissions", i, len(log))
			}
		})
	}
}

// SetRate between the extreme rates, with full windows of many entries at
// two rates and pauses of the longest length, keeps the arithmetic in
// range: quanta converted between shifts of 2 and over 1000, counts beyond
// 64 bits, Level
// finite and not negative, nothing admitted during a pause, and the whole
// capacity available again once every admission has left the window.
func TestWindowAttackExtremeRates(t *testing.T) {
	extremes := []waSetting{
		{1e-200, time.Hour}, {1e12, time.Second}, {1, time.Nanosecond}, {1024, time.Nanosecond},
		{5000, 416 * day}, {2, 3 * time.Nanosecond}, {1e-6, time.Second}, {6e-306, time.Nanosecond},
		{1 << 59, maxPeriod},
	}
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := NewWindow(1, time.Second, WithClock(c))
		wide := false
		for i, from := range extremes {
			for j, to := range extremes {
				c.Advance(maxPeriod + 1) // past any pause and period
				w.SetRate(from.maxRate, from.period)
				for k := range 8 { // eight entries of an eighth
					c.Add(time.Duration(min(k, 1)))
					if !w.TryAcquire(from.maxRate / 8) {
						t.Fatalf("%v/%v: an eighth of the capacity refused after %d", from.maxRate, from.period, k)
					}
				}
				// Admissions at a second rate, as many as fit: the log then
				// holds two rates' quanta.
				mid := extremes[(i+1)%len(extremes)]
				w.SetRate(mid.maxRate, mid.period)
				for range 8 {
					c.Add(1)
					if !w.TryAcquire(mid.maxRate / 8) {
						break
					}
				}
				if (i+j)%2 == 0 {
					w.Pause(maxPeriod)
				}
				w.SetRate(to.maxRate, to.period)
				w.mu.Lock()
				wide = wide || w.log.hi > 0
				w.mu.Unlock()
				lv := w.Level()
				if math.IsNaN(lv) || math.IsInf(lv, 0) || lv < 0 {
					t.Fatalf("%v/%v -> %v/%v: level %v", from.maxRate, from.period, to.maxRate, to.period, lv)
				}
				if (i+j)%2 == 0 && w.HasCapacity(to.maxRate*1e-9) {
					t.Fatalf("%v/%v -> %v/%v: capacity during the pause", from.maxRate, from.period, to.maxRate, to.period)
				}
				c.Advance(time.Duration(1 << 50)) // 13 days
				if (i+j)%2 == 0 && w.HasCapacity(to.maxRate*1e-9) {
					t.Fatalf("%v/%v -> %v/%v: capacity 13 days into the pause", from.maxRate, from.period, to.maxRate, to.period)
				}
			}
		}
		if !wide {
			t.Error("no SetRate took the log's sum beyond 64 bits")
		}
		w.SetRate(1e12, time.Second)
		c.Advance(maxPeriod + time.Second)
		if !w.TryAcquire(1e12) || w.HasCapacity(1e-3) {
			t.Fatalf("after the pauses ended and the window emptied: level %v, capacity not exactly 1e12", w.Level())
		}
	})
}

// Amounts a quantum from the capacity are counted exactly: the capacity
// less its last bit and that bit fill the window; a nanosecond's worth
// more, or the smallest float, does not fit; a waiter for the whole
// capacity behind them goes exactly Period later.
func TestWindowAttackAmountsNearCapacity(t *testing.T) {
	for _, s := range []waSetting{{1, time.Second}, {3, time.Second}, {10, time.Second}, {1e12, time.Second},
		{0.1, time.Second}, {1e-200, time.Second}, {6e-306, time.Nanosecond}, {1 << 59, maxPeriod}} {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			maxRate, period := s.maxRate, s.period
			w := NewWindow(maxRate, period, WithClock(c))
			below := math.Nextafter(maxRate, 0)
			if !w.TryAcquire(below) {
				t.Fatalf("%v: refused %v", maxRate, below)
			}
			if w.TryAcquire(maxRate - below + maxRate*0x1p-40) {
				t.Fatalf("%v: admitted more than the last bit", maxRate)
			}
			if !w.TryAcquire(maxRate - below) {
				t.Fatalf("%v: refused the last bit, %v", maxRate, maxRate-below)
			}
			if w.TryAcquire(math.SmallestNonzeroFloat64) || w.Level() != maxRate {
				t.Fatalf("%v: admitted the smallest float into a full window (level %v)", maxRate, w.Level())
			}
			ch := make(chan error, 1)
			go func() { ch <- w.Acquire(context.Background(), maxRate) }()
			c.Advance(period - 1)
			select {
			case err := <-ch:
				t.Fatalf("%v: the whole capacity was admitted early: %v", maxRate, err)
			default:
			}
			c.Advance(1)
			if err := <-ch; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// waOwnCtx is a context of a type the context package does not know, so
// that context.AfterFunc watches it with a goroutine of its own: one that
// is never stopped outlives the bubble, which synctest reports.
type waOwnCtx struct {
	context.Context
	done chan struct{}
}

func (c waOwnCtx) Done() <-chan struct{} { return c.done }

// The watch of a shared context passes from an owner admitted first to a
// context.AfterFunc, which must be stopped once the group is gone, however
// it goes: its members admitted, failed by SetRate for exceeding the
// capacity, with a member joining after the owner left, or the owner
// failed by SetRate while its members go on. The contexts are never
// cancelled, so a watch left behind would block for good, and the bubble
// would not end.
func TestWindowAttackSharedContextWatchIsStopped(t *testing.T) {
	cases := []struct {
		name    string
		amounts []float64 // the group, owner first, behind a full window
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
				w := NewWindow(4, 4*time.Second, WithClock(c))
				w.TryAcquire(4)
				ctx := waOwnCtx{context.Background(), make(chan struct{})} // never done
				var chs []chan error
				acquire := func(a float64) {
					ch := make(chan error, 1)
					go func() { ch <- w.Acquire(context.WithValue(ctx, waKey{}, a), a) }()
					c.Settle()
					chs = append(chs, ch)
				}
				for _, a := range tc.amounts {
					acquire(a)
				}
				if tc.first != 0 {
					w.SetRate(tc.first, 4*time.Second)
				}
				c.AdvanceUntil(t, time.Minute, func() bool { return w.Waiting() < len(tc.amounts) })
				if tc.late != 0 {
					acquire(tc.late)
				}
				if tc.setRate != 0 {
					w.SetRate(tc.setRate, 4*time.Second)
				}
				c.AdvanceUntil(t, time.Minute, func() bool { return w.Waiting() == 0 })
				c.Settle()
				for i, ch := range chs {
					select {
					case <-ch:
					default:
						t.Fatalf("waiter %d never returned", i)
					}
				}
				// A watch left behind is a goroutine blocked on ctx.Done()
				// for good: synctest panics as the bubble ends.
			})
		})
	}
}

// Amounts that are no whole number of quanta (2^-61 units on a window of
// 1) are rounded up, so the window never holds more than MaxRate, in
// exact arithmetic: 1-2^-53 (the largest float below 1) and then 255.5
// quanta (counted as 256) fill it but for half a quantum's worth, exactly;
// 0.9 quantum more would make 1 + 0.4*2^-61 units, and is refused.
func TestWindowAttackAmountsBetweenQuanta(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := NewWindow(1, time.Second, WithClock(c))
		for _, step := range []struct {
			amount float64
			want   bool
		}{{1 - 0x1p-53, true}, {255.5 * 0x1p-61, true}, {0.9 * 0x1p-61, false}, {math.SmallestNonzeroFloat64, false}} {
			if got := w.TryAcquire(step.amount); got != step.want {
				t.Fatalf("TryAcquire(%v) = %v, want %v (level %v)", step.amount, got, step.want, w.Level())
			}
		}
	})
}

// The forecast merges admissions as the log does: into the newest entry if
// its first admission was less than the resolution before, not at exactly
// the resolution. NewWindow(3, 100ms, WithResolution(10ms)) holds 1 unit
// admitted at 0, 10 and 20 ms: three entries, exactly 10 ms apart. A, B
// and C queued at 50 ms go at 100, 110 and 120 ms, three entries again; a
// newcomer D is then due at 200 ms, when A leaves, and E at 210 ms. Were
// B merged into A (stamped 110 ms), D would be due at 210 ms.
func TestWindowAttackForecastMergesAsTheLog(t *testing.T) {
	const ms = time.Millisecond
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := NewWindow(3, 100*ms, WithClock(c), WithResolution(10*ms))
		for i := range 3 {
			c.AdvanceTo(t, time.Duration(i)*10*ms)
			w.TryAcquire(1)
		}
		if w.log.n != 3 {
			t.Fatalf("%d entries for admissions exactly the resolution apart, want 3", w.log.n)
		}
		c.AdvanceTo(t, 50*ms)
		bg := context.Background()
		for range 3 {
			go func() { _ = w.Acquire(bg, 1) }()
			c.Settle()
		}
		var chs []chan waResult
		for _, due := range []time.Duration{200 * ms, 210 * ms} {
			at, cancel := c.WithDeadline(bg, clocktest.Start.Add(due))
			var de *DeadlineError
			if err := w.Acquire(at, 1); !errors.As(err, &de) || de.Wait != due-50*ms {
				t.Fatalf("deadline at %v: %v, want a DeadlineError with a wait of %v", due, err, due-50*ms)
			}
			cancel()
			ctx, cancel := c.WithDeadline(bg, clocktest.Start.Add(due+1))
			defer cancel()
			ch := make(chan waResult, 1)
			go func() {
				err := w.Acquire(ctx, 1)
				ch <- waResult{c.Elapsed(), err}
			}()
			c.Settle()
			chs = append(chs, ch)
		}
		c.AdvanceTo(t, 300*ms)
		for i, due := range []time.Duration{200 * ms, 210 * ms} {
			if r := <-chs[i]; r.err != nil || r.at != due {
				t.Errorf("newcomer %d: %v at %v, want admitted at %v", i, r.err, r.at, due)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Bugs these attacks found, fixed since: kept as regression tests.
// ---------------------------------------------------------------------------

// The forecast behind due keeps only what it needs: while a queue stays
// non-empty and every admission comes on time (a mocked clock, a synctest
// bubble), the forecast, once built by a caller with a deadline, follows
// every later caller; the entries it has dropped must not pile up.
// NewWindow(2, 1s), four callers always waiting, one more every half
// second: 2000 admissions. (Found as a bug: windowSim.own kept an entry
// per admission, 16 bytes each, for as long as the queue never emptied.)
func TestWindowForecastStaysSmall(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := NewWindow(2, time.Second, WithClock(c))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w.TryAcquire(1)
		c.Advance(500 * time.Millisecond)
		w.TryAcquire(1)
		dctx, dcancel := c.WithTimeout(ctx, time.Hour) // builds the forecast
		defer dcancel()
		go func() { _ = w.Acquire(dctx, 1) }()
		for range 3 {
			go func() { _ = w.Acquire(ctx, 1) }()
			c.Settle()
		}
		for range 2000 {
			go func() { _ = w.Acquire(ctx, 1) }()
			c.Advance(500 * time.Millisecond)
		}
		w.mu.Lock()
		own, waiting, logged := cap(w.sim.own), w.q.live, w.log.n
		w.mu.Unlock()
		if own > 4*(waiting+logged)+16 {
			t.Errorf("the forecast holds %d entries with %d callers waiting and %d entries in the log", own, waiting, logged)
		}
		cancel()
		c.Settle()
	})
}

// The estimate saturates far ahead: on NewWindow(1, 2^55 ns) (417 days)
// full, with 256 callers waiting, a newcomer is due 257 periods on, beyond
// 2^63 ns (292 years). Its DeadlineError says math.MaxInt64, as the
// Limiter's does, and a deadline at 291.5 years fails at once. (Found as a
// bug: windowSim.fit added the period to an entry's time without
// saturating; the sum wrapped, and due said 255 periods, 291.1 years, so a
// deadline at 291.5 years queued, to be missed.)
func TestWindowDeadlineEstimateSaturates(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := NewWindow(1, maxPeriod, WithClock(c))
		w.TryAcquire(1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for range 256 {
			go func() { _ = w.Acquire(ctx, 1) }()
		}
		c.Settle()
		at, cancel2 := c.WithTimeout(ctx, time.Hour)
		defer cancel2()
		var de *DeadlineError
		if err := w.Acquire(at, 1); !errors.As(err, &de) {
			t.Fatalf("Acquire with a deadline in an hour: %v, want a DeadlineError", err)
		}
		if de.Wait != math.MaxInt64 {
			t.Errorf("DeadlineError.Wait = %v (%d ns), want math.MaxInt64: the caller is due 257 periods of 2^55 ns on, past 2^63 ns", de.Wait, int64(de.Wait))
		}
		far, cancel3 := c.WithTimeout(ctx, 2915*(365*day/10)) // 291.5 years
		defer cancel3()
		queued := make(chan error, 1)
		go func() { queued <- w.Acquire(far, 1) }()
		c.Settle()
		select {
		case err := <-queued:
			if !errors.As(err, &de) {
				t.Errorf("Acquire with a deadline in 291.5 years: %v, want a DeadlineError at once", err)
			}
		default:
			t.Error("Acquire with a deadline in 291.5 years, due in more than 292, queued instead of failing at once")
		}
		cancel()
		c.Settle()
	})
}

// A crowd of callers with deadlines grows the forecast's slice of foreseen
// admissions (windowSim.own) to one entry per caller foreseen in the
// window; when the crowd is gone, the Window gives it back, as the queue
// gives back its ring and the log its own. NewWindow(1000, 1s) full on
// 1000 distinct nanoseconds, 2000 callers with a deadline an hour away,
// all cancelled. (Found as a bug: the slice was kept for good, 32 KB here,
// 370 KB after 20000 callers.)
func TestWindowForecastGivenBackAfterCrowd(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := NewWindow(1000, time.Second, WithClock(c))
		for range 1000 {
			c.Add(1)
			w.TryAcquire(1)
		}
		ctx, cancel := context.WithCancel(context.Background())
		dctx, dcancel := c.WithTimeout(ctx, time.Hour)
		defer dcancel()
		var wg sync.WaitGroup
		for range 2000 {
			wg.Go(func() { _ = w.Acquire(dctx, 1) })
		}
		c.Settle()
		w.mu.Lock()
		grown := cap(w.sim.own)
		w.mu.Unlock()
		cancel()
		wg.Wait()
		c.Settle()
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.q.live != 0 || w.q.buf != nil {
			t.Fatalf("the crowd is gone, but %d wait, ring %d", w.q.live, len(w.q.buf))
		}
		if grown < 1000 {
			t.Fatalf("the forecast held %d entries while 2000 waited: the test did not grow it", grown)
		}
		if n := cap(w.sim.own); n > minLog {
			t.Errorf("no one waits, but the forecast holds a slice of %d entries (%d while 2000 waited)", n, grown)
		}
	})
}
