package pool_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/pool"
	"github.com/dripgo/drip/ratelimit"
)

// TestCancelMidRun cancels the parent context while two tasks run, three
// wait for the limiter and a sixth Go blocks for a worker. The waiting
// tasks never start and take nothing from the limiter, the blocked Go
// returns once they have given their workers back, its task skipped, and
// Wait reports the cancellation's cause.
func TestCancelMidRun(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(2, 2*time.Second, ratelimit.WithClock(c))
		parent, cancel := context.WithCancelCause(context.Background())
		p, _ := pool.New(parent, lim, pool.Workers(5))
		var running, late atomic.Int64
		p.Go(blockUntilDone(&running))
		p.Go(blockUntilDone(&running))
		for range 3 {
			p.Go(blockUntilDone(&late))
		}
		sixth := make(chan struct{})
		go func() {
			defer close(sixth)
			p.Go(blockUntilDone(&late))
		}()

		c.AdvanceTo(t, 500*ms)
		want := pool.Stats{Submitted: 5, Waiting: 3, Running: 2}
		if got := p.Stats(); got != want {
			t.Errorf("before cancel: Stats() = %+v, want %+v", got, want)
		}
		if got := lim.Level(); got != 1.5 {
			t.Fatalf("before cancel: level %v, want 1.5", got)
		}
		stop := errors.New("shutting down")
		cancel(stop)
		c.Settle()
		<-sixth
		if got := lim.Level(); got != 1.5 {
			t.Errorf("after cancel: level %v, want 1.5 (the skipped tasks took capacity)", got)
		}
		if got := lim.Waiting(); got != 0 {
			t.Errorf("after cancel: %d callers still queued in the limiter", got)
		}

		if err := p.Wait(); err != stop {
			t.Errorf("Wait() = %v, want the cause %v", err, stop)
		}
		c.AdvanceTo(t, 10*time.Second)
		if n := late.Load(); n != 0 {
			t.Errorf("%d tasks started after the context ended", n)
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 6, Done: 2, Skipped: 4}); got != want {
			t.Errorf("after Wait: Stats() = %+v, want %+v", got, want)
		}
		checkNoLeaks(t)
	})
}

// TestCancelWhileGoBlocked checks errgroup's rule for a Go that waits for
// a worker when the context ends: it goes on waiting until a worker is
// free, here when a task that does not watch its context returns, and its
// task is then skipped, taking nothing from the limiter.
func TestCancelWhileGoBlocked(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		// Two units, draining one a second.
		lim := ratelimit.New(2, 2*time.Second, ratelimit.WithClock(c))
		parent, cancel := context.WithCancelCause(context.Background())
		p, _ := pool.New(parent, lim, pool.Workers(2))
		stubborn := func(context.Context) error {
			<-c.After(time.Second)
			return nil
		}
		p.Go(stubborn)
		p.Go(stubborn)
		var ran atomic.Bool
		returned := make(chan struct{})
		go func() {
			defer close(returned)
			p.Go(func(context.Context) error { ran.Store(true); return nil })
		}()
		c.AdvanceTo(t, 500*ms)
		stop := errors.New("stop")
		cancel(stop)
		c.Settle()
		select {
		case <-returned:
			t.Fatal("Go returned while both workers were running")
		default:
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 2, Running: 2}); got != want {
			t.Errorf("after cancel: Stats() = %+v, want %+v", got, want)
		}
		c.AdvanceTo(t, time.Second)
		select {
		case <-returned:
		default:
			t.Fatal("Go still blocked after a worker came free")
		}
		if err := p.Wait(); err != stop {
			t.Errorf("Wait() = %v, want %v", err, stop)
		}
		if ran.Load() {
			t.Error("the task submitted before the cancellation ran")
		}
		// The two tasks took both units at 0; one has drained since. The
		// skipped task could have had the other.
		if got := lim.Level(); got != 1 {
			t.Errorf("level at 1s: %v, want 1", got)
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 3, Done: 2, Skipped: 1}); got != want {
			t.Errorf("after Wait: Stats() = %+v, want %+v", got, want)
		}
		c.Settle()
		checkNoLeaks(t)
	})
}

