package ratelimit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// The seed's burst example in window form: four at once, then nothing
// until the first of them leaves the window, 8 s later.
func TestWindowSeedTable(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		w := ratelimit.NewWindow(4, 8*time.Second, ratelimit.WithClock(c))
		var mu sync.Mutex
		var got []time.Duration
		var wg sync.WaitGroup
		for i := range 10 {
			c.AdvanceTo(t, time.Duration(i)*10*time.Millisecond)
			wg.Go(func() {
				if err := w.Acquire(context.Background(), 1); err != nil {
					t.Error(err)
				}
				mu.Lock()
				got = append(got, c.Elapsed())
				mu.Unlock()
			})
			c.Settle()
		}
		c.AdvanceTo(t, 20*time.Second)
		wg.Wait()
		want := []time.Duration{0, 10e6, 20e6, 30e6, 8e9, 8.01e9, 8.02e9, 8.03e9, 16e9, 16.01e9}
		if len(got) != len(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("got %v, want %v", got, want)
			}
		}
	})
}
