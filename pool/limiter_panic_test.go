package pool_test

// A limiter that panics, in TryAcquire (which the submitter calls, holding
// its task's turn) or in Acquire: the task fails unrun, counted once, Wait
// panics with a *PanicError whose Limiter is true, and nothing hangs or is
// left running, also beside a task's own panic, with TryGo, CollectErrors,
// ForEach and Map.
//
// TestTryAcquireGoexitThenPanic and TestAcquireGoexitThenPanic: a limiter
// that calls runtime.Goexit and then panics in one of its deferred calls
// (a fake limiter's t.FailNow with a cleanup that panics). The pool
// recovers the panic and counts the task failed, and Go then resumes the
// Goexit: the task was counted a second time (skipped, or failed again).

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/pool"
)

// scriptedLim is a limiter whose Acquire and TryAcquire are given by the test.
// Acquire admits at once if acq is nil.
type scriptedLim struct {
	acq func(ctx context.Context) error
	try func() bool
}

func (l *scriptedLim) Acquire(ctx context.Context, _ float64) error {
	if l.acq == nil {
		return ctx.Err()
	}
	return l.acq(ctx)
}

func (l *scriptedLim) TryAcquire(float64) bool { return l.try() }

// limiterPanicked checks that v is the limiter's *PanicError with value
// want.
func limiterPanicked(t *testing.T, v any, want any, limiter bool) {
	t.Helper()
	pe, ok := v.(*pool.PanicError)
	if !ok || pe.Value != want || pe.Limiter != limiter {
		t.Errorf("Wait panicked with %#v, want a *pool.PanicError of %v with Limiter %v", v, want, limiter)
	}
}

// TestTryAcquireGoexitThenPanic: TryAcquire calls runtime.Goexit, and
// a deferred call in it panics. The pool recovers the panic, and the
// goroutine still ends (Go resumes a Goexit after recovering a panic raised
// during it). The task must be counted once.
func TestTryAcquireGoexitThenPanic(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := &scriptedLim{try: func() bool {
			defer func() { panic("cleanup broke") }()
			runtime.Goexit()
			return false
		}}
		p, _ := pool.New(context.Background(), lim, pool.Workers(2))
		var ran atomic.Int64
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			p.Go(func(context.Context) error { ran.Add(1); return nil })
		}()
		<-exited
		v, _ := waitPanic(p.Wait)
		limiterPanicked(t, v, "cleanup broke", true)
		if ran.Load() != 0 {
			t.Errorf("%d tasks ran", ran.Load())
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 1, Failed: 1}); got != want {
			t.Errorf("one task, whose TryAcquire called Goexit then panicked: Stats() = %+v, want %+v", got, want)
		}
		c.Settle()
		checkNoLeaks(t)
	})
}

// TestAcquireGoexitThenPanic is the same limiter in Acquire,
// on the task's own goroutine (pre-existing: not from 30b59ea).
func TestAcquireGoexitThenPanic(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := acquireOnly{&scriptedLim{acq: func(context.Context) error {
			defer func() { panic("cleanup broke") }()
			runtime.Goexit()
			return nil
		}}}
		p, _ := pool.New(context.Background(), lim, pool.Workers(2))
		var ran atomic.Int64
		p.Go(func(context.Context) error { ran.Add(1); return nil })
		_, _ = waitPanic(p.Wait)
		if ran.Load() != 0 {
			t.Errorf("%d tasks ran", ran.Load())
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 1, Failed: 1}); got != want {
			t.Errorf("one task, whose Acquire called Goexit then panicked: Stats() = %+v, want %+v", got, want)
		}
		c.Settle()
		checkNoLeaks(t)
	})
}

// TestLimiterPanicBesideTaskPanic orders a running task's panic and the next task's
// TryAcquire panic both ways. The second task's goroutine is parked on its
// held turn while TryAcquire waits at a gate. Wait raises the first panic
// recorded, with the right Limiter flag; both tasks fail, the second
// unrun.
func TestLimiterPanicBesideTaskPanic(t *testing.T) {
	for _, first := range []string{"task", "limiter"} {
		t.Run(first+" first", func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				var calls atomic.Int64
				gate := make(chan struct{})
				lim := &scriptedLim{try: func() bool {
					if calls.Add(1) == 1 {
						return true
					}
					<-gate
					panic("try broke")
				}}
				p, _ := pool.New(context.Background(), lim, pool.Workers(3))
				boom := make(chan struct{})
				var ranB atomic.Int64
				p.Go(func(context.Context) error {
					<-boom
					panic("task broke")
				})
				submitted := make(chan struct{})
				go func() {
					defer close(submitted)
					p.Go(func(context.Context) error { ranB.Add(1); return nil })
				}()
				c.Settle() // B's submitter at the gate, B's goroutine parked
				if first == "task" {
					close(boom)
					c.Settle()
					close(gate)
				} else {
					close(gate)
					c.Settle()
					close(boom)
				}
				<-submitted
				v, _ := waitPanic(p.Wait)
				if first == "task" {
					limiterPanicked(t, v, "task broke", false)
				} else {
					limiterPanicked(t, v, "try broke", true)
				}
				if ranB.Load() != 0 {
					t.Error("the task whose TryAcquire panicked ran")
				}
				if got, want := p.Stats(), (pool.Stats{Submitted: 2, Failed: 2}); got != want {
					t.Errorf("Stats() = %+v, want %+v", got, want)
				}
				if calls.Load() != 2 {
					t.Errorf("TryAcquire called %d times, want 2", calls.Load())
				}
				c.Settle()
				checkNoLeaks(t)
			})
		})
	}
}

