package ratelimit

import (
	"testing"
	"time"

	"github.com/benbjohnson/clock"
)

// hookClock runs hook once, inside the next call to Since: that is, inside
// a fast path, between its reading of the settings and its
// compare-and-swap.
type hookClock struct {
	*clock.Mock
	hook func()
}

func (h *hookClock) Since(t time.Time) time.Duration {
	if f := h.hook; f != nil {
		h.hook = nil
		f()
	}
	return h.Mock.Since(t)
}

// A fast path never combines the bucket with settings it was not read
// with, however many SetRate calls happen in between.
func TestFastPathNeverUsesStaleSettings(t *testing.T) {
	for _, n := range []int{1, 15, 16, 17, 32, 64} {
		c := &hookClock{Mock: clock.NewMock()}
		l := New(100, 100*time.Second, WithClock(c))
		c.hook = func() {
			for range n {
				l.SetRate(1, time.Second)
			}
			if !l.TryAcquire(1) {
				t.Fatal("the bucket at its new rate refused its capacity")
			}
		}
		if l.TryAcquire(50) {
			t.Fatalf("after %d SetRate calls inside the fast path: a full bucket of 1 admitted 50 (level %v)", n, l.Level())
		}
		if got := l.Level(); got != 1 {
			t.Fatalf("after %d SetRate calls: level %v, want 1", n, got)
		}
	}
}
