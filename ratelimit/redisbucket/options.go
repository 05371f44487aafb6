package redisbucket

import (
	"fmt"
	"time"

	"github.com/benbjohnson/clock"
)

// An Option configures a Limiter in New.
type Option func(*options)

type options struct {
	clock   clock.Clock
	ownTime bool // clock came from WithClock
	timeout time.Duration
	probe   time.Duration
	fb      *fallbackOptions
}

// newOptions applies opts to the defaults.
func newOptions(opts []Option) options {
	o := options{timeout: DefaultTimeout, probe: DefaultProbeInterval}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	o.ownTime = o.clock != nil
	if !o.ownTime {
		o.clock = clock.New()
	}
	if o.timeout <= 0 {
		o.timeout = DefaultTimeout
	}
	if o.probe <= 0 {
		o.probe = DefaultProbeInterval
	}
	return o
}

type fallbackOptions struct {
	share  float64
	notify func(local bool, cause error)
}

const (
	// DefaultTimeout bounds each round trip to Redis unless WithTimeout
	// says otherwise.
	DefaultTimeout = time.Second

	// DefaultProbeInterval is how often a limiter on its fallback tries
	// Redis again unless WithProbeInterval says otherwise.
	DefaultProbeInterval = time.Second
)

// WithClock makes the limiter sleep and read deadlines through c, for
// example a *clock.Mock in tests. A nil c means the real clock, the
// default. The bucket itself is always timed by the Redis server's clock.
func WithClock(c clock.Clock) Option {
	return func(o *options) { o.clock = c }
}

// WithTimeout bounds each round trip to Redis, within the caller's context,
// to d; the default is DefaultTimeout. A round trip that takes longer fails
// with ErrUnavailable (or switches to the fallback). d <= 0 means the
// default.
//
// go-redis applies context deadlines to the socket only when the client's
// Options.ContextTimeoutEnabled is true; otherwise its ReadTimeout and
// WriteTimeout bound a round trip instead.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithFallback makes the limiter admit through a local ratelimit.Limiter of
// share*maxRate units per period while Redis is unreachable, instead of
// returning ErrUnavailable. The local limiter's capacity is share*maxRate
// too: a larger amount fails with ratelimit.ErrExceedsCapacity while it is
// in use.
//
// Without WithFallback, a fleet fails closed: while Redis is unreachable
// its limiters admit nothing, and the fleet never exceeds the rate. With
// it, the fleet stays available, and may exceed the rate by the shares of
// the processes that are cut off: those that reach Redis still take the
// whole rate, since nothing tells them that others are cut off, and those
// cut off cannot tell them. While the same processes stay cut off, the
// fleet runs at up to (1 + the sum of their shares) times the rate, or at
// the sum of their shares times the rate if every process is cut off, and
// it reaches that. The bound that
// always holds, also while the partition changes, is this: with S the sum
// of the shares of all the processes on the key (1 when each of n
// processes has a share of 1/n) and rate = maxRate/period, the fleet
// admits at most
//
//	(1+S) · (maxRate + rate·t)
//
// units in any window of length t, since Redis admits at most maxRate +
// rate·t, as one bucket does (see the package documentation for a key that
// Redis loses), and the local limiter of each process at most its share of
// that. With shares of 1/n, the fleet runs at up to 2-1/n
// times the rate while all but one process are cut off (1.75 for four
// processes), and never above twice the rate. Smaller shares lower the
// excess and the rate during an outage alike: shares of 1/(2n) keep the
// fleet within 1.5 times the rate, and at half of it while every process
// is cut off.
//
// A switch to the fallback lets no burst through: the local bucket starts
// full, so that its first unit passes after period/(share*maxRate). The
// limiter switches back once Redis has answered every call made to it for
// two probe intervals (three probes in a row, see WithProbeInterval), so
// that a Redis that keeps failing and recovering does not make the limiter
// switch at the same pace. Back on Redis, the bucket is as the processes
// that used it left it: after an outage that cut off every process it has
// drained, and admits up to maxRate at once, which the bound above counts.
// A Pause taken on the fallback and still in progress at the switch back
// pauses the bucket in Redis for what is left of it.
//
// notify, if not nil, is called with local true and the cause when the
// limiter switches to the fallback, and with local false and a nil cause
// when it switches back to Redis. It is called on the goroutine of the
// call that saw the switch, in order, one at a time, and must not call the
// limiter.
//
// WithFallback panics if share is not in (0, 1].
func WithFallback(share float64, notify func(local bool, cause error)) Option {
	if !(share > 0 && share <= 1) {
		panic(fmt.Sprintf("redisbucket: WithFallback: share %v must be > 0 and <= 1", share))
	}
	return func(o *options) { o.fb = &fallbackOptions{share: share, notify: notify} }
}

// WithProbeInterval sets how often a limiter on its fallback tries Redis
// again: at most one call per interval probes Redis, with a round trip
// that reads the bucket and takes nothing, before it goes on locally as
// the others do (or to Redis, if it switches back). The limiter switches
// back once Redis has answered every call made to it for two intervals,
// that is at the third probe in a row that it answers; one failure starts
// the count again. The default is DefaultProbeInterval; d <= 0 means the
// default.
func WithProbeInterval(d time.Duration) Option {
	return func(o *options) { o.probe = d }
}