// TestTryGoLimiterPanic: TryGo's TryAcquire panics. TryGo reports the
// task submitted, does not panic, and the task fails unrun; a later Go is
// skipped and a later TryGo refused, without reaching the limiter.
func TestTryGoLimiterPanic(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		var calls, acquires atomic.Int64
		lim := &scriptedLim{
			try: func() bool { calls.Add(1); panic("try broke") },
			acq: func(ctx context.Context) error { acquires.Add(1); return nil },
		}
		p, _ := pool.New(context.Background(), lim, pool.Workers(2))
		var ran atomic.Int64
		task := func(context.Context) error { ran.Add(1); return nil }
		if !p.TryGo(task) {
			t.Error("TryGo reported its task not submitted although TryAcquire was called for it")
		}
		c.Settle()
		if p.TryGo(task) {
			t.Error("TryGo accepted a task after the limiter's panic stopped the pool")
		}
		p.Go(task)
		v, _ := waitPanic(p.Wait)
		limiterPanicked(t, v, "try broke", true)
		if ran.Load() != 0 || calls.Load() != 1 || acquires.Load() != 0 {
			t.Errorf("%d tasks ran, TryAcquire called %d times, Acquire %d; want 0, 1, 0", ran.Load(), calls.Load(), acquires.Load())
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 2, Failed: 1, Skipped: 1}); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
		c.Settle()
		checkNoLeaks(t)
	})
}

// TestLimiterPanicCollectErrors: with CollectErrors, a task's error does
// not stop the pool, but the next task's TryAcquire panic does: it fails,
// the one after is skipped, and Wait panics with the limiter's panic.
func TestLimiterPanicCollectErrors(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		var calls atomic.Int64
		lim := &scriptedLim{try: func() bool {
			if calls.Add(1) == 2 {
				panic("try broke")
			}
			return true
		}}
		p, _ := pool.New(context.Background(), lim, pool.Workers(3), pool.CollectErrors())
		var ran atomic.Int64
		p.Go(func(context.Context) error { ran.Add(1); return errors.New("a failed") })
		c.Settle()
		p.Go(func(context.Context) error { ran.Add(10); return nil })
		p.Go(func(context.Context) error { ran.Add(100); return nil })
		v, _ := waitPanic(p.Wait)
		limiterPanicked(t, v, "try broke", true)
		if ran.Load() != 1 || calls.Load() != 2 {
			t.Errorf("ran %d (want 1: only the first task), TryAcquire called %d times (want 2)", ran.Load(), calls.Load())
		}
		if got, want := p.Stats(), (pool.Stats{Submitted: 3, Failed: 2, Skipped: 1}); got != want {
			t.Errorf("Stats() = %+v, want %+v", got, want)
		}
		c.Settle()
		checkNoLeaks(t)
	})
}

// TestForEachLimiterPanic: ForEach on 1 or 2 workers, whose TryAcquire
// panics for the fourth item. Items 0 to 2 run, nothing after; ForEach
// panics with the limiter's panic, and nothing is left running: an item
// token given back twice would block the task's goroutine for ever, one
// never given back would block the next pull.
func TestForEachLimiterPanic(t *testing.T) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprint(workers, " workers"), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				var calls, pulled atomic.Int64
				lim := &scriptedLim{try: func() bool {
					if calls.Add(1) == 4 {
						panic("try broke")
					}
					return true
				}}
				var mu sync.Mutex
				var called []int
				v, _ := waitPanic(func() error {
					return pool.ForEach(context.Background(), lim, atkSeq(&pulled, 10), func(_ context.Context, i int) error {
						mu.Lock()
						called = append(called, i)
						mu.Unlock()
						return nil
					}, pool.Workers(workers))
				})
				limiterPanicked(t, v, "try broke", true)
				slices.Sort(called)
				if !slices.Equal(called, []int{0, 1, 2}) {
					t.Errorf("fn called on %v, want [0 1 2]", called)
				}
				if pulled.Load() != 4 {
					t.Errorf("pulled %d items, want 4", pulled.Load())
				}
				c.Settle()
				checkNoLeaks(t)
			})
		})
	}
}

// TestMapLimiterPanic: Map whose TryAcquire panics for the second item,
// while the first still runs: the first finishes, no later item runs, and
// Map panics with the limiter's panic.
func TestMapLimiterPanic(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		var calls atomic.Int64
		lim := &scriptedLim{try: func() bool {
			if calls.Add(1) == 2 {
				panic("try broke")
			}
			return true
		}}
		var ran atomic.Int64
		v, _ := waitPanic(func() error {
			_, err := pool.Map(context.Background(), lim, []int{1, 2, 3, 4}, func(ctx context.Context, i int) (int, error) {
				ran.Add(int64(i))
				return i, nil
			}, pool.Workers(4))
			return err
		})
		limiterPanicked(t, v, "try broke", true)
		if ran.Load() != 1 || calls.Load() != 2 {
			t.Errorf("items summing to %d ran (want 1: only the first), TryAcquire called %d times (want 2)", ran.Load(), calls.Load())
		}
		c.Settle()
		checkNoLeaks(t)
	})
}
