package redisbucket_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/ratelimit/redisbucket"
	"github.com/redis/go-redis/v9"
)

// A deadline that comes before the caller's turn fails at once with a
// *ratelimit.DeadlineError, which says how long the wait would have been:
// what a server puts in Retry-After, and a client in its logs or backoff.
// It is still a context.DeadlineExceeded to errors.Is.
func ExampleLimiter_Acquire_deadline() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	key := uniqueKey("{partner-api}:calls")
	defer rdb.Del(ctx, key)

	lim := redisbucket.New(rdb, key, 1, time.Hour)
	fmt.Println(lim.Acquire(ctx, 1)) // the unit of this hour

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := lim.Acquire(ctx, 1)
	var de *ratelimit.DeadlineError
	if errors.As(err, &de) {
		fmt.Printf("retry after %v; the deadline was in %v\n", de.Wait.Round(time.Minute), de.Remaining.Round(time.Second))
	}
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output:
	// <nil>
	// retry after 1h0m0s; the deadline was in 10s
	// true
}
