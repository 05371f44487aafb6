package throttle

import "context"

// Chan returns a channel that passes on the values received from in, in
// order, each once the limiter has admitted its cost, and a function that
// reports why the channel was closed.
//
// One goroutine does the work. It closes out, and ends, when in is closed
// (after passing on every value), when ctx ends, or when the limiter refuses
// a value (its deadline cannot be met, or the cost is invalid); a value in
// hand at that moment is dropped. out is unbuffered, so a value admitted by
// the limiter waits for the receiver rather than in a buffer.
//
// wait blocks until out is closed, then returns nil if in was closed, and
// otherwise ctx.Err() or the limiter's error. It may be called any number of
// times, from any goroutine, or not at all.
//
// To stop early, cancel ctx: the goroutine then ends even if nobody reads
// out any more, and it stops reading in, so whoever sends on in should watch
// ctx too. A receiver that simply walks away without cancelling ctx leaves
// the goroutine blocked on its send. A nil in, like any nil channel, never
// delivers: out then closes when ctx ends.
func (t *Throttled[T]) Chan(ctx context.Context, in <-chan T) (out <-chan T, wait func() error) {
	c := make(chan T)
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		defer close(c)
		err = t.pump(ctx, in, c)
	}()
	return c, func() error {
		<-done
		return err
	}
}

// pump passes values from in to out until in is closed, ctx ends or the
// limiter refuses one, and returns nil or the error that stopped it.
func (t *Throttled[T]) pump(ctx context.Context, in <-chan T, out chan<- T) error {
	done := ctx.Done()
	for {
		var v T
		select {
		case x, ok := <-in:
			if !ok {
				return nil
			}
			v = x
		case <-done:
			return ctx.Err()
		}
		if err := t.Wait(ctx, v); err != nil {
			return err
		}
		select {
		case out <- v:
		case <-done:
			return ctx.Err()
		}
	}
}
