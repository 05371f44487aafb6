package ratelimit

import (
	"context"
	"fmt"
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
	params atomic.Pointer[params]
	clock  clock.Clock
	_      [cacheLine - 24]byte

	// state is the bucket: when it will be empty, in nanoseconds since
	// params.epoch, with flag bits (see the state word constants). The fast
	// paths read and move it with one compare-and-swap. It has a cache line
	// of its own, so that the compare-and-swaps of other cores do not evict
	// params and clock, which every call reads.
	state atomic.Uint64
	_     [cacheLine - 8]byte

	// mu guards q and the timer fields; its holder freezes state.
	mu      sync.Mutex
	q       queue // waiters; their groups by context are in watch.go
	timer   *clock.Timer
	armed   bool      // timer is set to fire at timerAt
	timerAt time.Time // when the front waiter becomes due
}

const cacheLine = 64

// The state word: bit 0 says the word is frozen by the holder of mu, who
// may change it with plain stores (fast paths must take mu instead); bit 1
// says callers are queued, so that no one may pass them; the next genBits
// bits are the generation of the params the word belongs to (so that a fast
// path never combines a word with the params of another generation); the
// rest is the time at which the bucket will be empty, in nanoseconds since
// params.epoch, which the level is measured from: level = (tat-now)/nsPerUnit.
const (
	frozenBit  = 1 << 0
	waitingBit = 1 << 1
	genShift   = 2
	genBits    = 4
	genMask    = 1<<genBits - 1
	tatShift   = genShift + genBits
)

// The tat field holds 58 bits. The epoch moves forward once the clock is
// rebaseAfter past it; periods and pauses are at most maxPeriod, so that a
// tat stays below rebaseAfter + 2*maxPeriod = 2^57.
const (
	maxPeriod   = time.Duration(1) << 55 // about 417 days
	rebaseAfter = int64(1) << 56
	maxSpan     = 2 * int64(maxPeriod)
)

func tatOf(w uint64) int64  { return int64(w >> tatShift) }
func genOf(w uint64) uint64 { return (w >> genShift) & genMask }
func pack(tat int64, gen uint64) uint64 {
	return uint64(tat)<<tatShift | gen<<genShift
}

// params is one generation of a limiter's settings. It is immutable: SetRate
// and epoch moves publish a new one.
type params struct {
	maxRate   float64
	period    time.Duration
	nsPerUnit float64   // period / maxRate
	epoch     time.Time // time 0 of the tat in the state word
	gen       uint64
}

func newParams(fn string, maxRate float64, period time.Duration) *params {
	if !(maxRate > 0) || math.IsInf(maxRate, 1) {
		panic(fmt.Sprintf("ratelimit: %s: maxRate %v must be a finite number > 0", fn, maxRate))
	}
	if period <= 0 || period > maxPeriod {
		panic(fmt.Sprintf("ratelimit: %s: period %v must be > 0 and at most %v", fn, period, maxPeriod))
	}
	return &params{maxRate: maxRate, period: period, nsPerUnit: float64(period) / maxRate}
}

// cost returns how far amount moves the tat, in nanoseconds, rounded down:
// at most one nanosecond per acquisition is given away, so that a burst of
// MaxRate units always fits in the bucket. An amount at or above the
// capacity costs the whole period.
func (p *params) cost(amount float64) int64 {
	c := amount * p.nsPerUnit
	if !(c < float64(p.period)) {
		return int64(p.period)
	}
	return int64(c)
}

// sinceEpoch returns the time now in nanoseconds since the epoch, and false
// once the epoch must move. A clock that went back before the epoch reads as
// the epoch. It asks c for Since rather than Now: on the real clock, that
// reads only the monotonic clock, which costs half as much.
func (p *params) sinceEpoch(c clock.Clock) (int64, bool) {
	d := int64(c.Since(p.epoch))
	return max(d, 0), d < rebaseAfter
}

