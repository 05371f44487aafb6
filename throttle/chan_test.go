package throttle_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// feed sends 0, 1, ... n-1 on a new channel, gap apart on c, then closes it
// unless keepOpen; it stops early when ctx ends.
func feed(ctx context.Context, c *clocktest.Clock, n int, gap time.Duration, keepOpen bool) <-chan int {
	in := make(chan int)
	go func() {
		if !keepOpen {
			defer close(in)
		}
		for i := range n {
			if i > 0 && gap > 0 {
				c.Sleep(gap)
			}
			select {
			case in <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	return in
}

func TestChanDrip(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(4, 8*time.Second, ratelimit.WithClock(c))
		out, wait := throttle.New[int](lim).Chan(context.Background(), feed(context.Background(), c, 10, 10*ms, false))
		var got []time.Duration
		var done atomic.Int64
		go func() {
			for v := range out {
				if v != len(got) {
					t.Errorf("got %d, want %d", v, len(got))
				}
				got = append(got, c.Elapsed())
			}
			done.Add(1)
		}()
		advanceUntil(t, c, &done, 1, time.Minute)
		sameDurations(t, "value", got, dripSchedule)
		if err := wait(); err != nil {
			t.Errorf("wait: %v, want nil after the input closed", err)
		}
		c.Settle()
		checkNoWorkers(t)
	})
}

func TestChanCancel(t *testing.T) {
	// The goroutine must end however it is blocked when ctx ends: on the
	// input, in the limiter, or on a send nobody receives.
	tests := []struct {
		name      string
		maxRate   float64
		keepOpen  bool
		receive   int // values the receiver takes before walking away
		wantLevel float64
	}{
		{"blocked on input", 10, true, 3, 3},
		{"blocked in limiter", 2, false, 2, 2},
		{"blocked on send", 10, false, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(tt.maxRate, time.Hour, ratelimit.WithClock(c))
				ctx, cancel := context.WithCancel(context.Background())
				in := feed(ctx, c, 3, 0, tt.keepOpen)
				out, wait := throttle.New[int](lim).Chan(ctx, in)
				for i := range tt.receive {
					if v := <-out; v != i {
						t.Fatalf("got %d, want %d", v, i)
					}
				}
				c.Settle()
				if lvl := lim.Level(); lvl != tt.wantLevel {
					t.Fatalf("level %v before cancel, want %v", lvl, tt.wantLevel)
				}
				cancel()
				if err := wait(); !errors.Is(err, context.Canceled) {
					t.Errorf("wait: %v, want context.Canceled", err)
				}
				// After wait, out is closed and holds nothing more.
				if v, ok := <-out; ok {
					t.Errorf("received %d after the cancellation", v)
				}
				c.Settle()
				checkNoWorkers(t)
			})
		})
	}
}

func TestChanRefused(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(5, time.Second, ratelimit.WithClock(c))
		th := throttle.New(lim, throttle.WithCost(func(n int) float64 { return float64(n) }))
		in := make(chan int, 4)
		in <- 3
		in <- 9
		in <- 1
		close(in)
		out, wait := th.Chan(context.Background(), in)
		var got []int
		for v := range out {
			got = append(got, v)
		}
		if len(got) != 1 || got[0] != 3 {
			t.Errorf("got %v, want [3]: the channel stops at the value refused", got)
		}
		if err := wait(); !errors.Is(err, ratelimit.ErrExceedsCapacity) {
			t.Errorf("wait: %v, want ErrExceedsCapacity", err)
		}
		if err := wait(); !errors.Is(err, ratelimit.ErrExceedsCapacity) {
			t.Errorf("second wait: %v, want the same error", err)
		}
		c.Settle()
		checkNoWorkers(t)
	})
}

func TestChanDeadline(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		ctx, cancel := c.WithTimeout(context.Background(), 2500*ms)
		defer cancel()
		out, wait := throttle.New[int](lim).Chan(ctx, feed(ctx, c, 10, 0, false))
		var got []time.Duration
		var done atomic.Int64
		go func() {
			for range out {
				got = append(got, c.Elapsed())
			}
			done.Add(1)
		}()
		advanceUntil(t, c, &done, 1, time.Minute)
		// The fourth value would pass at 3 s, after the deadline: the
		// limiter says so at 2 s, when the third passes, without waiting.
		sameDurations(t, "value", got, []time.Duration{0, time.Second, 2 * time.Second})
		if c.Elapsed() != 2*time.Second {
			t.Errorf("closed at %v, want 2s", c.Elapsed())
		}
		if err := wait(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("wait: %v, want context.DeadlineExceeded", err)
		}
		cancel()
		c.Settle()
		checkNoWorkers(t)
	})
}
