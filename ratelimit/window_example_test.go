package ratelimit_test

import (
	"fmt"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
)

// aiolimiter's bursting example, ten callers 10 ms apart at 4 per 8
// seconds, on a Window and on a Limiter. The Window admits four, then
// nothing until they leave the window 8 s later: never more than 4 in any
// 8 s, what an API that allows "4 per 8 seconds" counts. The leaky bucket
// admits four, then one every 2 s: 7 between 0 and 6 s.
func ExampleNewWindow() {
	wclock, bclock := new(steppedClock), new(steppedClock)
	window := ratelimit.NewWindow(4, 8*time.Second, ratelimit.WithClock(wclock))
	bucket := ratelimit.New(4, 8*time.Second, ratelimit.WithClock(bclock))
	w, b := schedule(wclock, window, 10), schedule(bclock, bucket, 10)
	fmt.Println("caller  window  bucket")
	for i := range 10 {
		fmt.Printf("%6d  %6.2f  %6.2f\n", i, w[i], b[i])
	}
	// Output:
	// caller  window  bucket
	//      0    0.00    0.00
	//      1    0.01    0.01
	//      2    0.02    0.02
	//      3    0.03    0.03
	//      4    8.00    2.00
	//      5    8.01    4.00
	//      6    8.02    6.00
	//      7    8.03    8.00
	//      8   16.00   10.00
	//      9   16.01   12.00
}

// schedule returns when, in seconds, each of n callers that arrive 10 ms
// apart is admitted, in arrival order: it moves the clock 10 ms at a time,
// and on each step admits the callers that have arrived, in turn, for as
// long as lim has room.
func schedule(c *steppedClock, lim interface{ TryAcquire(float64) bool }, n int) []float64 {
	var times []float64
	for step := 1; len(times) < n; step++ {
		for len(times) < min(step, n) && lim.TryAcquire(1) {
			times = append(times, c.elapsed.Seconds())
		}
		c.elapsed += 10 * time.Millisecond
	}
	return times
}

// steppedClock is a clock that moves only when told, for limiters that are
// only asked the time (TryAcquire sets no timer).
type steppedClock struct {
	clock.Clock // the methods that set timers: not used here
	elapsed     time.Duration
}

func (c *steppedClock) Now() time.Time                  { return time.Unix(0, 0).Add(c.elapsed) }
func (c *steppedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
