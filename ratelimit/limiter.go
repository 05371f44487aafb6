package ratelimit

import (
	"context"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
)

// An Acquirer admits work at a limited rate. Acquire blocks until amount
// units of capacity are available or ctx ends. *Limiter implements it; the
// pool and throttle packages accept any Acquirer.
type Acquirer interface {
	Acquire(ctx context.Context, amount float64) error
}

var _ Acquirer = (*Limiter)(nil)

// A Limiter is a leaky bucket that holds at most MaxRate units and drains at
// MaxRate units per Period. See the package documentation for the model.
//
// A Limiter is safe for concurrent use. It holds no goroutine, and it holds
// a timer only while callers are waiting, so a Limiter nobody uses costs
// nothing and needs no Close.
type Limiter struct {
	cur   atomic.Pointer[params]
	clock clock.Clock
	// seen is the time, in ticks since the epoch, at which mu was last
	// taken: a fast path that reads an earlier time has seen the clock
	// move backwards, and takes mu to deal with it.
	seen atomic.Int64
	_    [cacheLine - 32]byte

	// mu guards q, the timer fields and seen; its holder freezes the
	// current params' state word.
	mu      sync.Mutex
	q       queue // waiters; their groups by context are in watch.go
	timer   *clock.Timer
	armed   bool      // timer is set to fire at timerAt
	timerAt time.Time // when the front waiter becomes due

	// seenTat is the tat that the holder of mu left at seen: with seen,
	// the state as last seen under mu, which a clock that moves backwards
	// falls back on.
	seenTat int64
}

const cacheLine = 64

// params is one generation of a limiter's settings, and the bucket that
// belongs to them. Its settings never change: SetRate, Pause and epoch
// moves publish new params, with a state word of their own, and leave the
// old word frozen for good. So a fast path that read some params can only
// ever swap the state word of those same params, and never combines a
// bucket with settings it was not read with.
type params struct {
	rate
	epoch time.Time // time 0 of the ticks in the state word

	// Blocks, in nanoseconds since the epoch (0 for none), which may lie
	// further ahead than ticks can count: the end of a pause, and the time
	// at which a bucket left over-full by SetRate has drained to full.
	// Nothing is admitted before blockNs, the later of the two; from then
	// on the bucket holds at least floor ticks (floorOff past blockNs):
	// one unit short of full at the end of a pause, full at fullNs.
	// overUnits is the level of an over-full bucket at the epoch, which
	// fullNs is worked out from (and SetRate converts, exactly enough).
	pauseNs, fullNs, blockNs int64
	overUnits                float64
	fullCut                  bool // fullNs was cut to maxFullNs
	floor, floorOff          int64

	_ [cacheLine]byte

	// state is the bucket: when it will be empty, in ticks since epoch,
	// with flag bits (see the state word constants). The fast paths read
	// and move it with one compare-and-swap. It has a cache line of its
	// own, so that the compare-and-swaps of other cores do not evict the
	// settings, which every call reads.
	state atomic.Uint64
	_     [cacheLine - 8]byte
}

// The state word: bit 0 says the word is frozen, by the holder of mu, who
// may change it with plain stores (fast paths must take mu instead), or
// for good once newer params replaced these; bit 1 says callers are
// queued, so that no one may pass them; the rest is the tat, the time at
// which the bucket will be empty, in ticks since params.epoch, which the
// level is measured from: level = (tat-now)/unit.
const (
	frozenBit  = 1 << 0
	waitingBit = 1 << 1
	tatShift   = 2
)

func tatOf(w uint64) int64  { return int64(w >> tatShift) }
func pack(tat int64) uint64 { return uint64(tat) << tatShift }

// noFloor is the floor of params without blocks: below any tat.
const noFloor = math.MinInt64 / 4

// maxFullNs is the longest an over-full bucket blocks: about 146 years.
const maxFullNs = 1 << 62

// overAt returns the units in an over-full bucket at ns, before fullNs,
// rounded up: from fullNs, which is exact, unless the level is too high
// for it to count.
func (p *params) overAt(ns int64) float64 {
	if !p.fullCut {
		return p.maxRate + float64(p.fullNs-ns)/float64(p.period)*p.maxRate
	}
	return p.overUnits - float64(ns)/float64(p.period)*p.maxRate
}

