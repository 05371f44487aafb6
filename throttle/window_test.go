package throttle_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// A ratelimit.Window is an Acquirer, and a Pauser: the Transport pauses it
// on Retry-After.
var _ throttle.Pauser = (*ratelimit.Window)(nil)

// windowSchedule is when ratelimit.NewWindow(4, 8*time.Second) admits ten
// callers that arrive 10 ms apart: four at once, and the next four 8 s
// after each of them.
var windowSchedule = []time.Duration{0, 10 * ms, 20 * ms, 30 * ms,
	8 * time.Second, 8010 * ms, 8020 * ms, 8030 * ms, 16 * time.Second, 16010 * ms}

// advanceWindow advances c step at a time until done reaches n, failing
// the test if that takes longer than limit. The timers due within a step
// fire at their own times, so the times recorded stay exact.
func advanceWindow(t *testing.T, c *clocktest.Clock, done *atomic.Int64, n int64, step, limit time.Duration) {
	t.Helper()
	for c.Settle(); done.Load() < n; c.Advance(step) {
		if c.Elapsed() > limit {
			t.Fatalf("%d of %d done by %v", done.Load(), n, c.Elapsed())
		}
	}
}

func newSeedWindow(c *clocktest.Clock) *ratelimit.Window {
	return ratelimit.NewWindow(4, 8*time.Second, ratelimit.WithClock(c))
}

func TestWindowFunc(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		got := make([]time.Duration, 10)
		fn := throttle.Func(throttle.New[int](newSeedWindow(c)), func(_ context.Context, i int) (int, error) {
			got[i] = c.Elapsed()
			return i * i, nil
		})
		var done atomic.Int64
		for i := range 10 {
			c.AdvanceTo(t, time.Duration(i)*10*ms)
			go func() {
				if r, err := fn(context.Background(), i); err != nil || r != i*i {
					t.Errorf("call %d returned %d, %v; want %d, nil", i, r, err, i*i)
				}
				done.Add(1)
			}()
			c.Settle()
		}
		advanceWindow(t, c, &done, 10, 100*ms, time.Minute)
		sameDurations(t, "call", got, windowSchedule)
	})
}

func TestWindowSeq(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		src := &source{n: 10}
		var got []time.Duration
		var done atomic.Int64
		go func() {
			for v, err := range throttle.New[int](newSeedWindow(c)).Seq(context.Background(), src.seq) {
				if err != nil || v != len(got) {
					t.Errorf("got %d, %v; want %d, nil", v, err, len(got))
				}
				got = append(got, c.Elapsed())
				// Pace the loop like the Drip! callers, which arrive 10 ms
				// apart: the first four pass as they come.
				if len(got) < 4 {
					c.Sleep(10 * ms)
				}
			}
			done.Add(1)
		}()
		advanceWindow(t, c, &done, 1, 100*ms, time.Minute)
		sameDurations(t, "value", got, windowSchedule)
		if src.pulled != 10 || !src.returned {
			t.Errorf("source pulled %d, returned %v; want 10, true", src.pulled, src.returned)
		}
	})
}

func TestWindowChan(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		out, wait := throttle.New[int](newSeedWindow(c)).Chan(context.Background(), feed(context.Background(), c, 10, 10*ms, false))
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
		advanceWindow(t, c, &done, 1, 100*ms, time.Minute)
		sameDurations(t, "value", got, windowSchedule)
		if err := wait(); err != nil {
			t.Errorf("wait: %v, want nil after the input closed", err)
		}
		c.Settle()
		checkNoWorkers(t)
	})
}

// The Transport pauses a Window on a 429 with Retry-After: nothing is sent
// during the pause; then only the window rule applies. With nothing else
// in the window, a whole window's worth goes at once when the pause ends
// (NewWindow(10, 1s) sends the next three requests 5 s after the 429,
// together); the request that drew the 429 stays in the window for its
// period (NewWindow(1, 1m) waits out its minute, however short the pause;
// NewWindow(3, 10s) sends two more at the end of a 2 s pause, then one
// when the first leaves the window, at 10 s).
func TestWindowTransportRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		name       string
		maxRate    float64
		period     time.Duration
		retryAfter string
		want       []time.Duration
	}{
		{"NewWindow(10, 1s) Retry-After 5", 10, time.Second, "5", []time.Duration{0, 5 * time.Second, 5 * time.Second, 5 * time.Second}},
		{"NewWindow(1, 1m) Retry-After 90", 1, time.Minute, "90", []time.Duration{0, 90 * time.Second, 150 * time.Second, 210 * time.Second}},
		{"NewWindow(1, 1m) Retry-After 2", 1, time.Minute, "2", []time.Duration{0, time.Minute, 2 * time.Minute, 3 * time.Minute}},
		{"NewWindow(3, 10s) Retry-After 2", 3, 10 * time.Second, "2", []time.Duration{0, 2 * time.Second, 2 * time.Second, 10 * time.Second, 12 * time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				var sent []time.Duration
				base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
					resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}
					if sent = append(sent, c.Elapsed()); len(sent) == 1 {
						resp.StatusCode = http.StatusTooManyRequests
						resp.Header.Set("Retry-After", tt.retryAfter)
					}
					return resp, nil
				})
				w := ratelimit.NewWindow(tt.maxRate, tt.period, ratelimit.WithClock(c))
				tr := throttle.NewTransport(throttle.New[*http.Request](w), base, throttle.WithClock(c))
				if !tr.CanPause() {
					t.Fatal("CanPause() = false for a *ratelimit.Window")
				}
				var done atomic.Int64
				go func() {
					for range len(tt.want) {
						resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil))
						if err != nil {
							t.Errorf("RoundTrip: %v", err)
							return
						}
						resp.Body.Close()
						done.Add(1)
					}
				}()
				advanceWindow(t, c, &done, int64(len(tt.want)), time.Second, 10*time.Minute)
				sameDurations(t, "request", sent, tt.want)
			})
		})
	}
}
