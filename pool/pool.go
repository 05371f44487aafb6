package pool

import (
	"cmp"
	"context"
	"errors"
	"math"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

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
	workers int
	collect bool

	// g runs the tasks: its SetLimit is the workers. Each task is a wrapper
	// that records the task's outcome, cancels ctx itself when the outcome
	// stops the pool, and hands errgroup the error that stopped it.
	g *errgroup.Group

	// ctx is derived from errgroup's context, so that Wait cancels it, but
	// the pool cancels it too: a task that fails before it runs must stop
	// the tasks behind it before it passes its turn, which errgroup only
	// learns of once the task's goroutine returns; a task may end by
	// runtime.Goexit, which returns nothing to errgroup; and cancelling
	// while recording the first error keeps the context's cause and Wait's
	// result the same error.
	ctx    context.Context
	done   <-chan struct{}
	cancel context.CancelCauseFunc

	// submitting is held from a task's place in the submission order (its
	// ticket, which is also its number) until the submitter has decided
	// how the task reaches the limiter. A ticket holder blocked in g.Go
	// would otherwise deadlock with later tickets holding every worker
	// while they wait for its turn.
	submitting submitLock
	turns      turnstile

	// decided counts the tickets whose submitter has decided, after g.Go
	// gave the task its worker, whether to admit the task itself. A task's
	// goroutine, which errgroup may start before that, waits for it on
	// decision; waiting counts the goroutines that do, which is rare.
	decided  atomic.Uint64
	waiting  atomic.Int64
	decideMu sync.Mutex
	decision *sync.Cond

	// items, set by ForEach only, holds a token for each item handed to a
	// task that has not finished with it.
	items chan struct{}

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
// start, and the context the tasks receive. The pool runs its tasks on an
// errgroup.Group made with errgroup.WithContext(ctx) and limited with
// SetLimit to the number of workers; the context it returns is derived
// from the group's. It is cancelled when a task fails (unless
// CollectErrors is given), when a task panics, and when Wait returns.
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
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.workers)
	ctx, cancel := context.WithCancelCause(gctx)
	p := &Pool{
		lim:        lim,
		workers:    cfg.workers,
		collect:    cfg.collect,
		g:          g,
		ctx:        ctx,
		done:       ctx.Done(),
		cancel:     cancel,
		submitting: newSubmitLock(),
		// One ticket more than the workers: the one a submitter holds
		// while g.Go waits for a worker (without overflowing for
		// Workers(math.MaxInt), which no pool can fill anyway).
		turns: newTurnstile(min(cfg.workers, math.MaxInt-1) + 1),
	}
	p.decision = sync.NewCond(&p.decideMu)
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
// task has a worker, without waiting for the limiter. Calls from several
// goroutines take their places in the submission order one at a time:
// while one waits for a worker, the others wait behind it.
//
// If the pool's context has ended, GoWeighted returns at once and the task
// is skipped: it never runs, and Wait reports the context's cause. If the
// context ends while GoWeighted waits for a worker, it goes on waiting, as
// errgroup's Go does, until a worker is free (running tasks see their
// context end, and normally return at once); the task is then skipped. A
// weight the limiter refuses (for a *ratelimit.Limiter, one above its
// capacity, or negative) makes the task fail with the limiter's error
// without running.
//
// GoWeighted panics if f is nil, or if Wait has returned.
func (p *Pool) GoWeighted(weight float64, f func(ctx context.Context) error) {
	p.submit(weight, f, true, "GoWeighted")
}

// TryGo submits f as a task of weight 1 if a worker is free, without
// waiting for one, and reports whether it did. It reports false if every
// worker is taken, if the pool's context has ended, or if another
// goroutine is submitting to the pool at that moment. The task may still
// wait for the limiter once it has its worker.
//
// TryGo panics if f is nil, or if Wait has returned.
func (p *Pool) TryGo(f func(ctx context.Context) error) bool {
	return p.submit(1, f, false, "TryGo")
}

