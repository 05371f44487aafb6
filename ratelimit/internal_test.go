package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
)

// A limiter whose waiters have all returned holds no armed timer, and its
// queue gives back the ring a crowd of waiters grew.
func TestNoTimerOrRingLeftBehind(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1, time.Second, WithClock(c))
		l.TryAcquire(1)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 2000 {
			wg.Go(func() { _ = l.Acquire(ctx, 1) })
		}
		c.Settle()
		if !l.armed || l.q.live != 2000 {
			t.Fatalf("armed %v with %d queued, want armed with 2000", l.armed, l.q.live)
		}
		cancel()
		wg.Wait()
		if l.armed || l.q.live != 0 || l.q.buf != nil || l.cur.Load().state.Load()&(waitingBit|frozenBit) != 0 {
			t.Fatalf("after cancelling all: armed %v, %d queued, ring %d, state %b",
				l.armed, l.q.live, len(l.q.buf), l.cur.Load().state.Load()&3)
		}

		w := make(chan error)
		go func() { w <- l.Acquire(context.Background(), 1) }()
		c.Advance(time.Second)
		if err := <-w; err != nil || l.armed {
			t.Fatalf("after the last waiter: %v, armed %v", err, l.armed)
		}
	})
}

// Under concurrent TryAcquire, Acquire and SetRate on a stopped clock, the
// bucket admits exactly its capacity: the compare-and-swap loses nothing and
// lets nothing through twice.
func TestConcurrentFastPathIsExact(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := New(1000, time.Second, WithClock(c))
		// The clock does not move, so this deadline fails every Acquire
		// that would have to wait, at once.
		ctx, cancel := c.WithTimeout(context.Background(), time.Nanosecond)
		defer cancel()
		var mu sync.Mutex
		total := 0.0
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				amount := 0.5
				take := func() bool { return l.TryAcquire(amount) }
				if g%2 == 1 {
					amount = 0.25
					take = func() bool { return l.Acquire(ctx, amount) == nil }
				}
				for range 1000 {
					if take() {
						mu.Lock()
						total += amount
						mu.Unlock()
					}
					if g == 0 {
						l.SetRate(1000, time.Second) // same rate: a new generation
					}
				}
			})
		}
		wg.Wait()
		if total != 1000 || l.Level() != 1000 {
			t.Fatalf("admitted %v units, level %v, want exactly the capacity 1000", total, l.Level())
		}
	})
}
