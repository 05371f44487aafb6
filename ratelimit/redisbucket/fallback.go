package redisbucket

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/dripgo/drip/ratelimit"
)

// recoveryProbes is how many probes in a row, one probe interval apart,
// Redis must answer before a limiter on its fallback switches back.
const recoveryProbes = 3

// fallback routes calls to a local limiter while Redis is unreachable. It
// holds no goroutine: calls themselves probe Redis, at most one per
// interval, and once Redis has answered every call made to it for
// recoveryProbes-1 intervals, the fallback switches back.
//
// The local limiter lives as long as the Limiter, so that the callers it
// admits, even those still waiting in it after a switch back, never take
// more than one bucket of its size allows.
type fallback struct {
	local  *ratelimit.Limiter
	share  float64
	notify func(local bool, cause error)
	probe  time.Duration
	clock  clock.Clock

	active atomic.Bool // calls go to local, except probes

	// mu guards the fields below, and orders the switches and their
	// notifications.
	mu      sync.Mutex
	probing bool      // a probe is in flight
	probeAt time.Time // when the next probe may start
	healthy time.Time // when Redis first answered since it last failed; zero before
	paused  time.Time // the end of the latest Pause taken on the local limiter
}

func newFallback(o *fallbackOptions, maxRate float64, period, probe time.Duration, c clock.Clock) *fallback {
	return &fallback{
		local:  ratelimit.New(o.share*maxRate, period, ratelimit.WithClock(c)),
		share:  o.share,
		notify: o.notify,
		probe:  probe,
		clock:  c,
	}
}

// useRedis reports whether a call for ctx should go to Redis: always while
// Redis works. On the fallback, the call that finds a probe due makes it,
// one per interval: a round trip that reads the bucket and changes
// nothing, so that a process never admits through Redis and its local
// limiter at once. If Redis has then answered for long enough, the limiter
// switches back and the call goes to Redis; otherwise it stays local.
//
// The probe that will switch back if Redis answers carries to Redis what
// is left of a pause taken on the local limiter, so that the pause still
// holds after the switch: it pauses the bucket instead of reading it.
func (l *Limiter) useRedis(ctx context.Context) bool {
	f := l.fb
	if f == nil || !f.active.Load() {
		return true
	}
	due, pause := f.probeDue()
	if !due {
		return !f.active.Load()
	}
	p := l.rlock()
	var err error
	if pause > 0 {
		_, err = l.run(ctx, p, opPause, int64(pause))
	} else {
		_, err = l.run(ctx, p, opLevel)
	}
	l.rateMu.RUnlock()
	if err != nil {
		f.failed(ctx, err)
		return false
	}
	f.succeeded()
	return !f.active.Load()
}

// probeDue reports whether the caller should probe Redis now, and if so
// marks a probe in flight. If that probe will switch back when Redis
// answers, it also returns what is left of the local pause, or 0.
func (f *fallback) probeDue() (bool, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.clock.Now()
	if !f.active.Load() || f.probing || now.Before(f.probeAt) {
		return false, 0
	}
	f.probing = true
	if f.healthy.IsZero() || now.Sub(f.healthy) < (recoveryProbes-1)*f.probe {
		return true, 0
	}
	return true, max(f.paused.Sub(now), 0)
}

// pause pauses the local limiter for d, and remembers until when, for the
// switch back.
func (f *fallback) pause(d time.Duration) {
	f.local.Pause(d)
	f.mu.Lock()
	if end := f.clock.Now().Add(d); end.After(f.paused) {
		f.paused = end
	}
	f.mu.Unlock()
}

// succeeded records that Redis answered. On the fallback, it switches back
// once Redis has answered every call for recoveryProbes-1 probe intervals;
// until then the next probe waits an interval.
func (f *fallback) succeeded() {
	if f == nil || !f.active.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probing = false
	if !f.active.Load() {
		return
	}
	now := f.clock.Now()
	if f.healthy.IsZero() {
		f.healthy = now
	}
	if now.Sub(f.healthy) < (recoveryProbes-1)*f.probe {
		f.probeAt = now.Add(f.probe)
		return
	}
	f.active.Store(false)
	if f.notify != nil {
		f.notify(false, nil)
	}
}

// failed records that a round trip for ctx failed with err, and reports
// whether the call should go to the local limiter: it should if Redis is
// unavailable, in which case the fallback switches to local (if it is not
// already). Either way the next probe waits an interval. A round trip cut
// short by its caller's context says nothing about Redis, nor does an
// error that Redis replied.
func (f *fallback) failed(ctx context.Context, err error) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probing = false
	f.probeAt = f.clock.Now().Add(f.probe)
	if ended(ctx) != nil || !unavailable(err) {
		return false
	}
	f.healthy = time.Time{}
	if !f.active.Load() {
		fill(f.local)
		f.active.Store(true)
		if f.notify != nil {
			f.notify(true, timedOut(err))
		}
	}
	return true
}

// fill makes l full, unless it is already, so that a switch to it lets no
// burst through: the process may have used its share of the rate through
// Redis a moment ago, and l cannot know. It takes what l lacks, which on
// an empty bucket (the first switch, or one a period or more after the
// last) makes it exactly full, and otherwise full to the nanosecond of
// drain. Callers waiting in l already keep it full, and take precedence.
func fill(l *ratelimit.Limiter) {
	if gap := l.MaxRate() - l.Level(); gap > 0 {
		l.TryAcquire(gap)
	}
}
