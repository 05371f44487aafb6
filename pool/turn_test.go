package pool

import (
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
)

// TestTurnstileOrder hands out tickets in order to goroutines that start
// in a shuffled order, as a pool's goroutines may, each ticket taken before
// waiting for one of workers slots as the pool does, so that workers+1 are
// outstanding at most, and checks that their turns come in ticket order.
// With more workers than the ring has slots, tickets share slots.
func TestTurnstileOrder(t *testing.T) {
	for _, workers := range []int{1, 2, 3, 8, maxRing + 7} {
		ts := newTurnstile(workers + 1)
		sem := make(chan struct{}, workers)
		var mu sync.Mutex
		var order []uint64
		var wg sync.WaitGroup
		const n = 5000
		for range n {
			tk := ts.take()
			sem <- struct{}{}
			wg.Go(func() {
				for range rand.IntN(3) {
					runtime.Gosched()
				}
				ts.wait(tk)
				mu.Lock()
				order = append(order, tk)
				mu.Unlock()
				ts.pass(tk)
				<-sem
			})
		}
		wg.Wait()
		for i, tk := range order {
			if tk != uint64(i) {
				t.Fatalf("workers %d: turn %d went to ticket %d", workers, i, tk)
			}
		}
		if !ts.head(n) {
			t.Errorf("workers %d: turnstile not idle after every ticket was served", workers)
		}
		for i := range ts.ring {
			if ts.ring[i].Load() != nil {
				t.Errorf("workers %d: slot %d still holds a waiter", workers, i)
			}
		}
	}
}

// TestTurnstileSharedSlots parks more tickets than the ring has slots, so
// that several share each slot and most park in the overflow map, and
// checks that their turns come in ticket order and leave no waiter behind.
// The test holds ticket 0 until every other ticket's goroutine is parked.
func TestTurnstileSharedSlots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 3*maxRing + 5
		ts := newTurnstile(n)
		if len(ts.ring) != maxRing {
			t.Fatalf("a turnstile for %d tickets has %d slots, want %d", n, len(ts.ring), maxRing)
		}
		first := ts.take()
		var mu sync.Mutex
		var order []uint64
		var wg sync.WaitGroup
		for range n - 1 {
			tk := ts.take()
			wg.Go(func() {
				ts.wait(tk)
				mu.Lock()
				order = append(order, tk)
				mu.Unlock()
				ts.pass(tk)
			})
		}
		synctest.Wait()
		if got, want := ts.spilled.Load(), int64(n-1-maxRing); got != want {
			t.Errorf("%d waiters in the overflow map, want %d", got, want)
		}
		ts.pass(first)
		wg.Wait()
		if len(order) != n-1 {
			t.Fatalf("%d turns taken, want %d", len(order), n-1)
		}
		for i, tk := range order {
			if tk != uint64(i+1) {
				t.Fatalf("turn %d went to ticket %d", i+1, tk)
			}
		}
		if !ts.head(n) {
			t.Error("turnstile not idle after every ticket was served")
		}
		for i := range ts.ring {
			if ts.ring[i].Load() != nil {
				t.Errorf("slot %d still holds a waiter", i)
			}
		}
		if len(ts.overflow) != 0 || ts.spilled.Load() != 0 {
			t.Errorf("%d waiters left in the overflow map (count %d)", len(ts.overflow), ts.spilled.Load())
		}
	})
}

// TestTurnstileRingSize checks that a turnstile's ring grows with the
// tickets it may hold up to maxRing slots, and no further.
func TestTurnstileRingSize(t *testing.T) {
	for _, tt := range []struct{ n, want int }{{1, 1}, {9, 9}, {maxRing, maxRing}, {maxRing + 1, maxRing}, {math.MaxInt, maxRing}} {
		if got := len(newTurnstile(tt.n).ring); got != tt.want {
			t.Errorf("newTurnstile(%d) has %d slots, want %d", tt.n, got, tt.want)
		}
	}
}
