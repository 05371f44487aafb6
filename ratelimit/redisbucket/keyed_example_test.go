package redisbucket_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dripgo/drip/ratelimit/redisbucket"
	"github.com/redis/go-redis/v9"
)

// Two replicas of a service share each client's limit of 2 requests a
// minute: a client gets 2 in all, whichever replica it reaches, and one
// client's requests leave another's limit alone.
func ExampleKeyed() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	prefix := uniqueKey("api:client") + ":"
	defer rdb.Del(ctx, prefix+"10.0.0.1", prefix+"10.0.0.2")

	replica1 := redisbucket.NewKeyed(rdb, prefix, 2, time.Minute)
	replica2 := redisbucket.NewKeyed(rdb, prefix, 2, time.Minute)
	for _, req := range []struct {
		replica *redisbucket.Keyed
		client  string
	}{
		{replica1, "10.0.0.1"}, {replica2, "10.0.0.1"}, {replica1, "10.0.0.1"}, {replica2, "10.0.0.2"},
	} {
		ok, err := req.replica.TryAcquire(ctx, req.client, 1)
		fmt.Printf("%s: %v %v\n", req.client, ok, err)
	}
	// Output:
	// 10.0.0.1: true <nil>
	// 10.0.0.1: true <nil>
	// 10.0.0.1: false <nil>
	// 10.0.0.2: true <nil>
}
