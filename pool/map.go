package pool

import (
	"context"

	"github.com/dripgo/drip/ratelimit"
)

// Map calls fn on every item on a pool made with New(ctx, lim, opts...),
// each call acquiring one unit from lim before it starts, and returns the
// results in the order of items, whatever order the calls finish in.
//
// Map returns the pool's error, as Wait does, together with the results it
// has: on an error, the slice still has len(items) entries, and those of
// calls that failed or never ran are the zero value. A panic in fn is
// raised again in the caller of Map, after the other calls have returned.
//
// Map panics if fn is nil, and on what New panics on.
func Map[T, R any](ctx context.Context, lim ratelimit.Acquirer, items []T, fn func(ctx context.Context, item T) (R, error), opts ...Option) ([]R, error) {
	if fn == nil {
		panic("pool: Map called with a nil function")
	}
	p, _ := New(ctx, lim, opts...)
	results := make([]R, len(items))
	for i := range items {
		p.Go(func(ctx context.Context) error {
			r, err := fn(ctx, items[i])
			if err == nil {
				results[i] = r
			}
			return err
		})
	}
	return results, p.Wait()
}
