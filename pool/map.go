package pool

import (
	"context"

	"github.com/dripgo/drip/ratelimit"
)

// Map calls fn on every item as tasks of weight 1 on New(ctx, lim, opts...)
// and returns the results in input order (zero where a call failed or never
// ran) and what Wait returns. It panics if fn is nil, or as Wait does.
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
