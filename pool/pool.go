package pool

import (
	"cmp"
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dripgo/drip/ratelimit"
)

// A Pool runs tasks on a bounded number of workers, each task starting only
// once a rate limiter admits it. See the package documentation for the
// model and a worked schedule.
//
// A Pool is made by New and used once: submit tasks with Go, GoWeighted or
// TryGo, then call Wait. Its methods are safe for concurrent use, and tasks
// may submit further tasks to their own pool until Wait returns.
type Pool struct {
	lim     ratelimit.Acquirer
	try     tryAcquirer // lim, if it can admit without waiting
	ctx     context.Context
	done    <-chan struct{}
	cancel  context.CancelCauseFunc
	wg      sync.WaitGroup
	collect bool

	// A task holds a worker from submission until it returns or is
	// skipped. errgroup's SetLimit would block without watching the
	// context, and start the goroutine in the same call that takes the
	// slot, leaving no moment to take a turnstile ticket in between.
	workers *workers
	turns   turnstile

	// The counters behind Stats. A task moves submitted, then admitted or
	// skipped, then succeeded or failed; a limiter's refusal counts as
	// admitted and failed.
	submitted atomic.Int64
	admitted  atomic.Int64
	skipped   atomic.Int64
	succeeded atomic.Int64
	failed    atomic.Int64

	waited atomic.Bool // Wait has returned

	mu        sync.Mutex
	first     error       // the first error, without CollectErrors
	errs      []taskError // with CollectErrors
	skipCause error       // why the first skipped task was skipped
	panicked  *PanicError // the first panic
}

// errGoexit is the error of a task that called runtime.Goexit, as
// testing.T.FailNow does.
var errGoexit = errors.New("pool: task called runtime.Goexit")

// tryAcquirer is the non-blocking admission that *ratelimit.Limiter offers.
// When the pool's limiter has it and no task is queued, submission admits a
// task on the spot and spares it the turnstile.
type tryAcquirer interface {
	TryAcquire(amount float64) bool
}

// taskError is an error kept for CollectErrors, with the task's submission
// number, by which Wait orders them.
type taskError struct {
	id  int64
	err error
}

// New returns a pool whose tasks acquire their weight from lim before they
// start, and the context the tasks receive. The context is derived from
// ctx; it is cancelled when a task fails (unless CollectErrors is given),
// when a task panics, and when Wait returns.
//
// New panics if lim is nil, or a nil *ratelimit.Limiter: a rate-limited
// pool that silently ran unlimited would hammer whatever the limit
// protects.
func New(ctx context.Context, lim ratelimit.Acquirer, opts ...Option) (*Pool, context.Context) {
	if lim == nil {
		panic("pool: New: nil limiter")
	}
	if l, ok := lim.(*ratelimit.Limiter); ok && l == nil {
		panic("pool: New: nil *ratelimit.Limiter")
	}
	cfg := newConfig(opts)
	ctx, cancel := context.WithCancelCause(ctx)
	p := &Pool{
		lim:     lim,
		ctx:     ctx,
		done:    ctx.Done(),
		cancel:  cancel,
		collect: cfg.collect,
		workers: newWorkers(ctx, cfg.workers),
		turns:   newTurnstile(cfg.workers),
	}
	p.try, _ = lim.(tryAcquirer)
	return p, ctx
}

// Go submits f as a task of weight 1. It is shorthand for GoWeighted(1, f).
func (p *Pool) Go(f func(ctx context.Context) error) {
	p.submit(1, f, true, "Go")
}

// GoWeighted submits f as a task that acquires weight units from the
// limiter before it starts. It blocks while every worker is taken (by tasks
// running or waiting for the limiter), so that however many tasks are
// submitted, at most Workers are held in memory; it returns as soon as the
// task has a worker, without waiting for the limiter.
//
// If the pool's context has ended, or ends while GoWeighted waits for a
// worker, the task is skipped: it never runs, and Wait reports the
// context's cause. A weight the limiter refuses (for a *ratelimit.Limiter,
// one above its capacity, or negative) makes the task fail with the
// limiter's error without running.
//
// GoWeighted panics if f is nil, or if Wait has returned.
func (p *Pool) GoWeighted(weight float64, f func(ctx context.Context) error) {
	p.submit(weight, f, true, "GoWeighted")
}

// TryGo submits f as a task of weight 1 if a worker is free, without
// blocking, and reports whether it did. It reports false if every worker
// is taken or the pool's context has ended. The task may still wait for
// the limiter once it has its worker.
//
// TryGo panics if f is nil, or if Wait has returned.
func (p *Pool) TryGo(f func(ctx context.Context) error) bool {
	return p.submit(1, f, false, "TryGo")
}

// submit is Go, GoWeighted and TryGo (which does not block). It reports
// whether the task got a worker.
func (p *Pool) submit(weight float64, f func(context.Context) error, block bool, fn string) bool {
	if f == nil {
		panic("pool: " + fn + " called with a nil function")
	}
	if p.waited.Load() {
		panic("pool: " + fn + " called after Wait returned")
	}
	if !p.reserve(block) {
		if block {
			p.submitted.Add(1)
			p.skip(nil)
		}
		return false
	}
	p.launch(weight, f)
	return true
}