// TestDeadlineUnmeetable gives the pool a context whose deadline falls
// before the limiter could admit the third task: the limiter says so at
// once, and the task is skipped without waiting for the deadline.
func TestDeadlineUnmeetable(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(2, 2*time.Second, ratelimit.WithClock(c))
		ctx, cancel := c.WithTimeout(context.Background(), 500*ms)
		defer cancel()
		p, _ := pool.New(ctx, lim, pool.Workers(3))
		var ran atomic.Int64
		for range 3 {
			p.Go(func(context.Context) error { ran.Add(1); return nil })
		}
		c.Settle()
		if got, want := p.Stats(), (pool.Stats{Submitted: 3, Done: 2, Skipped: 1}); got != want {
			t.Errorf("at 0: Stats() = %+v, want %+v", got, want)
		}
		err := p.Wait()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait() = %v, want an error that is context.DeadlineExceeded", err)
		}
		if c.Elapsed() != 0 || ran.Load() != 2 {
			t.Errorf("at %v, %d tasks ran; want 2 at 0", c.Elapsed(), ran.Load())
		}
	})
}

// TestFirstErrorCancels checks errgroup's contract: the first error
// cancels the pool's context, with the error as its cause, tasks blocked
// for a worker or for the limiter are skipped, and Wait returns that error.
func TestFirstErrorCancels(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(3, 3*time.Second, ratelimit.WithClock(c))
		p, pctx := pool.New(context.Background(), lim, pool.Workers(3))
		boom := errors.New("boom")
		var cause error
		var late atomic.Int64
		p.Go(func(ctx context.Context) error {
			select {
			case <-c.After(time.Second):
				return boom
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		p.Go(func(ctx context.Context) error {
			<-ctx.Done()
			cause = context.Cause(ctx)
			return ctx.Err()
		})
		p.Go(func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		})
		// The three workers are taken: these five block in Go.
		submitted := make(chan struct{})
		go func() {
			defer close(submitted)
			for range 5 {
				p.Go(blockUntilDone(&late))
			}
		}()
		c.AdvanceTo(t, 900*ms)
		if got, want := p.Stats(), (pool.Stats{Submitted: 3, Running: 3}); got != want {
			t.Errorf("at 0.9s: Stats() = %+v, want %+v", got, want)
		}
		c.AdvanceTo(t, time.Second)
		<-submitted
		if err := p.Wait(); err != boom {
			t.Errorf("Wait() = %v, want %v", err, boom)
		}
		if cause != boom {
			t.Errorf("context.Cause seen by a task = %v, want %v", cause, boom)
		}
		if pctx.Err() == nil {
			t.Error("the pool's context is not cancelled after Wait")
		}
		if late.Load() != 0 {
			t.Errorf("%d tasks started after the first error", late.Load())
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 8, Failed: 3, Skipped: 5}); got != want {
			t.Errorf("after Wait: Stats() = %+v, want %+v", got, want)
		}
		if got := lim.Level(); got != 2 {
			t.Errorf("level at 1s: %v, want 2 (three units, one drained)", got)
		}
	})
}

// TestCollectErrors checks that with CollectErrors a failure leaves the
// other tasks running, and that Wait joins every error in submission
// order although the tasks fail in the reverse order.
func TestCollectErrors(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(100, time.Second, ratelimit.WithClock(c))
		p, _ := pool.New(context.Background(), lim, pool.Workers(3), pool.CollectErrors())
		var errs []error
		var finished atomic.Int64
		go func() {
			for i := range 6 {
				err := fmt.Errorf("task %d failed", i)
				if i%2 == 0 {
					err = nil
				} else {
					errs = append(errs, err)
				}
				p.Go(func(ctx context.Context) error {
					defer finished.Add(1)
					select {
					case <-c.After(time.Duration(6-i) * 100 * ms):
						return err
					case <-ctx.Done():
						return ctx.Err()
					}
				})
			}
		}()
		advanceUntil(t, c, 5*time.Second, reached(&finished, 6))
		err := p.Wait()
		if err == nil {
			t.Fatal("Wait() = nil")
		}
		if got, want := err.Error(), "task 1 failed\ntask 3 failed\ntask 5 failed"; got != want {
			t.Errorf("Wait() = %q, want %q", got, want)
		}
		for _, e := range errs {
			if !errors.Is(err, e) {
				t.Errorf("errors.Is(Wait(), %v) = false", e)
			}
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 6, Done: 3, Failed: 3}); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
	})
}

