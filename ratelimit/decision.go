package ratelimit

import (
	"math"
	"time"
)

// A Decision is what an Allow method decided for an amount, and the state
// of the bucket or window right after, as the RateLimit and Retry-After
// headers of an HTTP response report them (the limit is MaxRate):
//
//	d := limits.Allow(clientIP, 1)
//	if !d.OK {
//		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.RetryAfter.Seconds()))))
//		http.Error(w, "slow down", http.StatusTooManyRequests)
//		return
//	}
//
// [Limiter.Allow], [Keyed.Allow] and [KeyLimiter.Allow] answer for a
// bucket, [Window.Allow] for a window; the fields mean the same for both,
// as said below.
type Decision struct {
	// OK reports whether the amount was taken: the caller may go on.
	OK bool
	// Remaining is how many units TryAcquire would admit now, after this
	// call: MaxRate less the level (a bucket's units; a window's units
	// admitted in the last Period), and 0 while callers wait or a pause
	// holds.
	Remaining float64
	// RetryAfter is 0 if OK. Otherwise it is how long until the amount
	// would be admitted, behind the callers already waiting: the wait
	// Acquire would have (and a DeadlineError would report), if no SetRate
	// or Pause changes it. For a new key refused at a Keyed's cap it is
	// one Period and a sixteenth (of a Period, or of 64 ms if longer), by
	// when the keys held without callers waiting or a pause have drained
	// and the Keyed has looked for them; for an amount that can never be
	// admitted, 0.
	RetryAfter time.Duration
	// Reset is how long until the bucket is empty (its Level 0) and no
	// pause holds, if nothing is admitted beyond the callers waiting now:
	// a client that waits that long finds the whole burst of MaxRate. For
	// a window, that is when the newest admission in it (or the last
	// waiter's, once admitted) leaves it, a Period after it was made.
	Reset time.Duration
	// Err is nil, unless the amount was not taken because it can never be
	// admitted (ErrExceedsCapacity, ErrInvalidAmount), or because the key
	// is new and a Keyed is at its cap (ErrTooManyKeys), wrapped with the
	// values.
	Err error
}

// Allow takes amount units if they are available now, as TryAcquire does,
// and says in one call what an HTTP middleware answers with: whether the
// amount was taken, what is left, and when to come back. See [Decision].
//
// Unlike TryAcquire, Allow first admits the callers waiting whose turn has
// come, if the timer that admits them runs late (on a loaded machine), so
// that it answers from the bucket as it is: it may then admit an amount
// that TryAcquire, which leaves them to their timer, would refuse.
func (l *Limiter) Allow(amount float64) Decision { return l.allow(amount) }

// allow is Allow for a Limiter: TryAcquire, and the state after it.
func (l *Limiter) allow(amount float64) Decision {
	p, now := l.lock()
	defer l.unlock()
	ns := now / p.scale
	if !l.q.empty() {
		l.process(p, now) // admits the waiters whose time has come, if their timer is late
	}
	open := l.q.empty() && ns >= p.blockNs // TryAcquire may admit
	var d Decision
	switch err := checkAmount(amount, p.maxRate); {
	case err != nil:
		d.Err = err
	case amount == 0:
		d.OK = true
	default:
		cost := p.cost(amount)
		if tat := max(l.tat(p), now, p.floor) + cost; open && tat-now <= p.capacity {
			setTat(p, tat)
			d.OK = true
		} else {
			d.RetryAfter = time.Duration(min(l.due(p, now, cost)-ns, math.MaxInt64))
		}
	}
	if open && ns >= p.fullNs {
		d.Remaining = p.remaining(p.capacity - (max(l.tat(p), now, p.floor) - now))
	}
	// The bucket is empty at its tat, or at the floor the blocks leave,
	// counted in nanoseconds: it may lie further than ticks count.
	reset := ceilDivSigned(max(l.tat(p), now)-now, p.scale)
	if p.blockNs > 0 {
		reset = max(reset, satAdd(p.blockNs-ns, ceilDivSigned(p.floorOff, p.scale)))
	}
	if ns < p.fullNs {
		// Over-full, in units: the floor would not count them.
		units := math.Ceil(p.overAt(ns) * float64(p.period) / p.maxRate)
		if units >= math.MaxInt64 {
			reset = math.MaxInt64
		} else {
			reset = max(reset, int64(units))
		}
	}
	if !l.q.empty() {
		// The callers waiting fill it first: it is empty once a newcomer
		// of the whole capacity would fit behind them.
		reset = max(reset, l.due(p, now, p.capacity)-ns)
	}
	d.Reset = time.Duration(reset)
	return d
}

// Allow takes amount units if the window has room for them now, as
// TryAcquire does, and says in one call what an HTTP middleware answers
// with: whether the amount was taken, what is left, and when to come back.
// See [Decision]. As [Limiter.Allow] does, it first admits the callers
// waiting whose turn has come, if their timer runs late.
func (w *Window) Allow(amount float64) Decision {
	var d Decision
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if !w.q.empty() {
		w.process(now) // admits the waiters whose time has come
	}
	switch err := checkAmount(amount, w.maxRate); {
	case err != nil:
		d.Err = err
	case amount == 0:
		d.OK = true
	default:
		q := w.quanta(amount)
		if w.q.empty() && w.admit(now, q, true) {
			d.OK = true
			break
		}
		d.RetryAfter = time.Duration(satSub(w.due(now, q), now))
		if w.q.empty() {
			w.q.tailOK = false // the sim holds only while waiters do
		}
	}
	w.log.expire(now, int64(w.period))
	if w.q.empty() && now >= w.pause {
		d.Remaining = w.log.remaining(w.capacity)
	}
	var reset int64
	if w.log.n > 0 {
		reset = satSub(satAdd(w.log.at(w.log.headSeq+uint64(w.log.n)-1).at, int64(w.period)), now)
	}
	if !w.q.empty() {
		// The callers waiting come first: the window holds nothing once a
		// newcomer of the whole capacity would fit behind them.
		reset = max(reset, satSub(w.due(now, w.capacity), now))
	}
	d.Reset = time.Duration(max(reset, w.pause-now, 0))
	return d
}
