package pool

import (
	"context"
	"errors"
	"runtime/debug"
)

// errGoexit is the error of a task that called runtime.Goexit, as
// testing.T.FailNow does; errLimiterGoexit that of a task whose limiter
// did.
var (
	errGoexit        = errors.New("pool: task called runtime.Goexit")
	errLimiterGoexit = errors.New("pool: the limiter called runtime.Goexit")
)

// start is the task with ticket t, as errgroup runs it on its worker: once
// the ticket is due, it runs f if its submitter admitted it (or fails, if
// the submitter's TryAcquire panicked), and otherwise takes its turn at the
// limiter. It returns the error to hand errgroup.
func (p *Pool) start(t uint64, weight float64, f func(context.Context) error) error {
	p.turns.wait(t)
	if p.turns.passed(t) {
		if p.tryPanicked(t) {
			// Its submitter's TryAcquire panicked (Pool.admit).
			p.release()
			return p.tryPanic.Load().pe
		}
		return p.run(int64(t), f)
	}
	return p.queued(t, weight, f)
}

// queued holds ticket t's turn: it acquires weight from the limiter, passes
// the turn and runs f. A task whose turn comes after the pool stopped does
// not call the limiter, so it takes nothing from it. It returns the error
// to hand errgroup.
func (p *Pool) queued(t uint64, weight float64, f func(context.Context) error) error {
	id := int64(t)
	exited, counted := true, false
	defer func() {
		if exited {
			// The limiter called runtime.Goexit, which ends this goroutine:
			// the task fails, stopping the pool, and the turn moves on
			// (TestPoolLimiterGoexit). Unless a panic during the Goexit
			// failed it already (TestAcquireGoexitThenPanic).
			if !counted {
				p.admitted.Add(1)
				p.finish(id, errLimiterGoexit)
			}
			p.turns.pass(t)
			p.release()
		}
	}()
	panicked, err := p.acquire(weight, &counted)
	exited = false
	if err == nil && !panicked {
		p.turns.pass(t)
		p.admitted.Add(1)
		return p.run(id, f)
	}
	var stop error
	switch {
	case panicked:
		stop = err
	// A limiter reports a deadline it cannot meet before the deadline
	// comes; the task is as unstartable as if the context had ended.
	case p.isDone() || errors.Is(err, context.DeadlineExceeded):
		p.skip(err)
	default:
		// Record the failure, cancelling the pool, before the turn passes,
		// so that the next ticket does not reach the limiter
		// (TestStopBeforeTurnPasses).
		p.admitted.Add(1)
		stop = p.finish(id, err)
	}
	p.turns.pass(t)
	p.release()
	return stop
}

// acquire takes weight from the limiter, unless the pool has stopped. A
// panic in the limiter is treated as the task's own: it is recorded, counted
// (and *counted set, for a panic the limiter's runtime.Goexit goes on
// after), and returned as err.
func (p *Pool) acquire(weight float64, counted *bool) (panicked bool, err error) {
	if p.isDone() {
		return false, p.ctx.Err()
	}
	defer func() {
		if r := recover(); r != nil {
			panicked, err = true, p.recordPanic(r, true)
			p.admitted.Add(1)
			p.failed.Add(1)
			*counted = true
		}
	}()
	return false, p.lim.Acquire(p.ctx, weight)
}

// run calls f, records the outcome (cancelling the pool if it stops it),
// and returns the error to hand errgroup.
func (p *Pool) run(id int64, f func(context.Context) error) (stop error) {
	returned := false
	defer func() {
		if !returned {
			if r := recover(); r != nil {
				stop = p.recordPanic(r, false)
				p.failed.Add(1)
			} else {
				// runtime.Goexit, which goes on to end the goroutine.
				p.finish(id, errGoexit)
			}
		}
		p.release()
	}()
	err := f(p.ctx)
	returned = true
	return p.finish(id, err)
}

// release gives back ForEach's token for the task's item, if any.
func (p *Pool) release() {
	if p.items != nil {
		<-p.items
	}
}

// recordPanic keeps the first panic, with the stack of the goroutine that
// is still panicking, for Wait to raise, and cancels the pool. limiter says
// whether the limiter panicked rather than the task. It returns the panic,
// which is also the error for errgroup.
func (p *Pool) recordPanic(r any, limiter bool) *PanicError {
	pe := &PanicError{Value: r, Stack: debug.Stack(), Limiter: limiter}
	p.mu.Lock()
	if p.panicked == nil {
		p.panicked = pe
	}
	p.mu.Unlock()
	p.cancel(pe)
	return pe
}

// finish counts a task's result and returns the error that stops the pool,
// if any. By default the first error cancels the pool, with the error as
// the context's cause; with CollectErrors errors are kept, in any order,
// for Wait to sort, and stop nothing.
func (p *Pool) finish(id int64, err error) error {
	if err == nil {
		p.succeeded.Add(1)
		return nil
	}
	p.mu.Lock()
	if p.collect {
		p.errs = append(p.errs, taskError{id, err})
	} else if p.first == nil {
		p.first = err
		p.cancel(err)
	}
	p.mu.Unlock()
	p.failed.Add(1)
	if p.collect {
		return nil
	}
	return err
}

// skip counts a task that will never start and keeps the first cause. A
// nil err stands for the context's cause.
func (p *Pool) skip(err error) {
	p.noteStop(err)
	p.skipped.Add(1)
}

// noteStop keeps why work stopped before it was done, for Wait to report.
func (p *Pool) noteStop(err error) {
	if err == nil || p.isDone() {
		err = context.Cause(p.ctx)
	}
	p.mu.Lock()
	if p.skipCause == nil {
		p.skipCause = err
	}
	p.mu.Unlock()
}

func (p *Pool) isDone() bool { return closed(p.done) }

// closed reports whether a context's Done channel is closed, without the
// lock that the context's Err takes.
func closed(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}
