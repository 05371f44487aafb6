package ratelimit

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
)

var _ Acquirer = (*Window)(nil)

// A Window admits at most MaxRate units in any window of time of length
// Period: what an API means by "100 requests per 60 seconds". An
// acquisition of amount units at time t is admitted when the units
// admitted in (t-Period, t], plus amount, are at most MaxRate; each
// admission frees its units exactly Period after it was admitted. See the
// package documentation for how it differs from a Limiter.
//
// The Window keeps a log of the admissions still in the window: by
// default one entry per admission (admissions on the same nanosecond
// share one), so at most one entry per admission of the last Period, 16
// bytes each, in a ring at most a quarter larger than the most entries of
// the last two periods need; WithResolution bounds it by Period/r+1
// entries.
//
// A Window is safe for concurrent use. It holds no goroutine, and it holds
// a timer only while callers are waiting, so a Window nobody uses costs
// nothing and needs no Close. Its waiting guarantees are those of a
// Limiter: strict FIFO, lossless cancellation, deadlines that cannot be met
// fail at once with a *DeadlineError.
type Window struct {
	clock clock.Clock
	mu    sync.Mutex

	wrate           // the settings in force
	res   int64     // the resolution, in nanoseconds: 0 for exact
	epoch time.Time // time 0 of the window's nanoseconds
	seen  int64     // the latest time read, in nanoseconds since epoch
	pause int64     // nothing is admitted before this time (0: none)
	log   windowLog // the admissions still in the window, oldest first
	sim   windowSim // the queue's admissions as due foresees them
	q     queue     // waiters; q.tailOK says sim holds
	timer *clock.Timer
	armed bool  // timer is set to fire at armAt
	armAt int64 // the time the timer was last set for (-1: none)
}

// wrate is a Window's setting. Amounts are counted in quanta of 2^-shift
// units, rounded up: the capacity, MaxRate units, is a whole number of
// quanta just below 2^62, so that whole amounts (and amounts with few
// binary digits after the point) are counted exactly.
type wrate struct {
	maxRate  float64
	period   time.Duration
	shift    int    // quanta per unit: 2^shift
	capacity uint64 // maxRate in quanta, exactly
}

func newWRate(fn string, maxRate float64, period time.Duration) wrate {
	newRate(fn, maxRate, period) // panics on the values New refuses
	_, e := math.Frexp(maxRate)
	shift := 62 - e
	return wrate{maxRate: maxRate, period: period, shift: shift, capacity: uint64(math.Ldexp(maxRate, shift))}
}

// quanta returns amount in quanta, rounded up; amount is at most maxRate,
// so at most the capacity. A positive amount is at least one quantum.
func (r *wrate) quanta(amount float64) uint64 {
	if amount >= r.maxRate {
		return r.capacity
	}
	q := uint64(math.Ceil(math.Ldexp(amount, r.shift)))
	if q == 0 && amount > 0 {
		q = 1
	}
	return q
}

// A WindowOption configures a Window in NewWindow: WithResolution, or any
// Option, such as WithClock.
type WindowOption interface {
	applyWindow(*windowOptions)
}

type windowOptions struct {
	options
	resolution time.Duration
}

func (o Option) applyWindow(wo *windowOptions) {
	if o != nil {
		o(&wo.options)
	}
}

type resolution time.Duration

func (r resolution) applyWindow(wo *windowOptions) { wo.resolution = time.Duration(r) }

// WithResolution makes a Window merge the admissions that fall within r
// of the first admission of an entry into that entry, stamped with the
// latest of their times. The log then holds at most Period/r+1 entries,
// however many admissions there are, and the rule stays exact: no window
// of length Period ever holds more than MaxRate units; an admission may
// be freed, and so a later one admitted, up to r late. A resolution of 0,
// the default, merges only admissions on the same nanosecond. NewWindow
// panics on a negative r.
func WithResolution(r time.Duration) WindowOption { return resolution(r) }

