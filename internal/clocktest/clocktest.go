// Package clocktest is the mocked clock that drip's tests share.
//
// A [clock.Mock] alone is hard to use deterministically: its AfterFunc
// callbacks run on new goroutines, and Mock.Add fires only the timers that
// already exist when it is called. Run puts the mock inside a
// [testing/synctest] bubble, so that every step can wait until all the
// goroutines of the test are durably blocked: after [Clock.Advance] returns,
// every timer due by then has fired, and every goroutine it woke has run
// until it blocked again. Tests then read results without sleeping and
// without races against the clock.
package clocktest

import (
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"
)

// Start is the mocked time at which every Run begins.
var Start = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// Clock is a [clock.Mock] that advances in synchronised steps. It is only
// valid inside the function given to [Run].
type Clock struct {
	*clock.Mock
}

// Run runs f in a synctest bubble with a mock clock set to [Start]. All
// goroutines that f starts must have ended when it returns.
func Run(t *testing.T, f func(t *testing.T, c *Clock)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		m := clock.NewMock()
		m.Set(Start)
		f(t, &Clock{Mock: m})
	})
}

// Settle waits until every goroutine of the test is durably blocked.
func (c *Clock) Settle() { synctest.Wait() }

// Advance settles, moves the clock forward by d, firing every timer that
// falls due on the way (each at its own time), and settles again.
func (c *Clock) Advance(d time.Duration) {
	synctest.Wait()
	c.Add(d)
	synctest.Wait()
}

// AdvanceTo advances the clock to Start+elapsed. It fails the test if that
// lies in the past.
func (c *Clock) AdvanceTo(t testing.TB, elapsed time.Duration) {
	t.Helper()
	now := c.Elapsed()
	if elapsed < now {
		t.Fatalf("clocktest: AdvanceTo(%v) but the clock is already at %v", elapsed, now)
	}
	c.Advance(elapsed - now)
}

// Elapsed returns how far the clock has moved since [Start].
func (c *Clock) Elapsed() time.Duration { return c.Now().Sub(Start) }

// AdvanceUntil advances the clock a millisecond at a time until cond holds,
// failing the test if the clock passes limit first.
func (c *Clock) AdvanceUntil(t testing.TB, limit time.Duration, cond func() bool) {
	t.Helper()
	c.Settle()
	for !cond() {
		if c.Elapsed() >= limit {
			t.Fatalf("clocktest: condition still false at %v", c.Elapsed())
		}
		c.Advance(time.Millisecond)
	}
}

// CheckNoGoroutines fails the test if a goroutine of the caller's synctest
// bubble is running code of the package with import path pkg: after a
// documented end (Wait returned, a loop broke, a channel closed), none may
// be. Call it after Settle, so that goroutines on their way out have
// ended. Goroutines outside the bubble are left out: those of tests on the
// real clock may still be returning from their last deferred call.
func CheckNoGoroutines(t testing.TB, pkg string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "synctest bubble") && strings.Contains(g, pkg+".") {
			t.Errorf("goroutine left behind:\n%s", g)
		}
	}
}
