package throttle

import (
	"context"

	"github.com/dripgo/drip/ratelimit"
)

// A Throttled is a limiter together with what each value of type T costs
// in it: one unit by default, or what the cost function given to
// [WithCost] says, such as a request's bytes or a prompt's tokens. The
// wrappers of this package ([Func], [Throttled.Seq], [Throttled.Chan] and
// [NewTransport]) acquire each value's cost before letting it through.
//
// A Throttled is immutable and safe for concurrent use; the wrappers made
// from one Throttled, and the callers of each, all draw on its limiter.
type Throttled[T any] struct {
	lim  ratelimit.Acquirer
	cost func(T) float64 // nil means 1 per value
}

// An Option configures a [Throttled] in [New].
type Option[T any] func(*Throttled[T])

// WithCost makes each value v cost cost(v) units instead of 1. The cost is
// computed once per value, just before it is acquired; a cost the limiter
// refuses (negative, NaN, infinite, or above its capacity) comes back as the
// limiter's error for that value. A nil cost means 1 per value.
func WithCost[T any](cost func(T) float64) Option[T] {
	return func(t *Throttled[T]) { t.cost = cost }
}

// New returns a Throttled that admits values of type T through lim. It
// panics if lim is nil.
func New[T any](lim ratelimit.Acquirer, opts ...Option[T]) *Throttled[T] {
	if lim == nil {
		panic("throttle: New: nil Acquirer")
	}
	t := &Throttled[T]{lim: lim}
	for _, opt := range opts {
		if opt != nil {
			opt(t)
		}
	}
	return t
}

// Wait waits until the limiter admits v's cost and returns nil, or returns
// the limiter's error unchanged: ctx.Err() if ctx ends first, an error that
// unwraps to [context.DeadlineExceeded] at once if ctx's deadline cannot be
// met, or the error for a cost the limiter refuses. It is the step every
// wrapper of this package takes for each value, for code that needs another
// shape.
//
// (It is not called Acquire because a Throttled[float64] would then satisfy
// [ratelimit.Acquirer] while ignoring the amounts passed to it.)
func (t *Throttled[T]) Wait(ctx context.Context, v T) error {
	if t.cost == nil {
		return t.lim.Acquire(ctx, 1)
	}
	return t.lim.Acquire(ctx, t.cost(v))
}