// TestCollectErrorsCancelled checks that a cancelled parent still stops a
// collecting pool, and that Wait adds the cause once, after the tasks'
// errors, however many tasks were skipped.
func TestCollectErrorsCancelled(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		parent, cancel := context.WithCancel(context.Background())
		p, _ := pool.New(parent, lim, pool.Workers(4), pool.CollectErrors())
		bad := errors.New("bad")
		p.Go(func(context.Context) error { return bad })
		for range 3 {
			p.Go(func(context.Context) error { return nil })
		}
		c.AdvanceTo(t, 1500*ms)
		cancel()
		err := p.Wait()
		if got, want := err.Error(), "bad\ncontext canceled"; got != want {
			t.Errorf("Wait() = %q, want %q", got, want)
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 4, Done: 1, Failed: 1, Skipped: 2}); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
	})
}

type panicValue struct{ n int }

func (v panicValue) Error() string { return fmt.Sprintf("panic value %d", v.n) }

//go:noinline
func panicky(v any) { panic(v) }

// TestPanicReraised checks that a task's panic cancels the pool, and that
// Wait raises it in the caller, with the original value and the stack of
// the task, only after the other tasks have returned; in both error modes.
// By default the plain failure cancels the pool first, and the panic still
// wins over it.
func TestPanicReraised(t *testing.T) {
	for i, opts := range [][]pool.Option{nil, {pool.CollectErrors()}} {
		t.Run([]string{"first error", "collect"}[i], func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(100, time.Second, ratelimit.WithClock(c))
				p, _ := pool.New(context.Background(), lim, append(opts, pool.Workers(3))...)
				var otherDone atomic.Bool
				p.Go(func(ctx context.Context) error {
					<-ctx.Done()
					// Returning late shows that Wait waits for this task before
					// it raises the panic.
					<-c.After(time.Second)
					otherDone.Store(true)
					return nil
				})
				p.Go(func(context.Context) error {
					<-c.After(10 * ms)
					panicky(panicValue{7})
					return nil
				})
				p.Go(func(context.Context) error { return errors.New("plain failure") })

				var v any
				waited := make(chan struct{})
				go func() {
					defer close(waited)
					v, _ = waitPanic(p.Wait)
				}()
				c.Advance(10 * ms)
				select {
				case <-waited:
					t.Fatal("Wait returned before the other task did")
				default:
				}
				c.Advance(time.Second)
				<-waited
				if !otherDone.Load() {
					t.Error("Wait panicked before the other task returned")
				}
				pe, ok := v.(*pool.PanicError)
				if !ok {
					t.Fatalf("Wait panicked with %T %v, want *pool.PanicError", v, v)
				}
				if pe.Value != (panicValue{7}) {
					t.Errorf("panic value %v, want %v", pe.Value, panicValue{7})
				}
				if !strings.Contains(string(pe.Stack), "pool_test.panicky") {
					t.Errorf("panic stack does not show the panicking function:\n%s", pe.Stack)
				}
				if !errors.Is(pe, panicValue{7}) {
					t.Error("errors.Is does not see the panic value through PanicError")
				}
				if !strings.HasPrefix(pe.Error(), "pool: task panicked: panic value 7") || pe.Limiter {
					t.Errorf("PanicError.Error() = %q, Limiter %v: want the task's panic, naming the value", pe.Error(), pe.Limiter)
				}
				if got := p.Stats(); got.Failed != 2 || got.Done != 1 {
					t.Errorf("Stats() = %+v, want 2 failed and 1 done", got)
				}
				// Wait keeps raising the same panic.
				if v2, _ := waitPanic(p.Wait); v2 != v {
					t.Errorf("second Wait panicked with %v, want the same %v", v2, v)
				}
				checkNoLeaks(t)
			})
		})
	}
}

