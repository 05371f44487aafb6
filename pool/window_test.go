package pool_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/pool"
	"github.com/dripgo/drip/ratelimit"
)

// The seed's Drip! example through a pool of 4 workers on a
// ratelimit.Window, NewWindow(4, 8s): one goroutine submits ten tasks, task
// i at i*10ms or as soon as Go for task i-1 has returned; the tasks start
// on the window's schedule, four at once and the next four 8 s after each
// of them, and Go blocks exactly while the four workers are taken. It runs
// with the Window, whose TryAcquire lets Go admit the first tasks itself,
// and with the Window hidden behind Acquire.
func TestWindowPoolSchedule(t *testing.T) {
	for _, name := range []string{"Window", "Acquirer"} {
		t.Run(name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				w := ratelimit.NewWindow(4, 8*time.Second, ratelimit.WithClock(c))
				var acq ratelimit.Acquirer = w
				if name == "Acquirer" {
					acq = acquireOnly{w}
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
				if got, want := p.Stats(), (pool.Stats{Submitted: 8, Waiting: 4, Done: 4}); got != want {
					t.Errorf("at 1s: Stats() = %+v, want %+v", got, want)
				}
				if got := w.Waiting(); got != 1 {
					t.Errorf("at 1s: %d callers queued in the window, want 1 (the others wait their turn in the pool)", got)
				}
				if got := w.Level(); got != 4 {
					t.Errorf("at 1s: Level() = %v, want 4", got)
				}
				advanceUntil(t, c, 20*time.Second, reached(&started, 10))
				<-submitted
				if err := p.Wait(); err != nil {
					t.Fatalf("Wait: %v", err)
				}
				const s = time.Second
				wantStarts := []time.Duration{0, 10 * ms, 20 * ms, 30 * ms, 8 * s, 8*s + 10*ms, 8*s + 20*ms, 8*s + 30*ms, 16 * s, 16*s + 10*ms}
				wantReturns := []time.Duration{0, 10 * ms, 20 * ms, 30 * ms, 40 * ms, 50 * ms, 60 * ms, 70 * ms, 8 * s, 8*s + 10*ms}
				checkSchedule(t, p, starts[:], returns[:], wantStarts, wantReturns)
				c.Settle()
				checkNoLeaks(t)
			})
		})
	}
}

// Weighted tasks on a Window: on NewWindow(10, 1s), 5 and 5 fill the
// window at once; the third 5 waits until they leave, at 1 s, and the 1
// behind it goes with it, not before it. A weight above the capacity fails
// its task without running it.
func TestWindowPoolWeighted(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := ratelimit.NewWindow(10, time.Second, ratelimit.WithClock(c))
		p, _ := pool.New(context.Background(), w, pool.Workers(4))
		weights := []float64{5, 5, 5, 1}
		var starts [4]time.Duration
		var n atomic.Int64
		for i, weight := range weights {
			p.GoWeighted(weight, func(context.Context) error {
				starts[i] = c.Elapsed()
				n.Add(1)
				return nil
			})
		}
		advanceUntil(t, c, 5*time.Second, reached(&n, 4))
		if err := p.Wait(); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		want := []time.Duration{0, 0, time.Second, time.Second}
		for i := range want {
			if starts[i] != want[i] {
				t.Errorf("task %d (weight %v) started at %v, want %v", i, weights[i], starts[i], want[i])
			}
		}

		p2, _ := pool.New(context.Background(), w, pool.Workers(2))
		ran := false
		p2.GoWeighted(11, func(context.Context) error { ran = true; return nil })
		if err := p2.Wait(); !errors.Is(err, ratelimit.ErrExceedsCapacity) || ran {
			t.Errorf("GoWeighted(11) on a window of 10: Wait() = %v, ran %v; want ErrExceedsCapacity, not run", err, ran)
		}
		c.Settle()
		checkNoLeaks(t)
	})
}
