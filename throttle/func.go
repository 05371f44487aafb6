package throttle

import "context"

// Func returns a function with fn's signature that, on each call, first
// acquires the cost of its argument from t and then calls fn. If the limiter
// refuses (ctx ended, its deadline cannot be met, or the cost is invalid),
// fn is not called and the wrapped function returns the zero R and the
// limiter's error unchanged, so errors.Is(err, context.Canceled) and the like
// work as they would on fn's own errors.
//
// The wrapped function is safe for concurrent use if fn is; concurrent
// callers are admitted in the order the limiter admits them (first come,
// first served for a [ratelimit.Limiter]). Func panics if t or fn is nil.
func Func[A, R any](t *Throttled[A], fn func(context.Context, A) (R, error)) func(context.Context, A) (R, error) {
	if t == nil || fn == nil {
		panic("throttle: Func: nil Throttled or function")
	}
	return func(ctx context.Context, a A) (R, error) {
		if err := t.Wait(ctx, a); err != nil {
			var zero R
			return zero, err
		}
		return fn(ctx, a)
	}
}
