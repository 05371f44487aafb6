package redisbucket

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/throttle"
)

// A Keyed is a throttle.Limit as it is: a fleet of servers puts it under
// throttle's Middleware and shares each client's bucket.
var _ throttle.Limit = (*Keyed)(nil)

// TestMiddlewareAcrossAFleet runs two servers, each with its own Keyed on
// the same prefix under throttle's Middleware, at 3 requests a minute per
// client: a client whose requests alternate between the servers gets 3 in
// all, not 3 from each, the refusal says when to come back, and another
// client has a bucket of its own.
func TestMiddlewareAcrossAFleet(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		rdb := newClient(t, addr)
		prefix := testPrefix(t, rdb)
		ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
		var servers []http.Handler
		for range 2 {
			k := onMockTimeKeyed(NewKeyed(rdb, prefix, 3, time.Minute, WithClock(c)), c)
			servers = append(servers, throttle.NewMiddleware(k).Handler(ok))
		}
		send := func(i int, client string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.RemoteAddr = client + ":1234"
			rec := httptest.NewRecorder()
			servers[i%2].ServeHTTP(rec, req)
			return rec
		}
		for i, want := range []string{`"default";r=2;t=20`, `"default";r=1;t=40`, `"default";r=0;t=60`} {
			if rec := send(i, "192.0.2.1"); rec.Code != http.StatusOK || rec.Header().Get("RateLimit") != want {
				t.Fatalf("request %d: %d, RateLimit %q; want 200, %q", i, rec.Code, rec.Header().Get("RateLimit"), want)
			}
		}
		rec := send(3, "192.0.2.1")
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "20" {
			t.Fatalf("request 3: %d, Retry-After %q; want 429, 20", rec.Code, rec.Header().Get("Retry-After"))
		}
		if rec := send(0, "192.0.2.2"); rec.Code != http.StatusOK {
			t.Fatalf("another client: %d, want 200", rec.Code)
		}
		c.Advance(20 * time.Second)
		if rec := send(1, "192.0.2.1"); rec.Code != http.StatusOK {
			t.Fatalf("back at Retry-After: %d, want 200", rec.Code)
		}
		if rec := send(0, "192.0.2.1"); rec.Code != http.StatusTooManyRequests {
			t.Fatalf("the next at once: %d, want 429", rec.Code)
		}
	})
}
