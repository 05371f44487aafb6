package redisbucket_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dripgo/drip/ratelimit/redisbucket"
	"github.com/dripgo/drip/throttle"
)

// The helpers of the package's own tests (redisAddr, newClient, testKey)
// live in package redisbucket, out of reach of this one; these follow them.

// transportRedis returns a client of the test server, closed when the test
// ends, and a key no other test or run uses, deleted when the test ends.
// Without DRIP_REDIS_ADDR the test skips, except in CI (CI=true), where it
// fails.
func transportRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	addr := os.Getenv("DRIP_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("DRIP_REDIS_ADDR is not set: in CI these tests need a redis-server (.ci/redis.sh starts one)")
		}
		t.Skip("DRIP_REDIS_ADDR is not set: no redis-server to test against")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	key := fmt.Sprintf("drip:test:{%s}:%016x", t.Name(), rand.Uint64())
	t.Cleanup(func() {
		// A client of its own: a test may have closed rdb.
		c := redis.NewClient(&redis.Options{Addr: addr})
		c.Del(context.Background(), key)
		c.Close()
		rdb.Close()
	})
	return rdb, key
}

// slowDown is a server that answers every request with 429 and a
// Retry-After of an hour, and counts the requests. It calls before, if
// set, before it answers.
func slowDown(t *testing.T, before func()) (*httptest.Server, *atomic.Int64) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if before != nil {
			before()
		}
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	return srv, &served
}

// TestTransportPausesRedis sends one request through a throttle.Transport
// on a redisbucket Limiter to a server that answers 429 with Retry-After:
// 3600. The Transport must pause the bucket in Redis, for every process
// that shares it: another Limiter on the key then finds the bucket more
// than an hour's worth full, TryAcquire refuses, and a request of this
// Transport with a minute to go fails at once without being sent.
func TestTransportPausesRedis(t *testing.T) {
	rdb, key := transportRedis(t)
	ctx := context.Background()
	srv, served := slowDown(t, nil)

	const rate = 10 // a second
	lim := redisbucket.New(rdb, key, rate, time.Second)
	other := redisbucket.New(rdb, key, rate, time.Second) // another process's
	tr := throttle.NewTransport(throttle.New[*http.Request](lim), nil)
	if !tr.CanPause() {
		t.Error("CanPause() = false on a redisbucket Limiter")
	}
	client := &http.Client{Transport: tr}

	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("GET: %s, want the server's 429", resp.Status)
	}

	// An hour at 10 a second is 36,000 units: whatever else the bucket
	// holds, and however long this test has run, a paused bucket holds
	// more than 35,000. Without the pause it holds the one request's unit.
	level, err := other.Level(ctx)
	if err != nil {
		t.Fatalf("Level: %v", err)
	}
	if level < 35000 {
		t.Errorf("after the 429, the bucket in Redis holds %.1f units, want more than 35000 (paused for an hour)", level)
	}
	ok, err := other.TryAcquire(ctx, 1)
	if err != nil || ok {
		t.Errorf("after the 429, another process's TryAcquire(1) = %v, %v; want false, nil", ok, err)
	}

	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := client.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if resp != nil {
			resp.Body.Close()
		}
		t.Errorf("a request with a minute to go: %v, want an error that is context.DeadlineExceeded", err)
	}
	if n := served.Load(); n != 1 {
		t.Errorf("the server saw %d requests, want 1", n)
	}
}

// TestTransportPauseFails has the Redis client closed while the server
// prepares its 429, so that the Transport's pause of the redisbucket
// Limiter fails: the caller still gets the 429, and the limiter's error
// reaches the Transport's handler with the pause it was asked for.
func TestTransportPauseFails(t *testing.T) {
	rdb, key := transportRedis(t)
	srv, _ := slowDown(t, func() { rdb.Close() })
	lim := redisbucket.New(rdb, key, 10, time.Second)
	var errs []error
	var pauses []time.Duration
	tr := throttle.NewTransport(throttle.New[*http.Request](lim), nil,
		throttle.WithPauseErrorHandler(func(_ *http.Request, d time.Duration, err error) {
			pauses = append(pauses, d)
			errs = append(errs, err)
		}))
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("GET: %s, want the server's 429", resp.Status)
	}
	if len(errs) != 1 || pauses[0] != time.Hour || !errors.Is(errs[0], redis.ErrClosed) {
		t.Errorf("the handler got pauses %v and errors %v; want one, of 1h, with the closed client's error", pauses, errs)
	}
}

// The Transport can pause a redisbucket Limiter.
var _ throttle.ContextPauser = (*redisbucket.Limiter)(nil)