// submit is Go, GoWeighted and TryGo (which does not block). It reports
// whether the task was handed to errgroup.
func (p *Pool) submit(weight float64, f func(context.Context) error, block bool, fn string) bool {
	if f == nil {
		panic("pool: " + fn + " called with a nil function")
	}
	if p.waited.Load() {
		panic("pool: " + fn + " called after Wait returned")
	}
	if block {
		p.submitting.lock()
	} else if !p.submitting.tryLock() {
		return false
	}
	defer p.submitting.unlock()

	if p.isDone() {
		if block {
			p.submitted.Add(1)
			p.skip(nil)
		}
		return false
	}
	t := p.turns.take()
	task := func() error { return p.start(t, weight, f) }
	if block {
		p.g.Go(task)
	} else if !p.g.TryGo(task) {
		p.turns.untake()
		return false
	}
	// The task has its worker, and its goroutine waits for what follows.
	// A task with no one queued before it that the limiter admits at once
	// is admitted here, and its turn passed for it; any other reaches the
	// limiter from its goroutine, in its turn. Admitting only now, not
	// before g.Go, keeps a task from taking capacity while it waits for a
	// worker.
	p.submitted.Add(1)
	if p.try != nil && p.turns.head(t) && !p.isDone() && p.admit(weight) {
		p.admitted.Add(1)
		p.turns.passLast(t)
	}
	p.decide(t)
	return true
}

// admit reports whether the limiter admits weight at once. A panic in it
// stops the pool as one in Acquire does, and the task, which never
// started, is skipped; without the recover, the task's goroutine would
// wait for a decision that never came.
func (p *Pool) admit(weight float64) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			p.recordPanic(r)
		}
	}()
	return p.try.TryAcquire(weight)
}

// decide records that ticket t's submitter is done with it, and wakes its
// goroutine if it is waiting.
func (p *Pool) decide(t uint64) {
	p.decided.Store(t + 1)
	// A goroutine that counts itself waiting before it rereads decided
	// either sees the store above or is seen here.
	if p.waiting.Load() > 0 {
		p.decideMu.Lock()
		p.decision.Broadcast()
		p.decideMu.Unlock()
	}
}

// start is the task with ticket t, as errgroup runs it: once its submitter
// has decided, it runs f if the submitter admitted it, and otherwise
// queues for the limiter. It returns the error to hand errgroup.
func (p *Pool) start(t uint64, weight float64, f func(context.Context) error) error {
	if p.decided.Load() <= t {
		p.decideMu.Lock()
		p.waiting.Add(1)
		for p.decided.Load() <= t {
			p.decision.Wait()
		}
		p.waiting.Add(-1)
		p.decideMu.Unlock()
	}
	// Only the holder of a turn passes it: if t's has passed, the
	// submitter held it and admitted the task.
	if p.turns.passed(t) {
		return p.run(int64(t), f)
	}
	return p.queued(t, weight, f)
}

func (p *Pool) isDone() bool { return closed(p.done) }

// queued waits for ticket t's turn, acquires weight from the limiter and
// runs f. A task whose turn comes after the context ended does not call
// the limiter, so it takes nothing from it. It returns the error to hand
// errgroup.
func (p *Pool) queued(t uint64, weight float64, f func(context.Context) error) error {
	id := int64(t)
	p.turns.wait(t)
	panicked, err := p.acquire(weight)
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
		// Record the failure, cancelling the pool, before the next
		// ticket's turn, so that it does not reach the limiter.
		p.admitted.Add(1)
		stop = p.finish(id, err)
	}
	p.turns.pass(t)
	p.release()
	return stop
}

// acquire takes weight from the limiter, unless the context has ended. A
// panic in the limiter is treated as the task's own: it is recorded, and
// returned as err.
func (p *Pool) acquire(weight float64) (panicked bool, err error) {
	if p.isDone() {
		return false, p.ctx.Err()
	}
	defer func() {
		if r := recover(); r != nil {
			panicked, err = true, p.recordPanic(r)
			p.admitted.Add(1)
			p.failed.Add(1)
		}
	}()
	return false, p.lim.Acquire(p.ctx, weight)
}

// run calls f and records the outcome, which cancels the pool if it stops
// it, and returns the error to hand errgroup: recording comes first, so
// that a failure has cancelled the pool before errgroup gives the worker
// to a waiting submitter.
func (p *Pool) run(id int64, f func(context.Context) error) (stop error) {
	returned := false
	defer func() {
		if !returned {
			if r := recover(); r != nil {
				stop = p.recordPanic(r)
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
// is still panicking, for Wait to raise, and cancels the pool. It returns
// the panic as an error for errgroup.
func (p *Pool) recordPanic(r any) error {
	pe := &PanicError{Value: r, Stack: debug.Stack()}
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

// Wait blocks until every submitted task has returned or been skipped, as
// errgroup's Wait does, cancels the pool's context, and returns:
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
	// errgroup's Wait cancels its context, and so the pool's. Its error is
	// one the pool has recorded, in an order the pool keeps itself.
	_ = p.g.Wait()
	p.waited.Store(true)
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
