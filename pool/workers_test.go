package pool_test

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/pool"
	"github.com/dripgo/drip/ratelimit"
)

// hugeWorkers are worker counts far beyond any number of tasks: the
// largest Workers accepts, and one whose per-worker bookkeeping, if made up
// front, would take gigabytes.
var hugeWorkers = []int{math.MaxInt, 1 << 31}

// allocBudget is what a pool of a few tasks may allocate, whatever its
// worker count: a generous bound, thousands of times what such a pool
// needs, and a tiny fraction of what per-worker bookkeeping would cost.
const allocBudget = 1 << 20

// allocated returns the bytes allocated on the heap while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// newPool is pool.New, with a panic turned into a test failure.
func newPool(t *testing.T, lim ratelimit.Acquirer, opts ...pool.Option) (p *pool.Pool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("New panicked: %v", r)
		}
	}()
	p, _ = pool.New(context.Background(), lim, opts...)
	return p
}

// TestHugeWorkers checks that a pool costs memory as its tasks use it, not
// as its worker count says: with math.MaxInt or 1<<31 workers, five tasks
// on a limiter that admits two at once and then one every 500 ms (so that
// three queue for it, in order) start on the limiter's schedule, and the
// whole run allocates little.
func TestHugeWorkers(t *testing.T) {
	for _, workers := range hugeWorkers {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(2, time.Second, ratelimit.WithClock(c))
				var starts [5]time.Duration
				var n atomic.Int64
				bytes := allocated(func() {
					p := newPool(t, lim, pool.Workers(workers))
					for i := range 5 {
						p.Go(func(context.Context) error {
							starts[i] = c.Elapsed()
							n.Add(1)
							return nil
						})
					}
					advanceUntil(t, c, 10*time.Second, reached(&n, 5))
					if err := p.Wait(); err != nil {
						t.Fatalf("Wait: %v", err)
					}
				})
				if bytes > allocBudget {
					t.Errorf("a pool of %d workers allocated %d bytes for five tasks, want at most %d", workers, bytes, allocBudget)
				}
				want := [5]time.Duration{0, 0, 500 * ms, time.Second, 1500 * ms}
				if starts != want {
					t.Errorf("tasks started at %v, want %v", starts, want)
				}
				c.Settle()
				checkNoLeaks(t)
			})
		})
	}
}

// TestHugeWorkersMapForEach runs Map and ForEach with math.MaxInt and 1<<31
// workers: they work, and allocate little.
func TestHugeWorkersMapForEach(t *testing.T) {
	for _, workers := range hugeWorkers {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			lim := ratelimit.New(1e9, time.Second)
			var got []int
			var err error
			bytes := allocated(func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Map panicked: %v", r)
					}
				}()
				got, err = pool.Map(context.Background(), lim, []int{1, 2, 3}, func(_ context.Context, n int) (int, error) {
					return n * n, nil
				}, pool.Workers(workers))
			})
			if err != nil || !slices.Equal(got, []int{1, 4, 9}) {
				t.Errorf("Map = %v, %v; want [1 4 9], nil", got, err)
			}
			if bytes > allocBudget {
				t.Errorf("Map with %d workers allocated %d bytes, want at most %d", workers, bytes, allocBudget)
			}

			var sum atomic.Int64
			bytes = allocated(func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("ForEach panicked: %v", r)
					}
				}()
				err = pool.ForEach(context.Background(), lim, slices.Values([]int{1, 2, 3}), func(_ context.Context, n int) error {
					sum.Add(int64(n))
					return nil
				}, pool.Workers(workers))
			})
			if err != nil || sum.Load() != 6 {
				t.Errorf("ForEach: %v with a sum of %d, want nil and 6", err, sum.Load())
			}
			if bytes > allocBudget {
				t.Errorf("ForEach with %d workers allocated %d bytes, want at most %d", workers, bytes, allocBudget)
			}
		})
	}
}
