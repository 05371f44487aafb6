package pool

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
)

// TestTurnstileOrder hands out tickets in order to goroutines that start
// in a shuffled order, as a pool's goroutines may, each ticket taken before
// waiting for one of workers slots as the pool does, so that workers+1 are
// outstanding at most, and checks that their turns come in ticket order
// and that no goroutine is left parked.
func TestTurnstileOrder(t *testing.T) {
	for _, workers := range []int{1, 2, 3, 8, 1000} {
		var ts turnstile
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
		if len(ts.parked) != 0 || ts.nparked.Load() != 0 {
			t.Errorf("workers %d: %d goroutines left parked (count %d)", workers, len(ts.parked), ts.nparked.Load())
		}
	}
}

// TestTurnstileManyParked parks thousands of tickets at once, their
// goroutines started in a shuffled order, and checks that every one is
// parked, that their turns come in ticket order, and that none is left
// behind. The test holds ticket 0 until every other ticket's goroutine is
// parked.
func TestTurnstileManyParked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 3077
		var ts turnstile
		first := ts.take()
		tickets := make([]uint64, n-1)
		for i := range tickets {
			tickets[i] = ts.take()
		}
		rand.Shuffle(len(tickets), func(i, j int) { tickets[i], tickets[j] = tickets[j], tickets[i] })
		var mu sync.Mutex
		var order []uint64
		var wg sync.WaitGroup
		for _, tk := range tickets {
			wg.Go(func() {
				ts.wait(tk)
				mu.Lock()
				order = append(order, tk)
				mu.Unlock()
				ts.pass(tk)
			})
		}
		synctest.Wait()
		if got := ts.nparked.Load(); got != n-1 {
			t.Errorf("%d goroutines parked, want %d", got, n-1)
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
		if len(ts.parked) != 0 || ts.nparked.Load() != 0 {
			t.Errorf("%d goroutines left parked (count %d)", len(ts.parked), ts.nparked.Load())
		}
	})
}