// newParams returns params for r from epoch on, with their bucket empty
// at tat, paused until pauseNs, and over-full until fullNs holding
// overUnits at the epoch (fullNs 0: work it out from overUnits, if that is
// above the capacity), frozen.
func newParams(r rate, epoch time.Time, tat, pauseNs, fullNs int64, overUnits float64) *params {
	p := &params{rate: r, epoch: epoch, pauseNs: pauseNs, floor: noFloor, floorOff: noFloor}
	if fullNs == 0 && overUnits > r.maxRate {
		// When it will have drained to full, rounded up; a level that
		// takes longer than about 146 years to drain blocks that long.
		ns := (overUnits - r.maxRate) / r.maxRate * float64(r.period) * (1 + 0x1p-50)
		fullNs = int64(min(math.Ceil(ns), maxFullNs))
		p.fullCut = fullNs == maxFullNs
	}
	if fullNs > 0 {
		p.fullNs, p.overUnits = fullNs, overUnits
	}
	p.blockNs = max(pauseNs, p.fullNs)
	if pauseNs > 0 {
		p.floorOff = max(p.floorOff, satMul(pauseNs-p.blockNs, r.scale)+r.capacity-r.oneDown)
	}
	if fullNs > 0 {
		p.floorOff = max(p.floorOff, satMul(fullNs-p.blockNs, r.scale)+r.capacity)
	}
	if p.blockNs > 0 {
		p.floor = satAdd(satMul(p.blockNs, r.scale), p.floorOff)
	}
	p.state.Store(pack(tat) | frozenBit)
	return p
}

// endedFloor returns the floor that the blocks ended by ns leave: at least
// one unit short of full from the end of a pause, full from fullNs. ns is
// within the epoch's reach (below rebaseAfter).
func (p *params) endedFloor(ns int64) int64 {
	f := int64(noFloor)
	if p.pauseNs > 0 && p.pauseNs <= ns {
		f = satMul(p.pauseNs, p.scale) + p.capacity - p.oneDown
	}
	if p.fullNs > 0 && p.fullNs <= ns {
		f = max(f, satMul(p.fullNs, p.scale)+p.capacity)
	}
	return f
}

// now returns the time now in nanoseconds and in ticks since the epoch, and
// false if the epoch must move first: the clock went back before it, or
// far past it. It asks c for Since rather than Now: on the real clock,
// that reads only the monotonic clock, which costs half as much.
func (p *params) now(c clock.Clock) (ns, ticks int64, ok bool) {
	d := int64(c.Since(p.epoch))
	if d < 0 || d >= p.rebaseAfter {
		return 0, 0, false
	}
	return d, d * p.scale, true
}

// level returns the level in units at now (ns and ticks), the state's tat
// given: with the floor of a block, or what a block ahead holds back.
func (p *params) level(tat, ns, now int64) float64 {
	l := float64(max(tat-now, 0))
	if p.blockNs > 0 {
		l = max(l, float64(p.blockNs-ns)*float64(p.scale)+float64(p.floorOff))
	}
	l /= p.unit
	if ns < p.fullNs {
		l = max(l, p.overAt(ns))
	}
	return l
}

// New returns a limiter with a bucket of maxRate units that drains in
// period: it admits bursts of up to maxRate units, and maxRate units per
// period at the steady rate. In any window of time of length t it admits at
// most maxRate + maxRate*t/period units: a full burst, plus what drains
// during the window. It starts empty, so the first maxRate units pass at
// once. New(4, 8*time.Second) admits 4 at once, then one every 2 seconds;
// New(1, 1500*time.Millisecond) admits one every 1.5 seconds, with no burst.
//
// New panics if maxRate is not a finite number > 0, or if period is not > 0
// (or exceeds about 417 days), as time.NewTicker does for bad intervals. It
// also panics on a rate it cannot count exactly enough never to admit too
// much: a unit that would take no finite time (maxRate 1e-300 per second),
// or less than 1/1024 ns (more than about 10^12 units a second) when that
// is not a whole number of 1/1024 ns.
func New(maxRate float64, period time.Duration, opts ...Option) *Limiter {
	r := newRate("New", maxRate, period)
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.clock == nil {
		o.clock = clock.New()
	}
	l := &Limiter{clock: o.clock}
	p := newParams(r, o.clock.Now(), 0, 0, 0, 0)
	p.state.Store(0)
	l.cur.Store(p)
	return l
}