// TestMisuse checks that misuse panics at once, in the caller, with a
// message that says what was wrong.
func TestMisuse(t *testing.T) {
	lim := ratelimit.New(10, time.Second)
	ctx := context.Background()
	fn := func(context.Context) error { return nil }
	var nilLim *ratelimit.Limiter
	waited, _ := pool.New(ctx, lim)
	if err := waited.Wait(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"Workers(0)", func() { pool.Workers(0) }, "pool: Workers(0): a pool needs at least 1 worker"},
		{"Workers(-3)", func() { pool.Workers(-3) }, "pool: Workers(-3): a pool needs at least 1 worker"},
		{"nil limiter", func() { pool.New(ctx, nil) }, "pool: New: nil limiter"},
		{"nil *Limiter", func() { pool.New(ctx, nilLim) }, "pool: New: nil *ratelimit.Limiter"},
		{"Go(nil)", func() { p, _ := pool.New(ctx, lim); p.Go(nil) }, "pool: Go called with a nil function"},
		{"GoWeighted(nil)", func() { p, _ := pool.New(ctx, lim); p.GoWeighted(2, nil) }, "pool: GoWeighted called with a nil function"},
		{"TryGo(nil)", func() { p, _ := pool.New(ctx, lim); p.TryGo(nil) }, "pool: TryGo called with a nil function"},
		{"Go after Wait", func() { waited.Go(fn) }, "pool: Go called after Wait returned"},
		{"TryGo after Wait", func() { waited.TryGo(fn) }, "pool: TryGo called after Wait returned"},
		{"Map(nil)", func() { pool.Map[int, int](ctx, lim, []int{1}, nil) }, "pool: Map called with a nil function"},
		{"ForEach(nil)", func() { pool.ForEach[int](ctx, lim, func(func(int) bool) {}, nil) }, "pool: ForEach called with a nil function"},
	}
	for _, tt := range tests {
		v, _ := waitPanic(func() error { tt.call(); return nil })
		if v != tt.want {
			t.Errorf("%s panicked with %v, want %q", tt.name, v, tt.want)
		}
	}
	if got, want := waited.Stats(), (pool.Stats{}); got != want {
		t.Errorf("misuse changed Stats() to %+v", got)
	}
}

// TestTryGo checks that TryGo takes a free worker without blocking and
// refuses when none is free or the context has ended.
func TestTryGo(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		parent, cancel := context.WithCancel(context.Background())
		p, _ := pool.New(parent, lim, pool.Workers(2))
		var n atomic.Int64
		task := func(ctx context.Context) error {
			n.Add(1)
			select {
			case <-c.After(100 * ms):
			case <-ctx.Done():
			}
			return nil
		}
		for i := range 2 {
			if !p.TryGo(task) {
				t.Fatalf("TryGo %d refused with a free worker", i)
			}
		}
		// The second task waits a second for the limiter, holding a worker.
		if p.TryGo(task) {
			t.Error("TryGo accepted a task with both workers taken")
		}
		c.AdvanceTo(t, 100*ms)
		if !p.TryGo(task) {
			t.Error("TryGo refused with a worker free")
		}
		c.AdvanceTo(t, 2100*ms)
		if n.Load() != 3 {
			t.Errorf("%d tasks started, want 3", n.Load())
		}
		cancel()
		if p.TryGo(task) {
			t.Error("TryGo accepted a task after the context ended")
		}
		if err := p.Wait(); err != nil {
			t.Errorf("Wait() = %v, want nil: no task was skipped", err)
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 3, Done: 3}); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
	})
}

// gateLimiter holds TryAcquire until gate is closed, telling entered that
// it got there.
type gateLimiter struct {
	*ratelimit.Limiter
	entered chan struct{}
	gate    chan struct{}
}

func (l gateLimiter) TryAcquire(amount float64) bool {
	l.entered <- struct{}{}
	<-l.gate
	return l.Limiter.TryAcquire(amount)
}

// TestTryGoWhileSubmitting holds Go in the middle of a submission, after
// errgroup has started the task's goroutine and before Go has decided
// whether to admit the task itself. The task waits for that decision
// rather than run or queue for the limiter, TryGo gives up rather than
// wait although every other worker is free, and both succeed once Go is
// done.
func TestTryGoWhileSubmitting(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		inner := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		lim := gateLimiter{inner, make(chan struct{}, 2), make(chan struct{})}
		p, _ := pool.New(context.Background(), lim, pool.Workers(4))
		var n atomic.Int64
		task := func(context.Context) error { n.Add(1); return nil }
		submitted := make(chan struct{})
		go func() {
			defer close(submitted)
			p.Go(task)
		}()
		<-lim.entered
		c.Settle()
		if got, want := p.Stats(), (pool.Stats{Submitted: 1, Waiting: 1}); got != want || n.Load() != 0 {
			t.Errorf("while Go decides: Stats() = %+v with %d run, want %+v and none", got, n.Load(), want)
		}
		if got := inner.Waiting(); got != 0 {
			t.Errorf("while Go decides: %d callers queued in the limiter, want 0", got)
		}
		if p.TryGo(task) {
			t.Error("TryGo accepted a task while Go was submitting")
		}
		close(lim.gate)
		<-submitted
		if !p.TryGo(task) {
			t.Error("TryGo refused with every worker free and no one submitting")
		}
		if err := p.Wait(); err != nil || n.Load() != 2 {
			t.Errorf("Wait() = %v with %d tasks run, want nil and 2", err, n.Load())
		}
		if got := inner.Level(); got != 2 {
			t.Errorf("level %v, want 2: each task took one unit, once", got)
		}
		checkNoLeaks(t)
	})
}

