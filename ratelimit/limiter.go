package ratelimit

import (
	"context"
	"math"
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
	until int64     // ticks since the epoch before which nothing is admitted
	_     [cacheLine]byte

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

// newParams returns params for r from epoch on, with their bucket empty
// at tat and nothing admitted before until, frozen.
func newParams(r rate, epoch time.Time, tat, until int64) *params {
	p := &params{rate: r, epoch: epoch, until: until}
	p.state.Store(pack(tat) | frozenBit)
	return p
}

// now returns the time now in ticks since the epoch, and false if the
// epoch must move first: the clock went back before it, or far past it.
// It asks c for Since rather than Now: on the real clock, that reads only
// the monotonic clock, which costs half as much.
func (p *params) now(c clock.Clock) (int64, bool) {
	d := int64(c.Since(p.epoch))
	if d < 0 || d >= p.rebaseAfter {
		return 0, false
	}
	return d * p.scale, true
}

// nanos returns a time in ticks since the epoch in whole nanoseconds,
// rounded up: a timer set then does not fire before it.
func (p *params) nanos(ticks int64) time.Duration { return time.Duration(ceilDiv(ticks, p.scale)) }

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
	p := newParams(r, o.clock.Now(), 0, 0)
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
	now, ok := p.now(l.clock)
	if !ok {
		p, now = l.lock()
		w = p.state.Load()
		l.unlock()
	}
	return float64(max(tatOf(w)-now, 0)) / p.unit
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
	now, ok := p.now(l.clock)
	if !ok || now < l.seen.Load() {
		return locked, nil
	}
	if now < p.until {
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
		tat := max(tatOf(w), now) + cost
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
	if checkAmount(amount, p.maxRate) != nil || !l.q.empty() || now < p.until {
		return false
	}
	tat := max(l.tat(p), now) + p.cost(amount)
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
	cost := p.cost(amount)
	tat := max(l.tat(p), now)
	if l.q.empty() && now >= p.until && tat+cost-now <= p.capacity {
		setTat(p, tat+cost)
		l.unlock()
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok {
		// The queue ahead drains in order, so the caller is due when the
		// bucket has room for everything queued, plus amount.
		due := max(satAdd(tat+cost-p.capacity, l.q.queuedCost()), p.until, now)
		wait := p.nanos(due) - p.nanos(now)
		if remaining := deadline.Sub(p.epoch.Add(p.nanos(now))); remaining <= wait {
			l.unlock()
			return &DeadlineError{Amount: amount, Wait: wait, Remaining: remaining}
		}
	}
	done := ctx.Done()
	seq, ch := l.q.push(amount, cost, done)
	watch := l.join(ctx, seq)
	if l.q.live == 1 {
		l.arm(p, now, max(tat+cost-p.capacity, p.until))
	}
	l.unlock()

	if !watch {
		return <-ch
	}
	select {
	case err := <-ch:
		return err
	case <-done:
	}
	p, now = l.lock()
	if s := l.q.at(seq); s != nil && s.ch == ch {
		if s.w != nil {
			l.cancel(s.w, p, now)
		} else {
			l.q.leave(s, ctx.Err())
			l.process(p, now)
		}
	}
	l.unlock()
	return <-ch // the cancellation, or a result that came first
}

// satAdd returns a+b for b >= 0, saturating.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// SetRate changes the capacity and the period, at once and for the callers
// already waiting too. The units in the bucket stay there and drain at the
// new rate from now on; a bucket left above the new capacity just drains
// before admitting again. A Pause in progress goes on as it was. Waiters
// whose amount exceeds the new capacity return ErrExceedsCapacity at once,
// wherever they stand in the queue. SetRate panics on the values New
// refuses, and then changes nothing.
func (l *Limiter) SetRate(maxRate float64, period time.Duration) {
	r := newRate("SetRate", maxRate, period)
	p, now := l.lock()
	// The epoch moves to now, in the new ticks. The units in the bucket
	// keep their number; a pause is time, and keeps its length.
	tat := convert(l.tat(p)-now, &p.rate, &r, r.capacity+pauseTicks)
	var until int64
	if p.until > now {
		until = min(int64(p.nanos(p.until-now)), int64(r.maxPause)) * r.scale
	}
	np := newParams(r, p.epoch.Add(p.nanos(now)), tat, until)
	l.cur.Store(np)
	l.seen.Store(0)
	l.reprice(&np.rate)
	l.process(np, 0)
	l.unlock()
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
			l.left(gone, seq)
		}
	}
	q.costHi, q.costLo = 0, 0
	for i := range q.n {
		if s := &q.buf[(q.head+i)%len(q.buf)]; s.ch != nil {
			s.cost = r.cost(s.amount)
			q.addCost(s.cost)
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
// are cut to that (to about 6 days, for the rare rates whose unit is not a
// whole number of nanoseconds).
func (l *Limiter) Pause(d time.Duration) {
	if d <= 0 {
		return
	}
	p, now := l.lock()
	until := now + int64(min(d, p.maxPause))*p.scale
	setTat(p, max(l.tat(p), until+p.capacity-p.cost(min(1, p.maxRate))))
	if until > p.until {
		np := newParams(p.rate, p.epoch, l.tat(p), until)
		l.cur.Store(np)
		p = np
	}
	l.process(p, now)
	l.unlock()
}

// lock takes mu and freezes the state word, moving the epoch if the clock
// has gone far past it or back before it. It returns the params and the
// time now.
func (l *Limiter) lock() (*params, int64) {
	l.mu.Lock()
	p := l.cur.Load()
	for {
		w := p.state.Load()
		if p.state.CompareAndSwap(w, w|frozenBit) {
			break
		}
	}
	now, ok := p.now(l.clock)
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
	tat, seen := l.tat(p), l.seen.Load()
	var shift int64
	switch {
	case d > math.MaxInt64/p.scale:
		shift = math.MaxInt64
	case d >= 0 && d*p.scale >= seen:
		shift = d * p.scale
	case tat == l.seenTat:
		shift = seen
	default:
		shift = max(tat-p.capacity, seen)
	}
	np := newParams(p.rate, p.epoch.Add(time.Duration(d)), max(tat-shift, 0), max(p.until-shift, 0))
	l.cur.Store(np)
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
			l.left(l.q.pop(err), seq)
			continue
		}
		if now < p.until {
			l.arm(p, now, p.until)
			return
		}
		tat := max(l.tat(p), now) + s.cost
		if tat-now > p.capacity {
			l.arm(p, now, tat-p.capacity)
			return
		}
		setTat(p, tat)
		l.left(l.q.pop(nil), seq)
	}
}

// arm sets the timer to run process at due, in ticks since the epoch. It
// requires lock.
func (l *Limiter) arm(p *params, now, due int64) {
	at := p.epoch.Add(p.nanos(due))
	if l.armed && at.Equal(l.timerAt) {
		return
	}
	d := p.nanos(due) - p.nanos(now)
	if l.timer == nil {
		l.timer = l.clock.AfterFunc(d, l.fire)
	} else {
		l.timer.Reset(d)
	}
	l.armed, l.timerAt = true, at
}

// fire is the timer's function.
func (l *Limiter) fire() {
	p, now := l.lock()
	l.armed = false
	l.process(p, now)
	l.unlock()
}
