package pool_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/pool"
	"github.com/dripgo/drip/ratelimit"
)

// TestDripSchedule runs the seed's Drip! example through a pool of 4
// workers on ratelimit.New(4, 8s). One goroutine submits ten tasks, task i
// at i*10ms or as soon as Go for task i-1 has returned, whichever is later;
// each task only records when it started. The tasks start on the seed's
// schedule, and Go blocks exactly while the four workers are taken.
//
// It runs twice: with the *ratelimit.Limiter, whose TryAcquire lets Go
// admit the first four tasks itself, and with a limiter that has only
// Acquire, so that every task goes through the pool's ordered queue.
func TestDripSchedule(t *testing.T) {
	for _, name := range []string{"Limiter", "Acquirer"} {
		t.Run(name, func(t *testing.T) { testDripSchedule(t, name == "Acquirer") })
	}
}

// acquireOnly hides every method of a limiter but Acquire.
type acquireOnly struct{ ratelimit.Acquirer }

func testDripSchedule(t *testing.T, hide bool) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(4, 8*time.Second, ratelimit.WithClock(c))
		var acq ratelimit.Acquirer = lim
		if hide {
			acq = acquireOnly{lim}
		}
		p, _ := pool.New(context.Background(), acq, pool.Workers(4))
		var starts, returns [10]time.Duration
		var started atomic.Int64
		submitted := make(chan struct{})
		go func() {
			defer close(submitted)
			for i := range 10 {
				if d := time.Duration(i)*10*ms - c.Elapsed(); d > 0 {
					c.Sleep(d)
				}
				p.Go(func(context.Context) error {
					starts[i] = c.Elapsed()
					started.Add(1)
					return nil
				})
				returns[i] = c.Elapsed()
			}
		}()

		c.AdvanceTo(t, time.Second)
		// Tasks 4 to 7 wait for the limiter; Go for task 8 waits for a
		// worker, and does not count it yet.
		want := pool.Stats{Submitted: 8, Waiting: 4, Done: 4}
		if got := p.Stats(); got != want {
			t.Errorf("at 1s: Stats() = %+v, want %+v", got, want)
		}
		if got := lim.Waiting(); got != 1 {
			t.Errorf("at 1s: %d callers queued in the limiter, want 1 (the others wait their turn in the pool)", got)
		}

		advanceUntil(t, c, 20*time.Second, reached(&started, 10))
		<-submitted
		if err := p.Wait(); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		wantStarts := []time.Duration{0, 10 * ms, 20 * ms, 30 * ms, 2 * time.Second, 4 * time.Second,
			6 * time.Second, 8 * time.Second, 10 * time.Second, 12 * time.Second}
		wantReturns := []time.Duration{0, 10 * ms, 20 * ms, 30 * ms, 40 * ms, 50 * ms, 60 * ms, 70 * ms,
			2 * time.Second, 4 * time.Second}
		checkSchedule(t, p, starts[:], returns[:], wantStarts, wantReturns)
		c.Settle()
		checkNoLeaks(t)
	})
}

// TestStartOrder submits twenty tasks at once to eight workers on a
// limiter that admits one per second, with no burst. Seven of them wait
// for the limiter at a time on goroutines that the scheduler starts in no
// particular order; they must still start in submission order, one a
// second.
func TestStartOrder(t *testing.T) {
	for run := range 5 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
				p, _ := pool.New(context.Background(), lim, pool.Workers(8))
				var order [20]int
				var starts [20]time.Duration
				var n atomic.Int64
				go func() {
					for i := range 20 {
						p.Go(func(context.Context) error {
							k := n.Add(1) - 1
							order[k], starts[k] = i, c.Elapsed()
							return nil
						})
					}
				}()
				advanceUntil(t, c, 30*time.Second, reached(&n, 20))
				if err := p.Wait(); err != nil {
					t.Fatalf("Wait: %v", err)
				}
				for k := range 20 {
					if order[k] != k || starts[k] != time.Duration(k)*time.Second {
						t.Errorf("start %d was task %d at %v, want task %d at %v", k, order[k], starts[k], k, time.Duration(k)*time.Second)
					}
				}
			})
		})
	}
}

// TestWeighted checks that a task acquires its weight, that the limiter's
// order holds across weights (a light task does not pass a heavy one
// queued before it), and that a weight the limiter refuses fails the task
// without running it.
func TestWeighted(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		// 10 units a second: a unit drains every 100 ms.
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		p, _ := pool.New(context.Background(), lim, pool.Workers(4))
		weights := []float64{5, 5, 5, 1}
		var starts [4]time.Duration
		var n atomic.Int64
		for i, w := range weights {
			p.GoWeighted(w, func(context.Context) error {
				starts[i] = c.Elapsed()
				n.Add(1)
				return nil
			})
		}
		if got := lim.Level(); got != 10 {
			t.Errorf("level after submitting: %v, want 10", got)
		}
		advanceUntil(t, c, 5*time.Second, reached(&n, 4))
		if err := p.Wait(); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		want := []time.Duration{0, 0, 500 * ms, 600 * ms}
		for i := range want {
			if starts[i] != want[i] {
				t.Errorf("task %d (weight %v) started at %v, want %v", i, weights[i], starts[i], want[i])
			}
		}
	})

	for _, tt := range []struct {
		weight float64
		want   error
	}{{11, ratelimit.ErrExceedsCapacity}, {-1, ratelimit.ErrInvalidAmount}} {
		t.Run(fmt.Sprint("weight ", tt.weight), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
				p, _ := pool.New(context.Background(), lim, pool.Workers(2))
				ran := false
				p.GoWeighted(tt.weight, func(context.Context) error { ran = true; return nil })
				err := p.Wait()
				if !errors.Is(err, tt.want) {
					t.Errorf("GoWeighted(%v): Wait() = %v, want %v", tt.weight, err, tt.want)
				}
				if ran {
					t.Errorf("GoWeighted(%v): the task ran", tt.weight)
				}
				if got, want := p.Stats(), (pool.Stats{Submitted: 1, Failed: 1}); got != want {
					t.Errorf("GoWeighted(%v): Stats() = %+v, want %+v", tt.weight, got, want)
				}
				if got := lim.Level(); got != 0 {
					t.Errorf("GoWeighted(%v): level %v, want 0", tt.weight, got)
				}
			})
		})
	}
}

// TestAdmitAfterWorker checks that a task takes its weight from the limiter
// only once it has a worker, not when Go is called: here Go is called at 0,
// when the limiter has room, but the only worker is busy until 1 s, and the
// limiter's level shows that the task was admitted at 1 s.
func TestAdmitAfterWorker(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		// Two units, draining two a second.
		lim := ratelimit.New(2, time.Second, ratelimit.WithClock(c))
		p, _ := pool.New(context.Background(), lim, pool.Workers(1))
		p.Go(func(context.Context) error {
			<-c.After(time.Second)
			return nil
		})
		var start time.Duration
		go p.Go(func(context.Context) error { start = c.Elapsed(); return nil })
		c.Settle()
		if got := lim.Level(); got != 1 {
			t.Errorf("level at 0 with the second task waiting for the worker: %v, want 1", got)
		}
		c.AdvanceTo(t, time.Second)
		if err := p.Wait(); err != nil {
			t.Fatal(err)
		}
		if start != time.Second {
			t.Errorf("the second task started at %v, want 1s", start)
		}
		if got := lim.Level(); got != 1 {
			t.Errorf("level at 1s: %v, want 1 (the second task's unit, taken at 1s)", got)
		}
	})
}
