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
	ms := time.Millisecond
	tests := []struct {
		name    string
		maxRate float64
		period  time.Duration
		n       int
		want    []time.Duration
	}{
		{"burst", 4, 8 * time.Second, 10, []time.Duration{0, 10 * ms, 20 * ms, 30 * ms, 2000 * ms, 4000 * ms, 6000 * ms, 8000 * ms, 10000 * ms, 12000 * ms}},
		{"no burst", 1, 1500 * ms, 5, []time.Duration{0, 1500 * ms, 3000 * ms, 4500 * ms, 6000 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(tt.maxRate, tt.period, ratelimit.WithClock(c))
				got := dripTimes(t, c, lim, tt.n, 10*ms)
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("caller %d admitted at %v, want %v", i, got[i], tt.want[i])
					}
				}
			})
		})
	}
}
