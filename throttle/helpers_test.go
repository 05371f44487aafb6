package throttle_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
)

const ms = time.Millisecond

// dripSchedule is when ratelimit.New(4, 8*time.Second) admits ten callers
// that arrive 10 ms apart: the seed's Drip! table.
var dripSchedule = clocktest.Drips[0].Want

// advanceUntil advances c one millisecond at a time until done reaches n,
// failing the test if that takes longer than limit.
func advanceUntil(t *testing.T, c *clocktest.Clock, done *atomic.Int64, n int64, limit time.Duration) {
	t.Helper()
	c.AdvanceUntil(t, limit, func() bool { return done.Load() >= n })
}

// sameDurations fails the test unless got equals want.
func sameDurations(t *testing.T, what string, got, want []time.Duration) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d times %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s %d at %v, want %v", what, i, got[i], want[i])
		}
	}
}

// checkNoWorkers fails the test if a goroutine of the caller's synctest
// bubble is running code of the throttle package: after a wrapper's
// documented end, none may be. The caller must have settled.
func checkNoWorkers(t *testing.T) {
	t.Helper()
	clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/throttle")
}