// NewWindow returns a Window that admits at most maxRate units in any
// window of time of length period. It starts empty, so the first maxRate
// units pass at once; each admission frees its units period after it was
// admitted. NewWindow(4, 8*time.Second) admits 4 at once, then nothing
// until the first of them leaves the window 8 s later, when the next 4
// pass.
//
// NewWindow panics on the values New refuses, and on a negative
// resolution.
func NewWindow(maxRate float64, period time.Duration, opts ...WindowOption) *Window {
	r := newWRate("NewWindow", maxRate, period)
	var o windowOptions
	for _, opt := range opts {
		if opt != nil {
			opt.applyWindow(&o)
		}
	}
	if o.resolution < 0 {
		panic(fmt.Sprintf("ratelimit: NewWindow: resolution %v must be >= 0", o.resolution))
	}
	if o.clock == nil {
		o.clock = clock.New()
	}
	w := &Window{clock: o.clock, wrate: r, res: int64(o.resolution), epoch: o.clock.Now(), armAt: -1}
	w.log.setShift(r.shift)
	w.q.nearAbove = math.MaxInt64
	return w
}

// MaxRate returns the most units admitted in any window of length Period.
func (w *Window) MaxRate() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxRate
}

// Period returns the length of the window.
func (w *Window) Period() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.period
}

// Level returns the units admitted in the window that ends now, (now -
// Period, now]: 0 when none, MaxRate when full. A Pause does not change
// it. It can exceed MaxRate after SetRate lowered it.
func (w *Window) Level() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log.expire(w.now(), int64(w.period))
	return w.log.level()
}

// Waiting returns the number of callers queued in Acquire.
func (w *Window) Waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.q.live
}

// now returns the time now, in nanoseconds since the epoch, which never
// goes back: if the clock moves backwards (a synctest bubble starts at its
// own time, a clock.Mock is set back), the window's time stands still
// until the clock has caught up with where it was; if it jumps far ahead,
// the epoch moves. It requires mu.
func (w *Window) now() int64 {
	d := int64(w.clock.Since(w.epoch))
	if d < w.seen {
		// Carry on from seen: admissions stay in the window at least as
		// long as they would have, never less.
		w.epoch = w.clock.Now().Add(-time.Duration(w.seen))
		w.rearm()
		return w.seen
	}
	if d >= 1<<61 {
		w.rebase(d)
		return 0
	}
	w.seen = d
	return d
}

// rebase moves the epoch to now, d nanoseconds after it, and the times the
// window holds with it. It requires mu.
func (w *Window) rebase(d int64) {
	w.epoch = w.clock.Now()
	w.log.shiftTimes(d)
	w.pause = max(satSub(w.pause, d), 0)
	w.q.tailOK = false
	w.seen = 0
	w.rearm()
}

// rearm sets the timer again, if it is set: it was set on a clock
// reading that no longer holds. It requires mu.
func (w *Window) rearm() {
	if w.armed {
		w.armed, w.armAt = false, -1
		w.process(w.seen)
	}
}

// TryAcquire takes amount units if the window has room for them now,
// without waiting, and reports whether it did. It reports false, and takes
// nothing, while other callers wait in Acquire (they come first), during a
// Pause, and for an amount that Acquire would refuse with an error. An
// amount of 0 always succeeds.
func (w *Window) TryAcquire(amount float64) bool { return w.check(amount, true) }

// HasCapacity reports whether TryAcquire(amount) would succeed now, without
// taking anything.
func (w *Window) HasCapacity(amount float64) bool { return w.check(amount, false) }

func (w *Window) check(amount float64, take bool) bool {
	if amount == 0 {
		return true
	}
	w.mu.Lock()
	ok := checkAmount(amount, w.maxRate) == nil && w.q.empty() && w.admit(w.now(), w.quanta(amount), take)
	w.mu.Unlock()
	return ok
}

