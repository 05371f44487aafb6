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
	timeout time.Duration
	probe   time.Duration
	fb      *fallbackOptions
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
// returning ErrUnavailable. Give each of n processes a share of 1/n, so that
// together they keep to the rate while they cannot coordinate. The local
// limiter's capacity is share*maxRate too: a larger amount fails with
// ratelimit.ErrExceedsCapacity while it is in use. The local bucket and
// the one in Redis know nothing of each other, so each switch can let one
// extra burst through.
//
// notify, if not nil, is called with local true and the cause when the
// limiter switches to the fallback, and with local false and a nil cause
// when Redis answers again and it switches back. It is called on the
// goroutine of the call that saw the switch, in order, one at a time, and
// must not call the limiter.
//
// WithFallback panics if share is not in (0, 1].
func WithFallback(share float64, notify func(local bool, cause error)) Option {
	if !(share > 0 && share <= 1) {
		panic(fmt.Sprintf("redisbucket: WithFallback: share %v must be > 0 and <= 1", share))
	}
	return func(o *options) { o.fb = &fallbackOptions{share: share, notify: notify} }
}

// WithProbeInterval sets how often a limiter on its fallback tries Redis
// again: at most one call per interval goes to Redis, the others stay
// local. The default is DefaultProbeInterval; d <= 0 means the default.
func WithProbeInterval(d time.Duration) Option {
	return func(o *options) { o.probe = d }
}
