package pool

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/dripgo/drip/internal/usable"
	"github.com/dripgo/drip/ratelimit"
)

// A Pool runs tasks as the package documentation describes. Its methods are
// safe for concurrent use; a task may submit to its own pool with TryGo.
type Pool struct {
	lim     ratelimit.Acquirer
	try     tryAcquirer // lim, if it can admit without waiting
	workers int
	collect bool

	// g runs the tasks; its SetLimit is the workers. Each task records its
	// outcome, cancelling ctx if that stops the pool, before it returns to
	// g and so before g gives its worker to anyone (TestNoStartAfterFailure).
	g *errgroup.Group

	// ctx is derived from g's context, so that Wait cancels it; the pool
	// cancels it itself too, as soon as an outcome stops the pool, with that
	// outcome as the cause.
	ctx    context.Context
	done   <-chan struct{}
	cancel context.CancelCauseFunc

	// A submission takes the submit lock, then a ticket from turns, then a
	// worker from g; with try, it may then admit its task itself. Each piece
	// is there because a test fails without it, or a benchmark shows what
	// it buys:
	//
	//   - submitting lets one submitter at a time take a ticket and a
	//     worker, so that tickets go out in the order workers are given (a
	//     ticket holder waiting for a worker that later tickets hold while
	//     they wait for its turn would deadlock), and TryGo gives up while
	//     another call submits (TestTryGoWhileSubmitting).
	//   - turns lets the tasks that wait reach the limiter one at a time, in
	//     ticket order (TestStartOrder; TestDripSchedule counts the callers
	//     in the limiter).
	//   - try: see tryAcquirer.
	submitting submitLock
	turns      turnstile

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

	// tryPanic is the task whose TryAcquire, called by its submitter,
	// panicked: there is at most one, since the panic stops the pool and
	// a stopped pool calls no limiter.
	tryPanic atomic.Pointer[tryPanic]

	mu        sync.Mutex
	first     error       // the first error, without CollectErrors
	errs      []taskError // with CollectErrors
	skipCause error       // why the first skipped task was skipped
	panicked  *PanicError // the first panic
}

// tryAcquirer is the non-blocking admission that *ratelimit.Limiter and
// *ratelimit.Window offer. With it, a submitter admits its own task when no
// task waits before it, holding the task's turn meanwhile so that the
// task's goroutine waits for the outcome (TestTryGoWhileSubmitting fails
// without the hold). BenchmarkPoolTask in bench/ shows what this saves over
// the goroutine taking its turn: impl=drip against impl=drip-acquire-only.
type tryAcquirer interface {
	TryAcquire(amount float64) bool
}

// taskError is an error kept for CollectErrors, with the task's submission
// number, by which Wait orders them.
type taskError struct {
	id  int64
	err error
}

// New returns a pool on errgroup.WithContext(ctx) with SetLimit(workers),
// whose tasks take their weight from lim, and the context they receive. It
// panics, naming lim, if lim is nil or not made by its constructor.
func New(ctx context.Context, lim ratelimit.Acquirer, opts ...Option) (*Pool, context.Context) {
	usable.Check("pool: New", lim, true)
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
	}
	p.try, _ = lim.(tryAcquirer)
	return p, ctx
}

// Go submits f as a task of weight 1. It is shorthand for GoWeighted(1, f).
func (p *Pool) Go(f func(ctx context.Context) error) {
	p.submit(1, f, true, "Go")
}

// GoWeighted submits f as a task of the given weight, blocking until it has
// a worker (not for the limiter). If the pool has stopped, the task is
// skipped; a call waiting for a worker then waits, as errgroup's does, for a
// task to return. A weight the limiter refuses fails the task unrun. It
// panics if f is nil or Wait has returned.
func (p *Pool) GoWeighted(weight float64, f func(ctx context.Context) error) {
	p.submit(weight, f, true, "GoWeighted")
}

// TryGo is Go if that need not wait for a worker, and reports whether it
// submitted f: not if every worker is taken, the pool has stopped, or
// another call is submitting. It panics as GoWeighted does.
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
	// If no task waits before this one, hold its turn, so that its
	// goroutine waits while the submitter asks the limiter for it once it
	// has a worker (not before: TestAdmitAfterWorker).
	t := p.turns.take()
	holding := p.try != nil && p.turns.hold(t)
	task := func() error { return p.start(t, weight, f) }
	if block {
		p.g.Go(task)
	} else if !p.g.TryGo(task) {
		p.turns.untake(t, holding)
		return false
	}
	p.submitted.Add(1)
	if holding {
		exited := true
		defer func() {
			switch {
			case !exited:
			case p.tryPanicked(t):
				// TryAcquire panicked, and went on with a runtime.Goexit
				// it had called before: admit counted the task failed,
				// and its goroutine must find it so
				// (TestTryAcquireGoexitThenPanic).
				p.turns.passHeld(t)
			default:
				// TryAcquire called runtime.Goexit, which ends the
				// submitter's goroutine: the task's own goroutine asks the
				// limiter instead (TestPoolLimiterGoexit).
				p.turns.release(t)
			}
		}()
		admitted, panicked := false, false
		if !p.isDone() {
			admitted, panicked = p.admit(t, weight)
		}
		exited = false
		switch {
		case admitted:
			p.admitted.Add(1)
			p.turns.passHeld(t)
		case panicked:
			// The task's goroutine finds its turn passed and tryPanic
			// naming it: it fails without running.
			p.turns.passHeld(t)
		default:
			p.turns.release(t)
		}
	}
	return true
}

// A tryPanic is the ticket of a task whose TryAcquire panicked, and the
// panic.
type tryPanic struct {
	t  uint64
	pe *PanicError
}

// tryPanicked reports whether ticket t's TryAcquire panicked.
func (p *Pool) tryPanicked(t uint64) bool {
	tp := p.tryPanic.Load()
	return tp != nil && tp.t == t
}

// admit reports whether the limiter admits weight for ticket t at once. A
// panic in it fails the task as one in Acquire does, and stops the pool.
func (p *Pool) admit(t uint64, weight float64) (ok, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			p.tryPanic.Store(&tryPanic{t, p.recordPanic(r, true)})
			p.admitted.Add(1)
			p.failed.Add(1)
			ok, panicked = false, true
		}
	}()
	return p.try.TryAcquire(weight), false
}

// Wait waits for every task, cancels the pool's context, and returns the
// first task's error, else why tasks were skipped, else nil; with
// CollectErrors, every task's error in submission order, then why tasks were
// skipped, joined. If a task panicked, Wait panics with a *PanicError once
// the others have returned. Called again, it does the same. After it,
// nothing the pool started runs, and submitting panics.
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
