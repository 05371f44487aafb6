package ratelimit

import "github.com/benbjohnson/clock"

// An Option configures a Limiter in New, or a Keyed in NewKeyed.
type Option func(*options)

type options struct {
	clock clock.Clock
}

// WithClock makes the limiter read time and set its timer through c, for
// example a *clock.Mock in tests. A nil c means the real clock, which is also
// the default. Context deadlines are read as times on this clock.
func WithClock(c clock.Clock) Option {
	return func(o *options) { o.clock = c }
}
