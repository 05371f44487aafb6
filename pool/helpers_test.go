package pool_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/pool"
)

const ms = time.Millisecond

// advanceUntil advances c one millisecond at a time until cond holds,
// failing the test if the clock passes limit first.
func advanceUntil(t *testing.T, c *clocktest.Clock, limit time.Duration, cond func() bool) {
	t.Helper()
	c.AdvanceUntil(t, limit, cond)
}

// reached returns a condition that holds once n reaches want.
func reached(n *atomic.Int64, want int64) func() bool {
	return func() bool { return n.Load() >= want }
}

// checkNoLeaks fails the test if a goroutine of the caller's synctest
// bubble is still running pool code. The caller must have settled.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/pool")
}

// waitPanic calls wait and returns what it panicked with, or nil.
func waitPanic(wait func() error) (v any, err error) {
	defer func() { v = recover() }()
	return nil, wait()
}

// blockUntilDone is a task that runs until its context ends and then
// returns nil, counting itself in n when it starts.
func blockUntilDone(n *atomic.Int64) func(context.Context) error {
	return func(ctx context.Context) error {
		n.Add(1)
		<-ctx.Done()
		return nil
	}
}

// checkSchedule checks that the tasks of p started at wantStarts and that
// the calls to Go that submitted them returned at wantReturns, and that p
// ran them all.
func checkSchedule(t *testing.T, p *pool.Pool, starts, returns, wantStarts, wantReturns []time.Duration) {
	t.Helper()
	for i := range wantStarts {
		if starts[i] != wantStarts[i] {
			t.Errorf("task %d started at %v, want %v", i, starts[i], wantStarts[i])
		}
		if returns[i] != wantReturns[i] {
			t.Errorf("Go for task %d returned at %v, want %v", i, returns[i], wantReturns[i])
		}
	}
	n := len(wantStarts)
	if got, want := p.Stats(), (pool.Stats{Submitted: n, Done: n}); got != want {
		t.Errorf("after Wait: Stats() = %+v, want %+v", got, want)
	}
}
