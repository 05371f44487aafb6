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

func TestFuncDrip(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(4, 8*time.Second, ratelimit.WithClock(c))
		got := make([]time.Duration, 10)
		fn := throttle.Func(throttle.New[int](lim), func(_ context.Context, i int) (int, error) {
			got[i] = c.Elapsed()
			return i * i, nil
		})
		var done atomic.Int64
		for i := range 10 {
			c.AdvanceTo(t, time.Duration(i)*10*ms)
			go func() {
				r, err := fn(context.Background(), i)
				if err != nil || r != i*i {
					t.Errorf("call %d returned %d, %v; want %d, nil", i, r, err, i*i)
				}
				done.Add(1)
			}()
		}
		advanceUntil(t, c, &done, 10, time.Minute)
		sameDurations(t, "call", got, dripSchedule)
	})
}

func TestFuncWeights(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		// 10 units a second: 6 and 4 fill the bucket at once; the first 5
		// waits for 5 units to drain (0.5 s), the second for 5 more.
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		th := throttle.New(lim, throttle.WithCost(func(n int) float64 { return float64(n) }))
		costs := []int{6, 4, 5, 5, 0}
		got := make([]time.Duration, len(costs))
		fn := throttle.Func(th, func(_ context.Context, n int) (struct{}, error) {
			return struct{}{}, nil
		})
		var done atomic.Int64
		for i, n := range costs {
			go func() {
				if _, err := fn(context.Background(), n); err != nil {
					t.Errorf("call %d: %v", i, err)
				}
				got[i] = c.Elapsed()
				done.Add(1)
			}()
			c.Settle() // queue them in this order
		}
		advanceUntil(t, c, &done, int64(len(costs)), time.Minute)
		// A cost of 0 passes at once even behind waiters: it takes nothing.
		sameDurations(t, "call", got, []time.Duration{0, 0, 500 * ms, time.Second, 0})
	})
}

func TestFuncRefused(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  func(c *clocktest.Clock) (context.Context, context.CancelFunc)
		cost int
		want error
	}{
		{"cancelled", func(*clocktest.Clock) (context.Context, context.CancelFunc) { return cancelled, func() {} }, 1, context.Canceled},
		{"above capacity", nil, 3, ratelimit.ErrExceedsCapacity},
		{"negative", nil, -1, ratelimit.ErrInvalidAmount},
		// The bucket is full after the first call, so 2 more units take 1 s.
		{"deadline", func(c *clocktest.Clock) (context.Context, context.CancelFunc) {
			return c.WithTimeout(context.Background(), 999*ms)
		}, 2, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(2, time.Second, ratelimit.WithClock(c))
				th := throttle.New(lim, throttle.WithCost(func(n int) float64 { return float64(n) }))
				var calls int
				fn := throttle.Func(th, func(_ context.Context, n int) (string, error) {
					calls++
					return "ran", nil
				})
				if _, err := fn(context.Background(), 2); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if tt.ctx != nil {
					ctx, cancel = tt.ctx(c)
				}
				defer cancel()
				r, err := fn(ctx, tt.cost)
				if !errors.Is(err, tt.want) || r != "" {
					t.Errorf("got %q, %v; want \"\", %v", r, err, tt.want)
				}
				if calls != 1 {
					t.Errorf("fn ran %d times, want once", calls)
				}
				if c.Elapsed() != 0 {
					t.Errorf("refused after %v, want at once", c.Elapsed())
				}
				if lvl := lim.Level(); lvl != 2 {
					t.Errorf("level %v after the refusal, want 2: nothing taken", lvl)
				}
			})
		})
	}
}

func TestFuncCancelWhileWaiting(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		var ran []string
		fn := throttle.Func(throttle.New[string](lim), func(_ context.Context, s string) (string, error) {
			ran = append(ran, s)
			return s, nil
		})
		if _, err := fn(context.Background(), "first"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var errA error
		var admittedB time.Duration
		var done atomic.Int64
		go func() {
			_, errA = fn(ctx, "a")
			done.Add(1)
		}()
		c.AdvanceTo(t, 500*ms)
		cancel()
		c.AdvanceTo(t, 600*ms)
		go func() {
			if _, err := fn(context.Background(), "b"); err != nil {
				t.Error(err)
			}
			admittedB = c.Elapsed()
			done.Add(1)
		}()
		advanceUntil(t, c, &done, 2, time.Minute)
		if !errors.Is(errA, context.Canceled) {
			t.Errorf("cancelled caller got %v, want context.Canceled", errA)
		}
		// b takes the place a left: due when the first unit has drained.
		if admittedB != time.Second {
			t.Errorf("b admitted at %v, want 1s", admittedB)
		}
		if len(ran) != 2 || ran[0] != "first" || ran[1] != "b" {
			t.Errorf("fn ran for %q, want [first b]", ran)
		}
	})
}

func TestNilPanics(t *testing.T) {
	th := throttle.New[int](ratelimit.New(1, time.Second))
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"New", func() { throttle.New[int](nil) }, "throttle: New: nil Acquirer"},
		{"Func nil Throttled", func() {
			throttle.Func(nil, func(context.Context, int) (int, error) { return 0, nil })
		}, "throttle: Func: nil Throttled or function"},
		{"Func nil function", func() {
			throttle.Func[int, int](th, nil)
		}, "throttle: Func: nil Throttled or function"},
		{"Seq", func() { th.Seq(context.Background(), nil) }, "throttle: Seq: nil iter.Seq"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != tt.want {
					t.Errorf("recovered %v, want %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
}

func TestWaitCost(t *testing.T) {
	tests := []struct {
		name string
		opts []throttle.Option[int]
		want float64
	}{
		{"default", nil, 1},
		{"nil cost", []throttle.Option[int]{throttle.WithCost[int](nil)}, 1},
		{"nil option", []throttle.Option[int]{nil}, 1},
		{"cost", []throttle.Option[int]{throttle.WithCost(func(v int) float64 { return float64(v) / 2 })}, 3.5},
		{"last wins", []throttle.Option[int]{
			throttle.WithCost(func(int) float64 { return 5 }),
			throttle.WithCost(func(int) float64 { return 2 }),
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acq := &pausingAcquirer{}
			if err := throttle.New(acq, tt.opts...).Wait(context.Background(), 7); err != nil {
				t.Fatal(err)
			}
			if len(acq.amounts) != 1 || acq.amounts[0] != tt.want {
				t.Errorf("acquired %v, want [%v]", acq.amounts, tt.want)
			}
		})
	}
}