// New returns a limiter that admits at most maxRate units per period, in
// bursts of up to maxRate. It starts empty, so the first maxRate units pass
// at once. New(4, 8*time.Second) admits 4 at once, then one every 2 seconds;
// New(1, 1500*time.Millisecond) admits one every 1.5 seconds, with no burst.
//
// New panics if maxRate is not a finite number > 0, or if period is not > 0
// (or exceeds about 417 days), as time.NewTicker does for bad intervals.
func New(maxRate float64, period time.Duration, opts ...Option) *Limiter {
	p := newParams("New", maxRate, period)
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.clock == nil {
		o.clock = clock.New()
	}
	p.epoch = o.clock.Now()
	l := &Limiter{clock: o.clock}
	l.params.Store(p)
	return l
}

// MaxRate returns the bucket's capacity: the most that can be acquired in
// one burst, and the number of units admitted per Period.
func (l *Limiter) MaxRate() float64 { return l.params.Load().maxRate }

// Period returns the time in which MaxRate units drain from a full bucket.
func (l *Limiter) Period() time.Duration { return l.params.Load().period }

// Level returns how full the bucket is now, in units: 0 when empty, MaxRate
// when full. It can exceed MaxRate after Pause, or after SetRate lowered the
// capacity. Units that callers wait for are not in the bucket yet.
func (l *Limiter) Level() float64 {
	for {
		w := l.state.Load()
		p := l.params.Load()
		if genOf(w) != p.gen {
			continue
		}
		now, _ := p.sinceEpoch(l.clock)
		return float64(max(tatOf(w)-now, 0)) / p.nsPerUnit
	}
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
	p := l.params.Load()
	if err := checkAmount(amount, p.maxRate); err != nil {
		return refused, err
	}
	now, ok := p.sinceEpoch(l.clock)
	if !ok {
		return locked, nil
	}
	cost := p.cost(amount)
	for {
		w := l.state.Load()
		if w&waitingBit != 0 {
			return refused, nil
		}
		if w&frozenBit != 0 {
			return locked, nil
		}
		if genOf(w) != p.gen {
			return locked, nil // SetRate is publishing new params: let it finish
		}
		tat := max(tatOf(w), now) + cost
		if tat-now > int64(p.period) {
			return refused, nil
		}
		if !take || l.state.CompareAndSwap(w, pack(tat, p.gen)) {
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
	if checkAmount(amount, p.maxRate) != nil || !l.q.empty() {
		return false
	}
	tat := max(l.tat(), now) + p.cost(amount)
	if tat-now > int64(p.period) {
		return false
	}
	if take {
		l.setTat(tat)
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
//   - ctx has a deadline before the time at which the queue as it stands
//     would admit the caller: at once, an error that unwraps to
//     context.DeadlineExceeded.
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
	tat := max(l.tat(), now)
	if l.q.empty() {
		if t := tat + p.cost(amount); t-now <= int64(p.period) {
			l.setTat(t)
			l.unlock()
			return nil
		}
	}
	// The queue ahead drains in order, so the caller is due when the bucket
	// has room for everything queued, plus amount.
	due := float64(tat-now) + (l.q.sum+amount)*p.nsPerUnit - float64(p.period)
	if deadline, ok := ctx.Deadline(); ok {
		if remaining := deadline.Sub(p.epoch.Add(time.Duration(now))); float64(remaining) < due {
			l.unlock()
			return &DeadlineError{Amount: amount, Wait: durationOf(due), Remaining: remaining}
		}
	}
	done := ctx.Done()
	seq, ch := l.q.push(amount, done)
	watch := l.join(ctx, seq)
	if l.q.live == 1 {
		l.arm(p, now, tat+p.cost(amount)-int64(p.period))
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

// durationOf converts nanoseconds to a Duration, saturating.
func durationOf(ns float64) time.Duration {
	if ns >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(ns)
}

// SetRate changes the capacity and the period, at once and for the callers
// already waiting too. The units in the bucket stay there and drain at the
// new rate from now on; a bucket left above the new capacity just drains
// before admitting again. Waiters whose amount exceeds the new capacity
// return ErrExceedsCapacity. SetRate panics on the values New refuses.
func (l *Limiter) SetRate(maxRate float64, period time.Duration) {
	np := newParams("SetRate", maxRate, period)
	p, now := l.lock()
	level := float64(max(l.tat()-now, 0)) / p.nsPerUnit
	np.epoch, np.gen = p.epoch, (p.gen+1)&genMask
	l.params.Store(np)
	l.state.Store(pack(now+span(level*np.nsPerUnit), np.gen) | frozenBit)
	l.process(np, now)
	l.unlock()
}

// span rounds a length of time in nanoseconds into the range a tat allows.
func span(ns float64) int64 {
	if !(ns > 0) {
		return 0
	}
	return int64(min(ns+0.5, float64(maxSpan)))
}

// Pause admits nothing for d: it raises the level to MaxRate plus what
// drains in d (it never lowers it), so admissions resume after d at the
// steady rate, with no burst. It is what a client does on a 429 response
// with Retry-After. Waiters keep their places. Pause with d <= 0 does
// nothing; pauses longer than about 417 days are cut to that.
func (l *Limiter) Pause(d time.Duration) {
	if d <= 0 {
		return
	}
	d = min(d, maxPeriod)
	p, now := l.lock()
	if t := now + int64(p.period) + int64(d); t > l.tat() {
		l.setTat(t)
	}
	l.process(p, now)
	l.unlock()
}

// lock takes mu and freezes the state word, moving the epoch forward if the
// clock has gone far past it. It returns the params and the time now.
func (l *Limiter) lock() (*params, int64) {
	l.mu.Lock()
	for {
		w := l.state.Load()
		if l.state.CompareAndSwap(w, w|frozenBit) {
			break
		}
	}
	p := l.params.Load()
	now, ok := p.sinceEpoch(l.clock)
	if !ok {
		np := *p
		np.epoch = p.epoch.Add(time.Duration(now))
		np.gen = (p.gen + 1) & genMask
		tat := max(l.tat()-now, 0)
		p, now = &np, 0
		l.params.Store(p)
		l.state.Store(pack(tat, p.gen) | frozenBit)
	}
	return p, now
}

// unlock thaws the state word, marking whether callers wait, and releases mu.
func (l *Limiter) unlock() {
	w := l.state.Load() &^ (frozenBit | waitingBit)
	if !l.q.empty() {
		w |= waitingBit
	}
	l.state.Store(w)
	l.mu.Unlock()
}

// tat returns the state's tat; setTat replaces it. Both require lock.
func (l *Limiter) tat() int64 { return tatOf(l.state.Load()) }

func (l *Limiter) setTat(tat int64) {
	w := l.state.Load()
	l.state.Store(pack(tat, genOf(w)) | w&(frozenBit|waitingBit))
}

// process admits the waiters at the front of the queue that fit now, fails
// those that exceed the capacity, and sets the timer for the next one. It
// requires lock.
func (l *Limiter) process(p *params, now int64) {
	for {
		s, seq := l.q.front()
		if s == nil {
			// Stop even if not armed: a callback that ran late may have
			// cleared armed while a later Reset is pending.
			if l.timer != nil {
				l.timer.Stop()
			}
			l.armed = false
			return
		}
		if err := checkAmount(s.amount, p.maxRate); err != nil {
			l.left(l.q.pop(err), seq)
			continue
		}
		tat := max(l.tat(), now) + p.cost(s.amount)
		if tat-now > int64(p.period) {
			l.arm(p, now, tat-int64(p.period))
			return
		}
		l.setTat(tat)
		l.left(l.q.pop(nil), seq)
	}
}

// arm sets the timer to run process at due, in nanoseconds since the epoch.
// It requires lock.
func (l *Limiter) arm(p *params, now, due int64) {
	at := p.epoch.Add(time.Duration(due))
	if l.armed && at.Equal(l.timerAt) {
		return
	}
	d := time.Duration(due - now)
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
