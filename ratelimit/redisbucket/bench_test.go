package redisbucket

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// BenchmarkTryAcquire compares TryAcquire with go-redis/redis_rate's Allow,
// the same GCRA decision in one Lua script, on the same server: with room
// in the bucket (every call admitted, so every call writes) and with a full
// one (every call refused), one caller at a time and 32 at once. It
// reports operations per second and round trips per call.
func BenchmarkTryAcquire(b *testing.B) {
	addr := os.Getenv("DRIP_REDIS_ADDR")
	if addr == "" {
		b.Skip("DRIP_REDIS_ADDR is not set")
	}
	ctx := context.Background()
	type contender struct {
		name  string
		setup func(rdb *redis.Client, key string, full bool) func() (bool, error)
	}
	contenders := []contender{
		{"redisbucket", func(rdb *redis.Client, key string, full bool) func() (bool, error) {
			lim := New(rdb, key, 1e9, time.Second)
			if full {
				lim = New(rdb, key, 1, time.Hour)
			}
			return func() (bool, error) { return lim.TryAcquire(ctx, 1) }
		}},
		{"redis_rate", func(rdb *redis.Client, key string, full bool) func() (bool, error) {
			rl := redis_rate.NewLimiter(rdb)
			limit := redis_rate.PerSecond(1e9)
			if full {
				limit = redis_rate.PerHour(1)
			}
			return func() (bool, error) {
				res, err := rl.Allow(ctx, key, limit)
				return err == nil && res.Allowed == 1, err
			}
		}},
	}
	for _, full := range []bool{false, true} {
		for _, parallel := range []bool{false, true} {
			for _, c := range contenders {
				name := map[bool]string{false: "room", true: "full"}[full] + "/" +
					map[bool]string{false: "serial", true: "parallel"}[parallel] + "/impl=" + c.name
				b.Run(name, func(b *testing.B) {
					rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, PoolSize: 64})
					defer rdb.Close()
					var rt counter
					rdb.AddHook(&rt)
					key := fmt.Sprintf("drip:bench:{%x}", rand.Uint64())
					defer rdb.Del(ctx, key, "rate:"+key)
					call := c.setup(rdb, key, full)
					if _, err := call(); err != nil { // loads the script, fills a full bucket
						b.Fatal(err)
					}
					want := !full
					b.ResetTimer()
					rt.n.Store(0)
					start := time.Now()
					if parallel {
						b.SetParallelism(16)
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								if ok, err := call(); err != nil || ok != want {
									b.Errorf("call = %v, %v; want %v", ok, err, want)
									return
								}
							}
						})
					} else {
						for range b.N {
							if ok, err := call(); err != nil || ok != want {
								b.Fatalf("call = %v, %v; want %v", ok, err, want)
							}
						}
					}
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
					b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
				})
			}
		}
	}
}
