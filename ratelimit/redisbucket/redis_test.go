package redisbucket

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/redis/go-redis/v9"
)

// The tests run against the redis-server at DRIP_REDIS_ADDR (host:port).
// Without it they skip, except in CI (CI=true), where they fail: there the
// server is part of the build (.ci/redis.sh starts it).
const addrEnv = "DRIP_REDIS_ADDR"

func inCI() bool { return os.Getenv("CI") == "true" }

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(runChild(path))
	}
	flag.Parse()
	redis.SetLogger(quiet{}) // the fault tests make go-redis log every failed dial
	if os.Getenv(addrEnv) == "" && !inCI() {
		// Examples cannot skip themselves, and they need Redis for their
		// output.
		skip := "^Example"
		if s := flag.Lookup("test.skip").Value.String(); s != "" {
			skip = s + "|" + skip
		}
		_ = flag.Set("test.skip", skip)
		fmt.Fprintf(os.Stderr, "redisbucket: %s is not set; skipping the tests that need redis-server\n", addrEnv)
	} else if addr := os.Getenv(addrEnv); addr != "" {
		if err := ping(addr); err != nil {
			// One clear line, rather than every test failing on its own.
			fmt.Fprintf(os.Stderr, "redisbucket: %s=%s, but no redis-server answers there (%v): start one (bash .ci/redis.sh) or unset %s to skip these tests\n",
				addrEnv, addr, err, addrEnv)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// ping reports whether a redis-server answers at addr within 5 seconds.
func ping(addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return rdb.Ping(ctx).Err()
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// redisAddr returns the test server's address, or skips (fails in CI) when
// there is none.
func redisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(addrEnv)
	if addr == "" {
		if inCI() {
			t.Fatalf("%s is not set: in CI these tests need a redis-server (.ci/redis.sh starts one)", addrEnv)
		}
		t.Skipf("%s is not set: no redis-server to test against", addrEnv)
	}
	return addr
}

// newClient returns a client of addr that honours context deadlines, closed
// when the test ends.
func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// testKey returns a key no other test, or run, uses, and deletes it when the
// test ends.
func testKey(t testing.TB, rdb redis.Cmdable) string {
	t.Helper()
	key := fmt.Sprintf("drip:test:{%s}:%016x", t.Name(), rand.Uint64())
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	return key
}

// mockTimeScript is bucketScript reading the time from its last two
// arguments instead of TIME, and keeping keys for an hour past their drain:
// the Redis server's clock does not follow a mock, so only this version
// lets a test place every call at an exact time.
var mockTimeScript = redis.NewScript(mockTimeSource())

func mockTimeSource() string {
	s := bucketSource
	for _, r := range [...]struct{ old, new string }{
		{"redis.call('TIME')", "{ARGV[#ARGV - 1], ARGV[#ARGV]}"},
		{"local linger = 3\n", "local linger = 3600000\n"},
	} {
		if n := strings.Count(s, r.old); n != 1 {
			panic(fmt.Sprintf("bucketSource holds %q %d times, want once", r.old, n))
		}
		s = strings.Replace(s, r.old, r.new, 1)
	}
	return s
}

// onMockTime makes l's script read the time from c, to the microsecond as
// TIME does.
func onMockTime(l *Limiter, c clock.Clock) *Limiter {
	l.script = mockTimeScript
	l.serverTime = func() []any {
		now := c.Now()
		return []any{now.Unix(), now.Nanosecond() / 1000}
	}
	return l
}

// counter counts the commands a client sends: each is a round trip.
type counter struct{ n atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}