// MaxRate returns the bucket's capacity: the most that can be acquired in
// one burst, and the number of units admitted per Period.
func (l *Limiter) MaxRate() float64 { return l.cur.Load().maxRate }

// Period returns the time in which MaxRate units drain from a full bucket.
func (l *Limiter) Period() time.Duration { return l.cur.Load().period }

// Level returns how full the bucket is now, in units: 0 when empty, MaxRate
// when full. It can exceed MaxRate after Pause, or after SetRate lowered the
// capacity. Units that callers wait for are not in the bucket yet.
func (l *Limiter) Level() float64 {
	p := l.cur.Load()
	w := p.state.Load()
	ns, now, ok := p.now(l.clock)
	if !ok || now < l.seen.Load() {
		p, now = l.lock()
		ns, w = now/p.scale, p.state.Load()
		l.unlock()
	}
	return p.level(tatOf(w), ns, now)
}

// Waiting returns the number of callers queued in Acquire.
func (l *Limiter) Waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.q.live
}

// Outcomes of a fast-path attempt.
const (
	admitted = iota // the amount fits (and was taken, if asked)
	refused         // it does not fit now, or callers are queued
	locked          // the state is frozen or its epoch must move: take mu
)

// attempt tries to admit amount without taking mu, moving the state only if
// take is set. It returns an error only for an amount no bucket of this
// capacity admits.
//
// It reads the params and the clock before the state word, so that as
// little time as possible passes between reading the word and swapping it,
// and it keeps that time if the compare-and-swap loses to another caller:
// the time read is a little old by the retry, which can only make the
// bucket look fuller than it is, never emptier.
func (l *Limiter) attempt(amount float64, take bool) (int, error) {
	p := l.cur.Load()
	if err := checkAmount(amount, p.maxRate); err != nil {
		return refused, err
	}
	ns, now, ok := p.now(l.clock)
	if !ok || now < l.seen.Load() {
		return locked, nil
	}
	if ns < p.blockNs {
		return refused, nil
	}
	cost := p.cost(amount)
	for {
		w := p.state.Load()
		if w&waitingBit != 0 {
			return refused, nil
		}
		if w&frozenBit != 0 {
			return locked, nil // SetRate, Pause or a waiter is at work: let it finish
		}
		tat := max(tatOf(w), now, p.floor) + cost
		if tat-now > p.capacity {
			return refused, nil
		}
		if !take || p.state.CompareAndSwap(w, pack(tat)) {
			return admitted, nil
		}
	}
}

// TryAcquire takes amount units if they are available now, without waiting,
// and reports whether it did. It reports false, and takes nothing, while
// other callers wait in Acquire (they come first), and for an amount that
// Acquire would refuse with an error. An amount of 0 always succeeds.
func (l *Limiter) TryAcquire(amount float64) bool {
	return l.check(amount, true)
}

// HasCapacity reports whether TryAcquire(amount) would succeed now, without
// taking anything.
func (l *Limiter) HasCapacity(amount float64) bool {
	return l.check(amount, false)
}

func (l *Limiter) check(amount float64, take bool) bool {
	if amount == 0 {
		return true // takes nothing, so it passes no one
	}
	switch res, _ := l.attempt(amount, take); res {
	case admitted:
		return true
	case refused:
		return false
	}
	p, now := l.lock()
	defer l.unlock()
	if checkAmount(amount, p.maxRate) != nil || !l.q.empty() || now/p.scale < p.blockNs {
		return false
	}
	tat := max(l.tat(p), now, p.floor) + p.cost(amount)
	if tat-now > p.capacity {
		return false
	}
	if take {
		setTat(p, tat)
	}
	return true
}

// Wait is shorthand for Acquire(ctx, 1).
func (l *Limiter) Wait(ctx context.Context) error { return l.Acquire(ctx, 1) }

// Do acquires one unit, then calls fn(ctx) and returns its error. If the
// acquisition fails, fn is not called and Do returns that error.
func (l *Limiter) Do(ctx context.Context, fn func(context.Context) error) error {
	if err := l.Acquire(ctx, 1); err != nil {
		return err
	}
	return fn(ctx)
}