// TestNestedGo checks that tasks may submit tasks to their own pool while
// the caller waits, and that Wait waits for those too.
func TestNestedGo(t *testing.T) {
	lim := ratelimit.New(1e6, time.Second)
	p, _ := pool.New(context.Background(), lim, pool.Workers(4))
	var n atomic.Int64
	var spawn func(depth int) func(context.Context) error
	spawn = func(depth int) func(context.Context) error {
		return func(ctx context.Context) error {
			n.Add(1)
			if depth == 0 {
				return nil
			}
			// TryGo, not Go: tasks that all block for a worker while each
			// holds one would wait forever. Without a worker, the task
			// does the work itself.
			if child := spawn(depth - 1); !p.TryGo(child) {
				return child(ctx)
			}
			return nil
		}
	}
	for range 10 {
		p.Go(spawn(5))
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 60 {
		t.Errorf("%d tasks ran, want 60", n.Load())
	}
}

// TestConcurrentSubmitters has several goroutines submit to one pool on
// the real clock with a limiter that does not bind, with a few weights,
// and checks the counts. It asserts no timing; it is here for -race.
func TestConcurrentSubmitters(t *testing.T) {
	lim := ratelimit.New(1e9, time.Second)
	p, _ := pool.New(context.Background(), lim, pool.Workers(3), pool.CollectErrors())
	var ran atomic.Int64
	var wg sync.WaitGroup
	const submitters, each = 4, 500
	for s := range submitters {
		wg.Go(func() {
			for i := range each {
				task := func(context.Context) error {
					ran.Add(1)
					if i%100 == 0 {
						return fmt.Errorf("submitter %d task %d", s, i)
					}
					return nil
				}
				switch i % 3 {
				case 0:
					p.Go(task)
				case 1:
					p.GoWeighted(float64(i%7), task)
				default:
					if !p.TryGo(task) {
						p.Stats()
						p.Go(task)
					}
				}
			}
		})
	}
	wg.Wait()
	err := p.Wait()
	if got := len(strings.Split(err.Error(), "\n")); got != submitters*each/100 {
		t.Errorf("Wait() joined %d errors, want %d", got, submitters*each/100)
	}
	want := pool.Stats{Submitted: submitters * each, Done: submitters*each - submitters*each/100, Failed: submitters * each / 100}
	if got := p.Stats(); got != want || ran.Load() != submitters*each {
		t.Errorf("Stats() = %+v with %d run, want %+v", got, ran.Load(), want)
	}
}

// TestSubmittersBlockDurably has two goroutines call Go on a pool whose
// only worker is busy: one waits for the worker, the other for its turn to
// submit. Both are durably blocked, so a synctest bubble (here the mocked
// clock's) can still settle and move time on; both tasks then run, one
// after the other.
func TestSubmittersBlockDurably(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		p, _ := pool.New(context.Background(), lim, pool.Workers(1))
		p.Go(func(context.Context) error {
			<-c.After(time.Second)
			return nil
		})
		var starts [2]time.Duration
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				p.Go(func(context.Context) error {
					starts[i] = c.Elapsed()
					<-c.After(time.Second)
					return nil
				})
			})
		}
		c.Settle()
		if got, want := p.Stats(), (pool.Stats{Submitted: 1, Running: 1}); got != want {
			t.Errorf("with two calls to Go blocked: Stats() = %+v, want %+v", got, want)
		}
		c.AdvanceTo(t, 3*time.Second)
		wg.Wait()
		if err := p.Wait(); err != nil {
			t.Fatal(err)
		}
		if slices.Sort(starts[:]); starts != [2]time.Duration{time.Second, 2 * time.Second} {
			t.Errorf("the two tasks started at %v, want 1s and 2s", starts)
		}
	})
}

