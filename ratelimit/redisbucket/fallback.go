package redisbucket

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/dripgo/drip/ratelimit"
)

// fallback routes calls to a local limiter while Redis is unreachable. It
// holds no goroutine: calls themselves probe Redis, at most one per
// interval, and the first that gets an answer switches back.
type fallback struct {
	local  *ratelimit.Limiter
	share  float64
	notify func(local bool, cause error)
	probe  time.Duration
	clock  clock.Clock

	active atomic.Bool // calls go to local, except probes

	// mu guards probing and probeAt, and orders the notifications.
	mu      sync.Mutex
	probing bool      // a probe is in flight
	probeAt time.Time // when the next probe may start
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

// useRedis reports whether a call should go to Redis: always while Redis
// works, and for one probe per interval while it does not. A nil fallback
// always answers true.
func (f *fallback) useRedis() bool {
	if f == nil || !f.active.Load() {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.active.Load() {
		return true
	}
	if f.probing || f.clock.Now().Before(f.probeAt) {
		return false
	}
	f.probing = true
	return true
}

// succeeded records that Redis answered, switching back to it.
func (f *fallback) succeeded() {
	if f == nil || !f.active.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probing = false
	if f.active.CompareAndSwap(true, false) && f.notify != nil {
		f.notify(false, nil)
	}
}

// failed records that a round trip for ctx failed with err, and reports
// whether the call should go to the local limiter: it should if Redis is
// unavailable, in which case the fallback switches to local (if it is not
// already). Either way the next probe waits an interval. A round trip cut
// short by its caller's context says nothing about Redis.
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
	if f.active.CompareAndSwap(false, true) && f.notify != nil {
		f.notify(true, err)
	}
	return true
}
