package redisbucket_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/dripgo/drip/ratelimit/redisbucket"
	"github.com/redis/go-redis/v9"
)

// addr is the Redis server the examples use.
var addr = cmp.Or(os.Getenv("DRIP_REDIS_ADDR"), "localhost:6379")

// uniqueKey returns name with a random suffix, so that runs never share a
// bucket.
func uniqueKey(name string) string { return fmt.Sprintf("%s:%x", name, rand.Uint64()) }

// Processes that share a key share one bucket: here two limiters, as two
// replicas would have, draw from the same 3 units per minute.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	key := uniqueKey("{partner-api}:calls")
	defer rdb.Del(ctx, key)

	replica1 := redisbucket.New(rdb, key, 3, time.Minute)
	replica2 := redisbucket.New(rdb, key, 3, time.Minute)
	for i, lim := range []*redisbucket.Limiter{replica1, replica2, replica1, replica2} {
		ok, err := lim.TryAcquire(ctx, 1)
		fmt.Printf("call %d from replica %d: %v %v\n", i+1, i%2+1, ok, err)
	}
	level, _ := replica2.Level(ctx)
	fmt.Printf("level: %.1f of %v\n", level, replica2.MaxRate())
	// Output:
	// call 1 from replica 1: true <nil>
	// call 2 from replica 2: true <nil>
	// call 3 from replica 1: true <nil>
	// call 4 from replica 2: false <nil>
	// level: 3.0 of 3
}

// Acquire waits for its turn, unless the context's deadline comes first:
// then it fails at once, taking nothing.
func ExampleLimiter_Acquire() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	key := uniqueKey("{partner-api}:calls")
	defer rdb.Del(ctx, key)

	lim := redisbucket.New(rdb, key, 2, time.Minute) // one unit every 30s
	fmt.Println(lim.Acquire(ctx, 2))

	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err := lim.Acquire(ctx, 1)
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output:
	// <nil>
	// true
}

// Pause stops every process that shares the bucket, as a 429 response
// with Retry-After asks.
func ExampleLimiter_Pause() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	key := uniqueKey("{partner-api}:calls")
	defer rdb.Del(ctx, key)

	here := redisbucket.New(rdb, key, 10, time.Second)
	there := redisbucket.New(rdb, key, 10, time.Second)
	fmt.Println(there.HasCapacity(ctx, 1))
	fmt.Println(here.Pause(ctx, 30*time.Second))
	fmt.Println(there.HasCapacity(ctx, 1))
	// Output:
	// true <nil>
	// <nil>
	// false <nil>
}

// With a fallback, a limiter keeps admitting, at its share of the rate,
// while Redis cannot be reached. The local bucket starts full, so that the
// switch lets no burst through.
func ExampleWithFallback() {
	ctx := context.Background()
	// Nothing listens on port 1: every connection is refused.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()

	// One of four replicas: a quarter of 40 units per second, one unit
	// every 100ms.
	lim := redisbucket.New(rdb, "{partner-api}:calls", 40, time.Second,
		redisbucket.WithFallback(0.25, func(local bool, cause error) {
			fmt.Println("local:", local, "because:", cause)
		}))
	fmt.Println(lim.TryAcquire(ctx, 1)) // the local bucket is full
	fmt.Println(lim.Acquire(ctx, 1))    // admitted once a unit has drained
	// Output:
	// local: true because: dial tcp 127.0.0.1:1: connect: connection refused
	// false <nil>
	// <nil>
}
