package pool_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
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