// admit reports whether q quanta fit at now, with no one waiting, and
// takes them if take is set. It requires mu.
func (w *Window) admit(now int64, q uint64, take bool) bool {
	if now < w.pause {
		return false
	}
	w.log.expire(now, int64(w.period))
	if !w.log.fits(q, w.capacity) {
		return false
	}
	if take {
		w.log.record(now, q, w.res)
	}
	return true
}

// Wait is shorthand for Acquire(ctx, 1).
func (w *Window) Wait(ctx context.Context) error { return w.Acquire(ctx, 1) }

// Do acquires one unit, then calls fn(ctx) and returns its error. If the
// acquisition fails, fn is not called and Do returns that error.
func (w *Window) Do(ctx context.Context, fn func(context.Context) error) error {
	if err := w.Acquire(ctx, 1); err != nil {
		return err
	}
	return fn(ctx)
}

// Acquire takes amount units, waiting until the window has room for them,
// and returns nil once it has. Callers are admitted in the order they
// called, whatever their amounts, each at the first time at which the
// window has room for it. An amount of 0 returns nil at once.
//
// Acquire returns an error, and takes nothing, if:
//   - ctx ends first: ctx.Err(). The callers behind move up as if this one
//     had never queued.
//   - ctx has a deadline at or before the time at which the queue as it
//     stands would admit the caller: at once, a *DeadlineError, which
//     unwraps to context.DeadlineExceeded and says how long the wait would
//     have been. A deadline even a nanosecond later waits, and is met
//     unless SetRate or Pause push the admission back.
//   - amount exceeds MaxRate (ErrExceedsCapacity), also when a SetRate
//     lowers the capacity below it while the caller waits, or amount is
//     negative, NaN or infinite (ErrInvalidAmount).
func (w *Window) Acquire(ctx context.Context, amount float64) error {
	if done := ctx.Done(); done != nil {
		select {
		case <-done:
			return ctx.Err()
		default:
		}
	}
	if amount == 0 {
		return nil
	}
	w.mu.Lock()
	if err := checkAmount(amount, w.maxRate); err != nil {
		w.mu.Unlock()
		return err
	}
	now, q := w.now(), w.quanta(amount)
	if !w.q.empty() {
		w.process(now) // admits the waiters whose time has come
	}
	if w.q.empty() && w.admit(now, q, true) {
		w.mu.Unlock()
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok {
		wait := time.Duration(satSub(w.due(now, q), now))
		if remaining := deadline.Sub(w.epoch.Add(time.Duration(now))); remaining <= wait {
			if w.q.empty() {
				w.q.tailOK = false // the sim holds only while waiters do
			}
			w.mu.Unlock()
			return &DeadlineError{Amount: amount, Wait: wait, Remaining: remaining}
		}
	}
	seq, ch := w.q.push(amount, int64(q), ctx.Done())
	if w.q.tailOK {
		w.sim.step(w, q)
	}
	watch := w.q.join(ctx, seq)
	if w.q.live == 1 {
		w.process(now) // sets the timer
	}
	w.mu.Unlock()
	return awaitTurn(ctx, w, seq, ch, watch)
}

// due returns when a newcomer of q quanta would be admitted behind the
// queue as it stands, in nanoseconds since the epoch, as process will
// admit it. It requires mu.
func (w *Window) due(now int64, q uint64) int64 {
	if !w.q.tailOK || w.q.empty() || w.sim.cursor < w.log.headSeq {
		w.sim.build(w, now)
		for s := range w.q.waiters() {
			w.sim.step(w, uint64(s.cost))
		}
		w.q.tailOK = true
	}
	return w.sim.fit(w, q)
}

// withdraw takes the waiter seq, whose context has ended, out of the queue
// if it is still there, with its group, and admits whoever may then go.
func (w *Window) withdraw(ctx context.Context, seq uint64, ch chan error) {
	w.mu.Lock()
	if s := w.q.at(seq); s != nil && s.ch == ch {
		if s.w != nil {
			w.q.cancel(s.w)
		} else {
			w.q.leave(s, ctx.Err())
		}
		w.process(w.now())
	}
	w.mu.Unlock()
}

// cancelGroup cancels w's group when its context ends after its owner left.
func (w *Window) cancelGroup(g *watcher) {
	w.mu.Lock()
	w.q.cancel(g)
	w.process(w.now())
	w.mu.Unlock()
}

// process admits the waiters at the front of the queue whose time has
// come, fails those that exceed the capacity, and sets the timer for the
// next one. It requires mu.
func (w *Window) process(now int64) {
	for {
		s, seq := w.q.front()
		if s == nil {
			// The timer goes with the last waiter: a window nobody waits
			// on holds none, and the next waiter makes its own, in
			// whatever synctest bubble it runs.
			if w.timer != nil {
				w.timer.Stop()
				w.timer = nil
			}
			w.armed, w.armAt = false, -1
			if cap(w.sim.own) > minLog {
				w.sim.own = nil // grown by a crowd of waiters, as the queue's ring
			}
			return
		}
		if err := checkAmount(s.amount, w.maxRate); err != nil {
			w.q.left(w, w.q.pop(err), seq)
			continue
		}
		if now < w.pause {
			w.arm(now, w.pause)
			return
		}
		w.log.expire(now, int64(w.period))
		q := uint64(s.cost)
		if !w.log.fits(q, w.capacity) {
			w.arm(now, w.log.freeAt(q, w.capacity, int64(w.period)))
			return
		}
		if w.armAt != now {
			// Admitted later than due foresaw (a timer that fired late),
			// or at a time it did not foresee: it must look again.
			w.q.tailOK = false
		}
		w.log.record(now, q, w.res)
		w.q.left(w, w.q.pop(nil), seq)
	}
}

// arm sets the timer to run process at due, in nanoseconds since the
// epoch. It requires mu.
func (w *Window) arm(now, due int64) {
	if w.armed && w.armAt == due {
		return
	}
	d := time.Duration(due - now)
	if w.timer == nil {
		w.timer = w.clock.AfterFunc(d, w.fire)
	} else {
		w.timer.Reset(d)
	}
	w.armed, w.armAt = true, due
}

// fire is the timer's function.
func (w *Window) fire() {
	w.mu.Lock()
	w.armed = false
	w.process(w.now())
	w.mu.Unlock()
}

// SetRate changes the capacity and the period, at once and for the callers
// already waiting too. Admissions still in the window stay in it, and
// leave it at their admission time plus the new period; admissions that
// had already left the window stay out. A Pause in progress keeps its end.
// Waiters whose amount exceeds the new capacity return ErrExceedsCapacity
// at once, wherever they stand in the queue. SetRate panics on the values
// New refuses, and then changes nothing.
func (w *Window) SetRate(maxRate float64, period time.Duration) {
	r := newWRate("SetRate", maxRate, period)
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	w.log.expire(now, int64(w.period))
	w.log.setShift(r.shift)
	w.wrate = r
	q := &w.q
	for i := 0; i < q.n; i++ { // leave may empty the queue
		s := &q.buf[(q.head+i)%len(q.buf)]
		if s.ch == nil {
			continue
		}
		if err := checkAmount(s.amount, r.maxRate); err != nil {
			gone, seq := *s, q.headSeq+uint64(i)
			q.leave(s, err)
			q.left(w, gone, seq)
			continue
		}
		s.cost = int64(r.quanta(s.amount))
	}
	q.tailOK = false
	w.process(now)
}

// Pause admits nothing for d; from then on, only the window rule applies:
// if nothing was admitted in the last Period, MaxRate units may pass at d,
// as a window server has reset by then. It is what a client does on a 429
// response with Retry-After. Pause does not change the Level, and never
// shortens a pause in progress; waiters keep their places. Pause with
// d <= 0 does nothing; pauses longer than about 417 days are cut to that.
func (w *Window) Pause(d time.Duration) {
	if d <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if until := now + int64(min(d, maxPeriod)); until > w.pause {
		w.pause = until
		w.q.tailOK = false
	}
	w.process(now)
}
