package pool

import (
	"context"
	"iter"

	"github.com/dripgo/drip/ratelimit"
)

// ForEach calls fn on every item of seq on a pool made with
// New(ctx, lim, opts...), each call acquiring one unit from lim before it
// starts, and returns the pool's error, as Wait does.
//
// ForEach pulls seq lazily: it takes a worker before it asks seq for the
// next item, so it never holds more than Workers items that fn has not
// finished with, and seq may be endless. It stops pulling once the pool's
// context ends (a task failed, or ctx was cancelled); it then reports the
// context's cause if no task failed. A panic in fn is raised again in the
// caller, after the other calls have returned; a panic in seq cancels the
// calls in flight and waits for them before it goes on.
//
// ForEach panics if fn is nil, and on what New panics on.
func ForEach[T any](ctx context.Context, lim ratelimit.Acquirer, seq iter.Seq[T], fn func(ctx context.Context, item T) error, opts ...Option) error {
	if fn == nil {
		panic("pool: ForEach called with a nil function")
	}
	p, _ := New(ctx, lim, opts...)
	pulled := false
	defer func() {
		if !pulled {
			// seq panicked: leave no task behind it.
			p.cancel(context.Canceled)
			p.wg.Wait()
			p.workers.close()
		}
	}()
	reserved := p.reserve(true)
	if reserved {
		for item := range seq {
			p.launch(1, func(ctx context.Context) error { return fn(ctx, item) })
			if reserved = p.reserve(true); !reserved {
				break
			}
		}
	}
	pulled = true
	if reserved {
		p.workers.give()
	} else {
		p.noteStop(nil)
	}
	return p.Wait()
}