// Acquire takes amount units, waiting until the bucket has room for them,
// and returns nil once it has. Callers are admitted in the order they
// called, whatever their amounts, so a large amount is never starved by a
// stream of small ones. An amount of 0 returns nil at once.
//
// Acquire returns an error, and takes nothing, if:
//   - ctx ends first: ctx.Err(). The callers behind move up as if this one
//     had never queued.
//   - ctx has a deadline at or before the time at which the queue as it
//     stands would admit the caller (the caller would get its units with no
//     time left to use them): at once, a *DeadlineError, which unwraps to
//     context.DeadlineExceeded and says how long the wait would have been.
//     A deadline even a nanosecond later waits, and is met unless SetRate
//     or Pause push the admission back.
//   - amount exceeds MaxRate (ErrExceedsCapacity), also when a SetRate
//     lowers the capacity below it while the caller waits, or amount is
//     negative, NaN or infinite (ErrInvalidAmount).
func (l *Limiter) Acquire(ctx context.Context, amount float64) error {
	if done := ctx.Done(); done != nil {
		select {
		case <-done:
			return ctx.Err()
		default:
		}
	}
	res, err := l.attempt(amount, true)
	if err != nil || res == admitted || amount == 0 {
		return err
	}
	return l.wait(ctx, amount)
}

// wait is Acquire's slow path: it admits amount under mu if no one waits
// and it fits, and otherwise queues the caller.
func (l *Limiter) wait(ctx context.Context, amount float64) error {
	p, now := l.lock()
	if err := checkAmount(amount, p.maxRate); err != nil {
		l.unlock()
		return err
	}
	ns, cost := now/p.scale, p.cost(amount)
	if l.q.empty() && ns >= p.blockNs {
		if tat := max(l.tat(p), now, p.floor) + cost; tat-now <= p.capacity {
			setTat(p, tat)
			l.unlock()
			return nil
		}
	}
	if deadline, ok := ctx.Deadline(); ok {
		wait := time.Duration(min(l.due(p, now, cost)-ns, math.MaxInt64))
		if remaining := deadline.Sub(p.epoch.Add(time.Duration(ns))); remaining <= wait {
			l.unlock()
			return &DeadlineError{Amount: amount, Wait: wait, Remaining: remaining}
		}
	}
	done := ctx.Done()
	l.q.nearAbove = p.capacity - p.scale // the same for every waiter at this rate
	seq, ch := l.q.push(amount, cost, done)
	if l.q.tailOK && l.q.tailP == p {
		l.q.tail.step(p, cost)
	}
	watch := l.q.join(ctx, seq)
	if l.q.live == 1 {
		l.process(p, now) // sets the timer
	}
	l.unlock()

	return awaitTurn(ctx, l, seq, ch, watch)
}

// withdraw takes the waiter seq, whose context has ended, out of the queue
// if it is still there, with its group, and admits whoever may then go.
func (l *Limiter) withdraw(ctx context.Context, seq uint64, ch chan error) {
	p, now := l.lock()
	if s := l.q.at(seq); s != nil && s.ch == ch {
		if s.w != nil {
			l.cancel(s.w, p, now)
		} else {
			l.q.leave(s, ctx.Err())
			l.process(p, now)
		}
	}
	l.unlock()
}

// due returns when, in nanoseconds since the epoch, a newcomer that costs
// cost would be admitted behind the queue as it stands, as process will
// admit it: each waiter in turn, on the first whole nanosecond at which it
// fits, and not before the blocks end. It returns math.MaxInt64 while a
// bucket left over-full for more than maxFullNs blocks: its end is
// further than that. It requires lock.
func (l *Limiter) due(p *params, now, cost int64) int64 {
	ns := now / p.scale
	if p.fullCut && ns < p.fullNs {
		return math.MaxInt64
	}
	q := &l.q
	if q.nearFull == 0 {
		// No waiter fills the bucket to within a nanosecond, so none finds
		// it empty: their costs add up.
		s := l.start(p, now)
		s.addTicks(p, q.costHi, q.costLo)
		return s.fit(p, cost)
	}
	// A waiter that fills the bucket leaves it empty until the whole
	// nanosecond it is admitted on: follow the queue, from where the last
	// call left off if it still holds.
	if !q.tailOK || q.tailP != p {
		q.tail, q.tailP, q.tailOK = l.start(p, now), p, true
		for w := range q.waiters() {
			q.tail.step(p, w.cost)
		}
	}
	return q.tail.fit(p, cost)
}

