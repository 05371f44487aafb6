package clocktest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps the failures reported to it.
type recorder struct {
	testing.TB
	failures []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func parkHere(ch chan struct{}) { <-ch }

func mentions(failures []string, s string) bool {
	for _, f := range failures {
		if strings.Contains(f, s) {
			return true
		}
	}
	return false
}

func TestCheckNoGoroutines(t *testing.T) {
	Run(t, func(t *testing.T, c *Clock) {
		ch := make(chan struct{})
		go parkHere(ch)
		c.Settle()
		r := &recorder{TB: t}
		CheckNoGoroutines(r, "github.com/dripgo/drip/internal/clocktest")
		if !mentions(r.failures, "parkHere") {
			t.Fatalf("the parked goroutine was not reported: %v", r.failures)
		}
		close(ch)
		c.Settle()
		r = &recorder{TB: t}
		CheckNoGoroutines(r, "github.com/dripgo/drip/internal/clocktest")
		if mentions(r.failures, "parkHere") {
			t.Fatalf("a goroutine that ended was reported: %v", r.failures)
		}
	})
}

func TestAdvanceFiresTimersAtTheirTime(t *testing.T) {
	Run(t, func(t *testing.T, c *Clock) {
		var fired []time.Duration
		for _, d := range []time.Duration{3 * time.Second, time.Second} {
			c.AfterFunc(d, func() { fired = append(fired, c.Elapsed()) })
		}
		c.AdvanceUntil(t, time.Minute, func() bool { return len(fired) == 2 })
		if fired[0] != time.Second || fired[1] != 3*time.Second {
			t.Fatalf("timers fired at %v, want 1s and 3s", fired)
		}
		c.AdvanceTo(t, 10*time.Second)
		if c.Elapsed() != 10*time.Second || !c.Now().Equal(Start.Add(10*time.Second)) {
			t.Fatalf("AdvanceTo(10s) left the clock at %v", c.Elapsed())
		}
	})
}
