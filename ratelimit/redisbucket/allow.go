package redisbucket

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/dripgo/drip/ratelimit"
)

// Allow takes amount units if they are available now, as TryAcquire does,
// and reports the bucket's state right after, in the same round trip: what
// an HTTP middleware answers with. The fields mean what they mean for
// ratelimit.Limiter.Allow (see ratelimit.Decision), on the server's clock:
//
//   - OK reports whether the amount was taken. It is false while callers
//     in any process wait for their turn in Acquire, and during a pause.
//   - Remaining is the most that TryAcquire would admit now: MaxRate less
//     the level, rounded down to a float64 that TryAcquire admits. It is 0
//     during a pause, and while callers wait: their reserved units fill the
//     bucket past the top.
//   - RetryAfter is 0 if OK. Otherwise it is the wait that Acquire would
//     have, from the server's now: the amount fits then, behind the turns
//     already reserved and after the pause, and not a nanosecond before,
//     unless another call changes the bucket meanwhile.
//   - Reset is how long until the bucket is empty and no pause holds, if
//     nothing more is taken. It counts the units of the turns reserved,
//     as Level does, so that a client that waits that long finds the whole
//     burst (ratelimit.Limiter's counts its queued callers' units too).
//
// The bucket counts whole nanoseconds, so RetryAfter and Reset need no
// rounding; they stop at 2^62 ns (146 years). Both are measured from the
// server's now, which the reply reaches the caller after: waiting them
// from the reply errs late, never early.
//
// An amount of 0 takes nothing and is always OK; it still reads the
// bucket, in one round trip. An amount that Acquire would refuse gives OK
// false and Err, the error that TryAcquire returns for it, with no round
// trip, and the other fields zero (ratelimit's Allow reports the state
// there too). A failed round trip gives OK false, the other fields zero,
// and an Err that wraps ErrUnavailable (or the context's error, if ctx
// ended) and the cause. On the fallback, the local limiter's Allow answers
// instead, with its own capacity (the share of MaxRate given to
// WithFallback).
//
// Allow writes back a key that Redis lost, as every call does (see Lost
// state in the package documentation).
func (l *Limiter) Allow(ctx context.Context, amount float64) ratelimit.Decision {
	p := l.params.Load()
	if err := checkAmount(amount, p.maxRate); err != nil {
		return ratelimit.Decision{Err: err}
	}
	ctx = l.realDeadline(ctx)
	if !l.useRedis(ctx) {
		return l.allowLocal(amount)
	}
	p = l.rlock()
	if err := checkAmount(amount, p.maxRate); err != nil {
		l.rateMu.RUnlock() // SetRate lowered the capacity meanwhile
		return ratelimit.Decision{Err: err}
	}
	v, err := l.run(ctx, p, opAllow, p.cost(amount))
	l.rateMu.RUnlock()
	if err == nil {
		var d ratelimit.Decision
		if d, err = parseDecision(v, p); err == nil {
			l.fb.succeeded()
			return d
		}
	}
	if l.fb.failed(ctx, err) {
		return l.allowLocal(amount)
	}
	return ratelimit.Decision{Err: l.fail(ctx, fmt.Sprintf("Allow(%v)", amount), err)}
}

// allowLocal answers Allow on the fallback, whose capacity is the local
// share: a larger amount fails with ratelimit.ErrExceedsCapacity, as
// checkLocal's do.
func (l *Limiter) allowLocal(amount float64) ratelimit.Decision {
	if err := checkAmount(amount, l.fb.local.MaxRate()); err != nil {
		return ratelimit.Decision{Err: err}
	}
	return l.fb.local.Allow(amount)
}

// Allow takes amount units from key's bucket if they are available now,
// and reports the bucket's state right after, in one round trip, as
// Limiter.Allow does: the fields mean what they mean for
// ratelimit.Keyed.Allow, but that no key is ever refused for a cap on keys
// (ratelimit.ErrTooManyKeys): Redis holds every key in use, and the Keyed
// forgets only what it remembers of keys (see Keyed). An amount that can
// never be admitted makes no round trip and keeps nothing of key.
func (k *Keyed) Allow(ctx context.Context, key string, amount float64) ratelimit.Decision {
	if err := checkAmount(amount, k.MaxRate()); err != nil {
		return ratelimit.Decision{Err: err}
	}
	return k.Key(key).Allow(ctx, amount)
}

// parseDecision reads the reply of an allow made at the params p, which the
// script brought the key to: whether the cost was taken, the wait reserve
// would have for it, the bucket's lead on now in nanoseconds, and whether a
// pause holds.
func parseDecision(s []any, p *params) (ratelimit.Decision, error) {
	if len(s) < 4 {
		return ratelimit.Decision{}, &replyError{s}
	}
	status, ok1 := s[0].(int64)
	wait, ok2 := s[1].(int64)
	lead, ok3 := s[2].(int64)
	paused, ok4 := s[3].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return ratelimit.Decision{}, &replyError{s}
	}
	d := ratelimit.Decision{OK: status == 1, Reset: time.Duration(max(lead, 0))}
	if !d.OK {
		d.RetryAfter = time.Duration(max(wait, 0))
	}
	if paused == 0 {
		d.Remaining = p.remaining(lead)
	}
	return d, nil
}

// remaining returns the most that TryAcquire admits into a bucket whose
// lead on now is lead nanoseconds, with no pause holding: MaxRate when
// empty, else the amounts whose cost fits in the rest of the period,
// (period-lead)/nsPerUnit rounded down to a float64 whose cost does fit,
// or 0 if none.
func (p *params) remaining(lead int64) float64 {
	if lead <= 0 {
		return p.maxRate // an amount of MaxRate costs the period exactly
	}
	room := int64(p.period) - lead
	if room <= 0 {
		return 0
	}
	// room may lie beyond 2^53, where float64 rounds it: down, then.
	r := float64(room)
	if int64(r) > room {
		r = math.Nextafter(r, 0)
	}
	x := r / p.nsPerUnit
	// The quotient rounded to a float64 may cost a fraction more than r,
	// which FMA sees, as p.cost does: cost(x) = ceil(x*nsPerUnit) <= room.
	for x > 0 && math.FMA(x, p.nsPerUnit, -r) > 0 {
		x = math.Nextafter(x, 0)
	}
	return x
}
