package pool

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// TestTurnstileOrder hands out tickets in order to goroutines that start
// in a shuffled order, as a pool's goroutines may, each ticket taken before
// waiting for one of workers slots as the pool does, so that workers+1 are
// outstanding at most, and checks that their turns come in ticket order.
func TestTurnstileOrder(t *testing.T) {
	for _, workers := range []int{1, 2, 3, 8} {
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