// TestNoStartAfterFailure checks that once a task has failed, a task that
// gets a worker after it never starts: the failure cancels the pool before
// it gives its worker back. The limiter never binds, so the second task
// would otherwise start on the spot.
func TestNoStartAfterFailure(t *testing.T) {
	lim := ratelimit.New(1e9, time.Second)
	for range 200 {
		p, _ := pool.New(context.Background(), lim, pool.Workers(1))
		bad := errors.New("bad")
		var ran atomic.Bool
		p.Go(func(context.Context) error { return bad })
		p.Go(func(context.Context) error { ran.Store(true); return nil })
		if err := p.Wait(); err != bad || ran.Load() {
			t.Fatalf("Wait() = %v and the second task ran: %v", err, ran.Load())
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 2, Failed: 1, Skipped: 1}); got != want {
			t.Fatalf("Stats() = %+v, want %+v", got, want)
		}
	}
}

// TestWaitTwice checks that Wait may be called again, from several
// goroutines, and returns the same.
func TestWaitTwice(t *testing.T) {
	for _, fail := range []bool{false, true} {
		lim := ratelimit.New(10, time.Second)
		p, _ := pool.New(context.Background(), lim, pool.Workers(2))
		bad := errors.New("bad")
		p.Go(func(context.Context) error {
			if fail {
				return bad
			}
			return nil
		})
		want := error(nil)
		if fail {
			want = bad
		}
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if err := p.Wait(); err != want {
					t.Errorf("Wait() = %v, want %v", err, want)
				}
			})
		}
		wg.Wait()
		if err := p.Wait(); err != want {
			t.Errorf("Wait() again = %v, want %v", err, want)
		}
	}
}

// panickyLimiter panics in Acquire.
type panickyLimiter struct{}

func (panickyLimiter) Acquire(context.Context, float64) error { panic("limiter broke") }

// panickyTry panics in TryAcquire, which the pool calls when it submits.
type panickyTry struct{ *ratelimit.Limiter }

func (panickyTry) TryAcquire(float64) bool { panic("limiter broke") }

// TestLimiterPanics checks that a limiter's panic is handled as a task's:
// raised again from Wait, not from Go, with no task run and nothing left
// running. A panic in Acquire, or in TryAcquire, which Go calls itself,
// fails its task, and the tasks behind it are skipped.
func TestLimiterPanics(t *testing.T) {
	for _, tt := range []struct {
		name string
		lim  func(c *clocktest.Clock) ratelimit.Acquirer
		want pool.Stats
	}{
		{"Acquire", func(*clocktest.Clock) ratelimit.Acquirer { return panickyLimiter{} }, pool.Stats{Submitted: 3, Failed: 1, Skipped: 2}},
		{"TryAcquire", func(c *clocktest.Clock) ratelimit.Acquirer {
			return panickyTry{ratelimit.New(10, time.Second, ratelimit.WithClock(c))}
		}, pool.Stats{Submitted: 3, Failed: 1, Skipped: 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				p, _ := pool.New(context.Background(), tt.lim(c), pool.Workers(2))
				var ran atomic.Int64
				for range 3 {
					p.Go(func(context.Context) error { ran.Add(1); return nil })
				}
				v, _ := waitPanic(p.Wait)
				if pe, ok := v.(*pool.PanicError); !ok || pe.Value != "limiter broke" || !pe.Limiter ||
					!strings.HasPrefix(pe.Error(), "pool: the limiter panicked: limiter broke") {
					t.Errorf("Wait panicked with %v, want a *pool.PanicError with the limiter's value, saying the limiter panicked", v)
				}
				if ran.Load() != 0 {
					t.Errorf("%d tasks ran", ran.Load())
				}
				if got := p.Stats(); got != tt.want {
					t.Errorf("Stats() = %+v, want %+v", got, tt.want)
				}
				c.Settle()
				checkNoLeaks(t)
			})
		})
	}
}

// TestGoexit checks that a task that calls runtime.Goexit counts as failed
// and leaves the pool working.
func TestGoexit(t *testing.T) {
	lim := ratelimit.New(1e6, time.Second)
	p, _ := pool.New(context.Background(), lim, pool.Workers(1))
	p.Go(func(context.Context) error { runtime.Goexit(); return nil })
	err := p.Wait()
	if err == nil || !strings.Contains(err.Error(), "runtime.Goexit") {
		t.Errorf("Wait() = %v, want an error naming runtime.Goexit", err)
	}
	if got, want := p.Stats(), (pool.Stats{Submitted: 1, Failed: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}
