package pool

import (
	"context"
	"iter"

	"github.com/dripgo/drip/ratelimit"
)

// ForEach calls fn on every item of seq as tasks of weight 1 on New(ctx,
// lim, opts...), and returns (or panics) as Wait does. It pulls an item only
// once a worker is free for it, so seq may be endless, and stops when the
// pool stops. A panic in seq cancels the calls in flight, waits for them and
// goes on panicking. ForEach panics if fn is nil.
func ForEach[T any](ctx context.Context, lim ratelimit.Acquirer, seq iter.Seq[T], fn func(ctx context.Context, item T) error, opts ...Option) error {
	if fn == nil {
		panic("pool: ForEach called with a nil function")
	}
	p, _ := New(ctx, lim, opts...)
	// errgroup cannot hand out a worker before it is given the task, and
	// the task needs its item, so ForEach counts the items in hand itself.
	// A task gives its token back once it has counted itself finished,
	// just before errgroup frees its worker: a token in hand means that
	// g.Go waits at most for that moment.
	p.items = make(chan struct{}, p.workers)
	pulled := false
	defer func() {
		if !pulled {
			// seq panicked: leave no task behind it.
			p.cancel(context.Canceled)
			_ = p.g.Wait()
		}
	}()
	more := p.takeItem()
	if more {
		for item := range seq {
			if !p.submit(1, func(ctx context.Context) error { return fn(ctx, item) }, true, "ForEach") {
				// The context ended: the task was skipped, unstarted.
				p.release()
				more = false
				break
			}
			if more = p.takeItem(); !more {
				break
			}
			if p.skipped.Load() > 0 {
				// A task was skipped: its deadline was out of reach, so no
				// later item's is nearer (TestPoolForEachStopsPastDeadline).
				p.release()
				more = false
				break
			}
		}
	}
	pulled = true
	if more {
		p.release()
	} else {
		p.noteStop(nil)
	}
	return p.Wait()
}

// takeItem waits until an item may be pulled and takes a token for it. It
// reports false, holding no token, if the pool's context has ended or ends
// first. It looks at the context before it waits, because a select with a
// token free and the context ended would pick either.
func (p *Pool) takeItem() bool {
	if p.isDone() {
		return false
	}
	select {
	case p.items <- struct{}{}:
		return true
	case <-p.done:
		return false
	}
}