// start returns the bucket at the time from which the queue is admitted:
// now, or the end of the blocks. It requires lock.
func (l *Limiter) start(p *params, now int64) sim {
	ns := now / p.scale
	if ns >= p.blockNs {
		t := max(l.tat(p), p.floor, now)
		return sim{n: t / p.scale, r: t % p.scale, at: ns}
	}
	// From the end of the blocks, which may lie beyond what ticks count.
	t := max(satSub(l.tat(p), satMul(p.blockNs, p.scale)), p.floorOff, 0)
	return sim{n: satAdd(p.blockNs, t/p.scale), r: t % p.scale, at: p.blockNs}
}

// sim is a bucket as due follows the queue: its tat, as whole nanoseconds
// since the epoch and ticks past them, and the nanosecond on which the
// last waiter was admitted. Nanoseconds count far beyond ticks.
type sim struct{ n, r, at int64 }

// fit returns the first whole nanosecond, not before the last admission,
// at which cost fits: tat + cost - capacity <= at*scale.
func (s *sim) fit(p *params, cost int64) int64 {
	d := s.r + cost - p.capacity // above -2^60
	a := satAdd(s.n, floorDiv(d, p.scale))
	if d%p.scale != 0 {
		a = satAdd(a, 1)
	}
	return max(s.at, a)
}

// step admits a waiter that costs cost when it fits, as process does.
func (s *sim) step(p *params, cost int64) {
	s.at = s.fit(p, cost)
	if s.n < s.at {
		s.n, s.r = s.at, 0 // the bucket is empty then
	}
	s.addTicks(p, 0, uint64(cost))
}

// addTicks adds hi*2^64+lo ticks to the tat.
func (s *sim) addTicks(p *params, hi, lo uint64) {
	sc := uint64(p.scale)
	if hi >= sc {
		s.n = math.MaxInt64
		return
	}
	n, r := bits.Div64(hi, lo, sc)
	s.r += int64(r)
	if n > math.MaxInt64 {
		s.n = math.MaxInt64
		return
	}
	s.n = satAdd(s.n, satAdd(int64(n), s.r/p.scale))
	s.r %= p.scale
}

// ceilDivSigned returns a/b rounded up, for b > 0.
func ceilDivSigned(a, b int64) int64 { return -floorDiv(-a, b) }

