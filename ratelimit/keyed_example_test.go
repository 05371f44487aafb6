package ratelimit_test

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/pool"
	"github.com/dripgo/drip/ratelimit"
)

// A crawler that fetches pages from several hosts, each host at no more
// than 2 requests per 40 ms (in bursts of 2, then one every 20 ms), with
// 2 requests in flight per host: a pool per host, whose limiter is the
// host's bucket in one Keyed. The hosts do not wait for each other, and
// the Keyed holds no state for a host once its bucket has drained.
//
// Each fetch checks, on arrival, that its host has not seen more requests
// than its bucket allows: 2 at once, then one per 20 ms, counted from before
// the crawl started.
func ExampleKeyed_Key() {
	const (
		burst   = 2
		period  = 40 * time.Millisecond
		workers = 2
	)
	hosts := ratelimit.NewKeyed[string](burst, period)
	pages := map[string][]string{
		"a.example": {"/1", "/2", "/3", "/4", "/5"},
		"b.example": {"/1", "/2", "/3"},
		"c.example": {"/1", "/2", "/3", "/4"},
	}
	var (
		mu    sync.Mutex
		seen  = map[string]int{}
		early int
	)
	start := time.Now()
	fetch := func(ctx context.Context, host, path string) (string, error) {
		mu.Lock()
		seen[host]++
		if allowed := burst + int(time.Since(start)*burst/period); seen[host] > allowed {
			early++
		}
		mu.Unlock()
		return strings.ToUpper(host[:1]) + path, nil // the page, say
	}

	results := map[string][]string{}
	var wg sync.WaitGroup
	for host, paths := range pages {
		wg.Go(func() {
			bodies, err := pool.Map(context.Background(), hosts.Key(host), paths,
				func(ctx context.Context, path string) (string, error) { return fetch(ctx, host, path) },
				pool.Workers(workers))
			if err != nil {
				fmt.Println(host, err)
				return
			}
			mu.Lock()
			results[host] = bodies
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, host := range slices.Sorted(maps.Keys(results)) {
		fmt.Println(host, strings.Join(results[host], " "))
	}
	fmt.Println("requests before their host allowed them:", early)
	// Output:
	// a.example A/1 A/2 A/3 A/4 A/5
	// b.example B/1 B/2 B/3
	// c.example C/1 C/2 C/3 C/4
	// requests before their host allowed them: 0
}

// An HTTP middleware that allows each client 3 requests in 3 seconds, in
// bursts of up to 3 and then one a second, and answers the others 429 with
// a Retry-After. The clock is
// mocked, so that the example prints the same every time.
func ExampleKeyed_Allow() {
	mock := clock.NewMock()
	limits := ratelimit.NewKeyed[string](3, 3*time.Second, ratelimit.WithClock(mock))
	limited := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			client, _, _ := net.SplitHostPort(r.RemoteAddr)
			d := limits.Allow(client, 1)
			w.Header().Set("RateLimit-Remaining", strconv.Itoa(int(d.Remaining)))
			if !d.OK {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.RetryAfter.Seconds()))))
				http.Error(w, "slow down", http.StatusTooManyRequests)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	h := limited(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	get := func(client string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = client + ":1234"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(client, w.Code, "remaining", w.Header().Get("RateLimit-Remaining"))
		if ra := w.Header().Get("Retry-After"); ra != "" {
			fmt.Println("  retry after", ra)
		}
	}
	for range 4 {
		get("192.0.2.1")
	}
	get("192.0.2.2") // another client has its own bucket
	mock.Add(time.Second)
	get("192.0.2.1") // a second later, one request fits again
	// Output:
	// 192.0.2.1 200 remaining 2
	// 192.0.2.1 200 remaining 1
	// 192.0.2.1 200 remaining 0
	// 192.0.2.1 429 remaining 0
	//   retry after 1
	// 192.0.2.2 200 remaining 2
	// 192.0.2.1 200 remaining 0
}
