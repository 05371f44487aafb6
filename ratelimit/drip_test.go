package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// dripTimes runs n callers that arrive gap apart and each acquire one unit,
// and returns when each was admitted, by caller.
func dripTimes(t *testing.T, c *clocktest.Clock, lim *ratelimit.Limiter, n int, gap time.Duration) []time.Duration {
	t.Helper()
	got := make([]time.Duration, n)
	done := make(chan struct{}, n)
	for i := range n {
		c.AdvanceTo(t, time.Duration(i)*gap)
		go func() {
			if err := lim.Wait(context.Background()); err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
			got[i] = c.Elapsed()
			done <- struct{}{}
		}()
	}
	for range n {
		for len(done) == 0 {
			c.Advance(time.Millisecond)
		}
		<-done
	}
	return got
}

func TestDripTables(t *testing.T) {
	for _, d := range clocktest.Drips {
		t.Run(d.Name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(d.MaxRate, d.Period, ratelimit.WithClock(c))
				got := dripTimes(t, c, lim, len(d.Want), d.Gap)
				for i := range got {
					if got[i] != d.Want[i] {
						t.Errorf("caller %d admitted at %v, want %v", i, got[i], d.Want[i])
					}
				}
			})
		})
	}
}
