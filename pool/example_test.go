package pool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dripgo/drip/pool"
	"github.com/dripgo/drip/ratelimit"
)

// Fetch twelve pages from a server at no more than 5 requests per 100 ms,
// in bursts of up to 5, with 3 requests in flight at most. The server
// counts what it sees: the k-th request must not arrive before the limiter
// could have admitted k requests (5 at once, then one every 20 ms), and no
// more than 3 may be in flight at once.
func ExampleMap() {
	const (
		burst   = 5
		period  = 100 * time.Millisecond
		workers = 3
	)
	var (
		mu                          sync.Mutex
		start                       time.Time
		seen, inFlight, maxInFlight int
		early                       int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		if allowed := burst + int(time.Since(start)*burst/period); seen > allowed {
			early++
		}
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		mu.Unlock()
		fmt.Fprint(w, strings.ToUpper(strings.TrimPrefix(r.URL.Path, "/")))
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	defer srv.Close()

	var urls []string
	for _, page := range strings.Fields("a b c d e f g h i j k l") {
		urls = append(urls, srv.URL+"/"+page)
	}
	// The server measures from before the limiter starts, so that it never
	// expects more than the limiter may have admitted.
	mu.Lock()
	start = time.Now()
	mu.Unlock()
	lim := ratelimit.New(burst, period)
	bodies, err := pool.Map(context.Background(), lim, urls, func(ctx context.Context, url string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return "", err
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}, pool.Workers(workers))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(strings.Join(bodies, ""))
	mu.Lock()
	defer mu.Unlock()
	fmt.Println("requests:", seen)
	fmt.Println("ahead of the rate limit:", early)
	fmt.Println("in flight at most", workers, maxInFlight <= workers)
	// Output:
	// ABCDEFGHIJKL
	// requests: 12
	// ahead of the rate limit: 0
	// in flight at most 3 true
}

// A pool with a weighted task, a failing task, and the counts Stats gives
// once Wait has returned.
func ExamplePool() {
	lim := ratelimit.New(100, time.Second)
	p, _ := pool.New(context.Background(), lim, pool.Workers(2), pool.CollectErrors())
	var mu sync.Mutex
	var got []string
	for _, name := range []string{"alpha", "beta", "gamma"} {
		p.Go(func(ctx context.Context) error {
			if name == "beta" {
				return errors.New("beta: not found")
			}
			mu.Lock()
			got = append(got, name)
			mu.Unlock()
			return nil
		})
	}
	// A batch that counts as 10 requests against the limit.
	p.GoWeighted(10, func(ctx context.Context) error { return nil })
	err := p.Wait()
	slices.Sort(got)
	fmt.Println(got)
	fmt.Println(err)
	fmt.Printf("%+v\n", p.Stats())
	// Output:
	// [alpha gamma]
	// beta: not found
	// {Submitted:4 Waiting:0 Running:0 Done:3 Failed:1 Skipped:0}
}

// ForEach works through a sequence of unknown length, taking each item
// only when a worker is free for it.
func ExampleForEach() {
	lim := ratelimit.New(1000, time.Second)
	lines := strings.Lines("one\ntwo\nthree\n")
	var mu sync.Mutex
	total := 0
	err := pool.ForEach(context.Background(), lim, lines, func(ctx context.Context, line string) error {
		mu.Lock()
		total += len(strings.TrimSpace(line))
		mu.Unlock()
		return nil
	}, pool.Workers(2))
	fmt.Println(total, err)
	// Output: 11 <nil>
}
