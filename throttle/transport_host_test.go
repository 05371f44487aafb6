package throttle_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// With PerHost, each host is held to a rate of its own, and all of them to
// the Throttled's limiter together; a 429 with Retry-After from one host
// pauses that host alone. Host names are compared in lower case.
func TestTransportPerHost(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		var mu sync.Mutex
		sent := map[string][]time.Duration{}
		base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			mu.Lock()
			defer mu.Unlock()
			resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}
			host := strings.ToLower(req.URL.Host)
			if sent[host] = append(sent[host], c.Elapsed()); host == "a.example" && len(sent[host]) == 1 {
				resp.StatusCode = http.StatusTooManyRequests
				resp.Header.Set("Retry-After", "5")
			}
			return resp, nil
		})
		hosts := ratelimit.NewKeyed[string](1, time.Second, ratelimit.WithClock(c)) // one a second per host
		total := ratelimit.New(3, time.Second, ratelimit.WithClock(c))              // three a second in all
		tr := throttle.NewTransport(throttle.New[*http.Request](total), base, throttle.WithClock(c), throttle.PerHost(hosts))
		if !tr.CanPause() {
			t.Fatal("CanPause() = false with PerHost")
		}
		var done atomic.Int64
		// One goroutine per host, three requests each in a row.
		for _, url := range []string{"http://a.example/", "http://B.Example/", "http://c.example/"} {
			go func() {
				for range 3 {
					resp, err := tr.RoundTrip(httptest.NewRequest("GET", url, nil))
					if err != nil {
						t.Errorf("RoundTrip(%s): %v", url, err)
						return
					}
					resp.Body.Close()
					done.Add(1)
				}
			}()
		}
		advanceUntil(t, c, &done, 9, time.Minute)
		// b and c go at their own rate, a second apart; a waits out the 5 s
		// its server asked for, and only a. The three first requests took
		// the total limiter's burst; it refills one every 1/3 s, which
		// holds no host back.
		sameDurations(t, "a.example request", sent["a.example"], []time.Duration{0, 5 * time.Second, 6 * time.Second})
		sameDurations(t, "b.example request", sent["b.example"], []time.Duration{0, time.Second, 2 * time.Second})
		sameDurations(t, "c.example request", sent["c.example"], []time.Duration{0, time.Second, 2 * time.Second})
		// At 6 s only a's bucket holds anything: the unit just taken.
		if hosts.Level("a.example") != 1 || hosts.Len() != 1 {
			t.Fatalf("a's level %v, %d hosts held, want 1 and 1", hosts.Level("a.example"), hosts.Len())
		}
		c.Settle()
		checkNoWorkers(t)
	})
}

// With PerHost alone, a nil Throttled: each request costs one unit of its
// host's bucket.
func TestTransportPerHostAlone(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		hosts := ratelimit.NewKeyed[string](2, time.Second, ratelimit.WithClock(c))
		n := 0
		base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			n++
			return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
		})
		tr := throttle.NewTransport(nil, base, throttle.PerHost(hosts))
		for range 2 {
			if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://a.example:8080/x", nil)); err != nil {
				t.Fatal(err)
			}
		}
		if n != 2 || hosts.Level("a.example:8080") != 2 || hosts.HasCapacity("a.example:8080", 0.1) {
			t.Fatalf("%d sent, level %v", n, hosts.Level("a.example:8080"))
		}
	})
}
