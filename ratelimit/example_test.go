package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
)

// aiolimiter's bursting example: ten tasks arrive 10 ms apart at a limiter
// of 4 per 8 seconds. The first four pass at once, then one every 2 seconds.
func Example_burst() {
	mock := clock.NewMock()
	limiter := ratelimit.New(4, 8*time.Second, ratelimit.WithClock(mock))
	drip(mock, limiter, 10)
	// Output:
	//  0: Drip!  0.00
	//  1: Drip!  0.01
	//  2: Drip!  0.02
	//  3: Drip!  0.03
	//  4: Drip!  2.00
	//  5: Drip!  4.00
	//  6: Drip!  6.00
	//  7: Drip!  8.00
	//  8: Drip! 10.00
	//  9: Drip! 12.00
}

// With a maximum rate of 1 there is no burst: one task every 1.5 seconds.
func Example_noBurst() {
	mock := clock.NewMock()
	limiter := ratelimit.New(1, 1500*time.Millisecond, ratelimit.WithClock(mock))
	drip(mock, limiter, 5)
	// Output:
	//  0: Drip!  0.00
	//  1: Drip!  1.50
	//  2: Drip!  3.00
	//  3: Drip!  4.50
	//  4: Drip!  6.00
}

// drip starts n tasks, one every 10 ms, that each wait for the limiter and
// then report; it prints "Drip!" with the time of each admission. Time is a
// mocked clock that drip moves itself, to each arrival and then to each
// admission, so the example runs at once and prints the same table every
// time.
func drip(mock *clock.Mock, limiter *ratelimit.Limiter, n int) {
	start := mock.Now()
	drips := make(chan int)
	report := func(id int) {
		fmt.Printf("%2d: Drip! %5.2f\n", id, mock.Since(start).Seconds())
	}
	for id := range n {
		mock.Set(start.Add(time.Duration(id) * 10 * time.Millisecond))
		queued := limiter.Waiting()
		go func() {
			if err := limiter.Wait(context.Background()); err == nil {
				drips <- id
			}
		}()
		// Wait until the task has been admitted, or has queued.
	arrive:
		for {
			select {
			case id := <-drips:
				report(id)
				break arrive
			default:
				if limiter.Waiting() > queued {
					break arrive
				}
				runtime.Gosched()
			}
		}
	}
	for limiter.Waiting() > 0 {
		// The next task is due once one unit of room has leaked out.
		room := limiter.Level() + 1 - limiter.MaxRate()
		due := room / limiter.MaxRate() * float64(limiter.Period())
		mock.Add(time.Duration(math.Ceil(due/1e3)) * time.Microsecond)
		report(<-drips)
	}
}

// Weighted requests: a request can count for more, or less, than one unit.
func ExampleLimiter_Acquire_weighted() {
	limiter := ratelimit.New(10, time.Second)
	ctx := context.Background()
	if err := limiter.Acquire(ctx, 7.5); err != nil {
		fmt.Println(err)
	}
	fmt.Println(limiter.HasCapacity(2.5), limiter.HasCapacity(3))
	fmt.Println(limiter.Acquire(ctx, 11))
	// Output:
	// true false
	// ratelimit: acquire 11 exceeds capacity 10
}

// A context deadline that the queue cannot meet fails at once, with an error
// that is context.DeadlineExceeded to errors.Is.
func ExampleLimiter_Acquire_deadline() {
	mock := clock.NewMock()
	limiter := ratelimit.New(1, time.Minute, ratelimit.WithClock(mock))
	limiter.TryAcquire(1) // the bucket is full for the next minute
	ctx, cancel := mock.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := limiter.Wait(ctx)
	fmt.Println(err)
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output:
	// ratelimit: acquire 1 would wait 1m0s, but the context deadline is in 10s
	// true
}

// On an HTTP 429 with Retry-After: 30, everyone backs off for 30 seconds,
// then resumes at the steady rate.
func ExampleLimiter_Pause() {
	mock := clock.NewMock()
	limiter := ratelimit.New(10, time.Second, ratelimit.WithClock(mock))
	limiter.Pause(30 * time.Second) // a server said Retry-After: 30
	mock.Add(30*time.Second - time.Millisecond)
	fmt.Println(limiter.TryAcquire(0.1))
	mock.Add(time.Millisecond)
	fmt.Println(limiter.TryAcquire(1), limiter.TryAcquire(1))
	mock.Add(100 * time.Millisecond)
	fmt.Println(limiter.TryAcquire(1), limiter.TryAcquire(1))
	// Output:
	// false
	// true false
	// true false
}