// reserve takes a worker, waiting for one if block is set. It fails if the
// pool's context has ended, even when a worker is free.
func (p *Pool) reserve(block bool) bool { return p.workers.take(block) }

// launch starts f on the worker that the caller has reserved. A task with
// no one queued before it that the limiter admits at once starts directly;
// any other takes a ticket now, so that it reaches the limiter in
// submission order.
func (p *Pool) launch(weight float64, f func(context.Context) error) {
	id := p.submitted.Add(1) - 1
	p.wg.Add(1)
	if p.try != nil && p.turns.idle() && p.try.TryAcquire(weight) {
		p.admitted.Add(1)
		go p.run(id, f)
		return
	}
	go p.queued(id, p.turns.take(), weight, f)
}

func (p *Pool) isDone() bool { return closed(p.done) }

// queued waits for ticket t's turn, acquires weight from the limiter and
// runs f. A task whose turn comes after the context ended does not call
// the limiter, so it takes nothing from it.
func (p *Pool) queued(id int64, t uint64, weight float64, f func(context.Context) error) {
	p.turns.wait(t)
	panicked, err := p.acquire(weight)
	if err == nil && !panicked {
		p.turns.pass(t)
		p.admitted.Add(1)
		p.run(id, f)
		return
	}
	defer p.wg.Done()
	switch {
	case panicked:
		p.admitted.Add(1)
		p.failed.Add(1)
	// A limiter reports a deadline it cannot meet before the deadline
	// comes; the task is as unstartable as if the context had ended.
	case p.isDone() || errors.Is(err, context.DeadlineExceeded):
		p.skip(err)
	default:
		// Record the failure, cancelling the pool, before the next
		// ticket's turn, so that it does not reach the limiter.
		p.admitted.Add(1)
		p.finish(id, err)
	}
	p.turns.pass(t)
	p.workers.give()
}

// acquire takes weight from the limiter, unless the context has ended. A
// panic in the limiter is treated as the task's own.
func (p *Pool) acquire(weight float64) (panicked bool, err error) {
	if p.isDone() {
		return false, p.ctx.Err()
	}
	defer func() {
		if r := recover(); r != nil {
			p.recovered(r)
			panicked = true
		}
	}()
	return false, p.lim.Acquire(p.ctx, weight)
}

// run calls f and records the outcome, then releases the worker: in that
// order, so that a failure has cancelled the pool before a submitter
// blocked for a worker gets this one. run ends the task's part in p.wg.
func (p *Pool) run(id int64, f func(context.Context) error) {
	returned := false
	defer func() {
		if !returned {
			if r := recover(); r != nil {
				p.failed.Add(1)
				p.recovered(r)
			} else {
				// runtime.Goexit, which goes on to end the goroutine.
				p.finish(id, errGoexit)
			}
		}
		p.workers.give()
		p.wg.Done()
	}()
	err := f(p.ctx)
	returned = true
	p.finish(id, err)
}

// recovered keeps the first panic, with the stack of the goroutine that is
// still panicking, for Wait to raise, and cancels the pool.
func (p *Pool) recovered(r any) {
	pe := &PanicError{Value: r, Stack: debug.Stack()}
	p.mu.Lock()
	if p.panicked == nil {
		p.panicked = pe
	}
	p.mu.Unlock()
	p.cancel(pe)
}

// finish counts a task's result. By default the first error cancels the
// pool, with the error as the context's cause; with CollectErrors errors
// are kept, in any order, for Wait to sort.
func (p *Pool) finish(id int64, err error) {
	if err == nil {
		p.succeeded.Add(1)
		return
	}
	p.failed.Add(1)
	p.mu.Lock()
	if p.collect {
		p.errs = append(p.errs, taskError{id, err})
	} else if p.first == nil {
		p.first = err
		p.cancel(err)
	}
	p.mu.Unlock()
}

// skip counts a task that will never start and keeps the first cause. A
// nil err stands for the context's cause.
func (p *Pool) skip(err error) {
	p.skipped.Add(1)
	p.noteStop(err)
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

// Wait blocks until every submitted task has returned or been skipped,
// cancels the pool's context, and returns:
//   - by default, the first error a task returned; or, if no task failed
//     but some never started because the context ended, the context's
//     cause; or nil.
//   - with CollectErrors, the errors of all the tasks that failed, in
//     submission order, followed by the context's cause if tasks were
//     skipped, joined with errors.Join; or nil.
//
// If a task panicked, Wait panics instead, in the caller's goroutine, with
// a *PanicError carrying the first panic's value and stack, once every
// other task has returned.
//
// Wait may be called more than once and returns (or panics with) the same
// each time. After Wait returns, nothing the pool started is running, and
// submitting panics.
func (p *Pool) Wait() error {
	p.wg.Wait()
	p.waited.Store(true)
	p.workers.close()
	p.cancel(context.Canceled)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.panicked != nil {
		panic(p.panicked)
	}
	if p.collect {
		slices.SortFunc(p.errs, func(a, b taskError) int { return cmp.Compare(a.id, b.id) })
		errs := make([]error, 0, len(p.errs)+1)
		for _, e := range p.errs {
			errs = append(errs, e.err)
		}
		if p.skipCause != nil {
			errs = append(errs, p.skipCause)
		}
		return errors.Join(errs...)
	}
	if p.first != nil {
		return p.first
	}
	return p.skipCause
}
