package throttle_test

import (
	"runtime"
	"strings"
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
	c.Settle()
	for done.Load() < n {
		if c.Elapsed() >= limit {
			t.Fatalf("at %v only %d of %d done", c.Elapsed(), done.Load(), n)
		}
		c.Advance(ms)
	}
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

// checkNoWorkers fails the test if any goroutine is running code of the
// throttle package: after a wrapper's documented end, none may be. The
// caller must have settled, and must not itself be inside the package.
func checkNoWorkers(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/dripgo/drip/throttle.") {
			t.Errorf("goroutine left behind:\n%s", g)
		}
	}
}