// floorDiv returns a/b rounded down, for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// satAdd returns a+b, saturating; satSub returns a-b, saturating; satMul
// returns a*b for b > 0, saturating.
func satAdd(a, b int64) int64 {
	c := a + b
	if (c > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return c
}

func satSub(a, b int64) int64 {
	if b == math.MinInt64 {
		return satAdd(satAdd(a, math.MaxInt64), 1)
	}
	return satAdd(a, -b)
}

func satMul(a, b int64) int64 {
	switch {
	case a > math.MaxInt64/b:
		return math.MaxInt64
	case a < math.MinInt64/b:
		return math.MinInt64
	}
	return a * b
}

// SetRate changes the capacity and the period, at once and for the callers
// already waiting too. The units in the bucket stay there and drain at the
// new rate from now on; a bucket left above the new capacity just drains
// before admitting again. A Pause in progress keeps its end, and ends as
// a pause does at the new rate: one unit fits, then the steady rate.
// Waiters whose amount exceeds the new capacity return ErrExceedsCapacity
// at once, wherever they stand in the queue. SetRate panics on the values
// New refuses, and then changes nothing.
func (l *Limiter) SetRate(maxRate float64, period time.Duration) {
	r := newRate("SetRate", maxRate, period)
	p, now := l.lock()
	ns := now / p.scale
	// The epoch moves to now, in the new ticks. The units in the bucket
	// keep their number; a pause is time, and keeps its end.
	var tat int64
	var over float64
	if ns < p.fullNs {
		tat, over = overfull(p.overAt(ns), &r)
	} else {
		rem := max(l.tat(p), now, p.endedFloor(ns)) - now
		limit := r.capacity + spanTicks
		if tat = convert(rem, &p.rate, &r, limit); tat >= limit {
			tat, over = overfull(float64(rem)/p.unit, &r)
		}
	}
	np := newParams(r, p.epoch.Add(time.Duration(ns)), tat, max(p.pauseNs-ns, 0), 0, over)
	l.cur.Store(np)
	l.seen.Store(0)
	l.reprice(&np.rate)
	l.process(np, 0)
	l.unlock()
}

// overfull returns the state of a bucket holding units at rate r: a tat,
// or, for a level that would take longer to drain than ticks can count,
// the units, for newParams.
func overfull(units float64, r *rate) (tat int64, over float64) {
	units *= 1 + 0x1p-50 // the units come rounded: count a little more
	if x := units * r.unit; x < float64(r.capacity+spanTicks) {
		return ceilProduct(units, r.unit), 0
	}
	return 0, units
}

// reprice charges the waiters at rate r, and fails at once those whose
// amount exceeds its capacity, wherever they stand in the queue. It
// requires lock.
func (l *Limiter) reprice(r *rate) {
	q := &l.q
	for i := 0; i < q.n; i++ { // leave may empty the queue
		s := &q.buf[(q.head+i)%len(q.buf)]
		if s.ch == nil {
			continue
		}
		if err := checkAmount(s.amount, r.maxRate); err != nil {
			gone, seq := *s, q.headSeq+uint64(i)
			q.leave(s, err)
			l.q.left(l, gone, seq)
		}
	}
	q.costHi, q.costLo, q.nearFull, q.tailOK = 0, 0, 0, false
	q.nearAbove = r.capacity - r.scale
	for i := range q.n {
		if s := &q.buf[(q.head+i)%len(q.buf)]; s.ch != nil {
			s.cost = r.cost(s.amount)
			q.add(s)
		}
	}
}

// Pause admits nothing for d, not even a fraction of a unit; at d one unit
// fits (or the whole capacity, if that is less), then admissions go on at
// the steady rate, with no burst. It is what a client does on a 429
// response with Retry-After: New(1, time.Minute) paused for 2 s admits the
// next request at 2 s, and the one after at 62 s. Pause never lowers the
// level: a bucket fuller than that at d stays so (the request that got the
// 429 took its unit, so on that limiter the next one still waits its
// minute), and a pause never shortens one in progress. Waiters keep their
// places. Pause with d <= 0 does nothing; pauses longer than about 417 days
// are cut to that.
func (l *Limiter) Pause(d time.Duration) {
	if d <= 0 {
		return
	}
	p, now := l.lock()
	ns := now / p.scale
	if until := ns + int64(min(d, maxPeriod)); until > p.pauseNs {
		// Blocks that have ended leave their floor in the tat.
		tat, fullNs := max(l.tat(p), p.endedFloor(ns)), p.fullNs
		if fullNs <= ns {
			fullNs = 0
		}
		np := newParams(p.rate, p.epoch, tat, until, fullNs, p.overUnits)
		np.fullCut = fullNs > 0 && p.fullCut
		l.cur.Store(np)
		p = np
	}
	l.process(p, now)
	l.unlock()
}

// lock takes mu and freezes the state word, moving the epoch if the clock
// has gone far past it or back before the time mu was last taken. It
// returns the params and the time now, in ticks.
func (l *Limiter) lock() (*params, int64) {
	l.mu.Lock()
	p := l.cur.Load()
	for {
		w := p.state.Load()
		if p.state.CompareAndSwap(w, w|frozenBit) {
			break
		}
	}
	_, now, ok := p.now(l.clock)
	if !ok || now < l.seen.Load() {
		p, now = l.rebase(p), 0
	}
	l.seen.Store(now)
	return p, now
}

// rebase moves the epoch to the time now, for a clock that has gone far
// past the epoch, or back before the time mu was last taken, and returns
// the new params. It requires lock.
//
// On a clock that went back, the bucket and any pause are taken as they
// were when last seen under mu; if a fast path admitted something since,
// the bucket was at most full then. So the limiter may get stricter by
// the time that has passed since, never looser.
func (l *Limiter) rebase(p *params) *params {
	d := int64(l.clock.Since(p.epoch))
	epoch := l.clock.Now()
	tat, seen := l.tat(p), l.seen.Load()
	var shift, shiftNs int64 // in ticks, and in nanoseconds for the blocks
	switch {
	case d >= 0 && satMul(d, p.scale) >= seen:
		shift, shiftNs = satMul(d, p.scale), d
	case tat == l.seenTat:
		shift = seen
	default:
		shift = max(tat-p.capacity, seen)
	}
	if shiftNs == 0 {
		shiftNs = shift / p.scale // rounded down: blocks end no sooner
	}
	// Blocks that have ended by then leave their floor in the tat,
	// counted from the new epoch: the old epoch may lie further back than
	// ticks count.
	tat = max(satSub(tat, shift), 0)
	if p.pauseNs > 0 && p.pauseNs <= shiftNs {
		tat = max(tat, satAdd(satMul(p.pauseNs-shiftNs, p.scale), p.capacity-p.oneDown))
	}
	if p.fullNs > 0 && p.fullNs <= shiftNs {
		tat = max(tat, satAdd(satMul(p.fullNs-shiftNs, p.scale), p.capacity))
	}
	fullNs := max(p.fullNs-shiftNs, 0)
	if p.fullCut {
		fullNs = 0 // work it out again, from the units
	}
	np := newParams(p.rate, epoch, tat, max(p.pauseNs-shiftNs, 0), fullNs, p.overAt(shiftNs))
	l.cur.Store(np)
	// The timer was set on the old epoch: set it again.
	l.armed = false
	l.seen.Store(0)
	l.process(np, 0)
	return np
}

// unlock thaws the state word, marking whether callers wait, and releases mu.
func (l *Limiter) unlock() {
	p := l.cur.Load()
	w := p.state.Load() &^ (frozenBit | waitingBit)
	if !l.q.empty() {
		w |= waitingBit
	}
	l.seenTat = tatOf(w)
	p.state.Store(w)
	l.mu.Unlock()
}

// tat returns the tat of p's state; setTat replaces it. Both require lock.
func (l *Limiter) tat(p *params) int64 { return tatOf(p.state.Load()) }

func setTat(p *params, tat int64) {
	w := p.state.Load()
	p.state.Store(pack(tat) | w&(frozenBit|waitingBit))
}

// process admits the waiters at the front of the queue that fit now, fails
// those that exceed the capacity, and sets the timer for the next one. It
// requires lock.
func (l *Limiter) process(p *params, now int64) {
	ns := now / p.scale
	for {
		s, seq := l.q.front()
		if s == nil {
			// The timer goes with the last waiter: a limiter nobody waits
			// on holds none, and the next waiter makes its own, in
			// whatever synctest bubble it runs.
			if l.timer != nil {
				l.timer.Stop()
				l.timer = nil
			}
			l.armed = false
			return
		}
		if err := checkAmount(s.amount, p.maxRate); err != nil {
			l.q.left(l, l.q.pop(err), seq)
			continue
		}
		if ns < p.blockNs {
			l.arm(p, ns, p.blockNs)
			return
		}
		t := max(l.tat(p), p.floor)
		fits := ceilDivSigned(t+s.cost-p.capacity, p.scale) // the nanosecond it fits on
		if fits > ns {
			l.arm(p, ns, fits)
			return
		}
		if t < now && ns > max(fits, p.blockNs) {
			l.q.tailOK = false // admitted late, into an empty bucket
		}
		setTat(p, max(t, now)+s.cost)
		l.q.left(l, l.q.pop(nil), seq)
	}
}

// arm sets the timer to run process at due, in nanoseconds since the
// epoch. It requires lock.
func (l *Limiter) arm(p *params, ns, due int64) {
	at := p.epoch.Add(time.Duration(due))
	if l.armed && at.Equal(l.timerAt) {
		return
	}
	d := time.Duration(due - ns)
	if l.timer == nil {
		l.timer = l.clock.AfterFunc(d, l.fire)
	} else {
		l.timer.Reset(d)
	}
	l.armed, l.timerAt = true, at
}

// cancel hands ctx's error to every member of w still waiting, and admits
// whoever may then go. It requires lock.
func (l *Limiter) cancel(w *watcher, p *params, now int64) {
	l.q.cancel(w)
	l.process(p, now)
}

// cancelGroup cancels w's group when its context ends after its owner left.
func (l *Limiter) cancelGroup(w *watcher) {
	p, now := l.lock()
	l.cancel(w, p, now)
	l.unlock()
}

// fire is the timer's function.
func (l *Limiter) fire() {
	p, now := l.lock()
	l.armed = false
	l.process(p, now)
	l.unlock()
}
