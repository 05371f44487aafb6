package throttle_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"time"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

func ExampleFunc() {
	lim := ratelimit.New(3, 30*time.Millisecond) // 3 at once, then one every 10 ms
	square := throttle.Func(throttle.New[int](lim), func(_ context.Context, n int) (int, error) {
		return n * n, nil
	})

	start := time.Now()
	for n := 1; n <= 5; n++ {
		r, err := square(context.Background(), n)
		fmt.Println(n, r, err)
	}
	// The fourth call waited 10 ms for room, the fifth 10 ms more.
	fmt.Println("took at least 20ms:", time.Since(start) >= 20*time.Millisecond)

	// A refused call returns the limiter's error, and the function is not run.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := square(ctx, 6)
	fmt.Println(err)
	// Output:
	// 1 1 <nil>
	// 2 4 <nil>
	// 3 9 <nil>
	// 4 16 <nil>
	// 5 25 <nil>
	// took at least 20ms: true
	// context canceled
}

func ExampleThrottled_Seq() {
	type prompt struct {
		name   string
		tokens int
	}
	prompts := []prompt{{"summary", 3}, {"title", 4}, {"tags", 2}, {"essay", 12}, {"haiku", 1}}

	// 10 tokens a minute; each prompt costs its tokens.
	lim := ratelimit.New(10, time.Minute)
	th := throttle.New(lim, throttle.WithCost(func(p prompt) float64 { return float64(p.tokens) }))

	for p, err := range th.Seq(context.Background(), slices.Values(prompts)) {
		if err != nil {
			// The last pair: p was not admitted, and the sequence ends.
			fmt.Printf("not sent: %s: %v\n", p.name, err)
			continue
		}
		fmt.Printf("sent %s (%d tokens)\n", p.name, p.tokens)
	}
	// Output:
	// sent summary (3 tokens)
	// sent title (4 tokens)
	// sent tags (2 tokens)
	// not sent: essay: ratelimit: acquire 12 exceeds capacity 10
}

func ExampleThrottled_Chan() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the goroutine if we stop reading early

	in := make(chan string)
	go func() {
		defer close(in)
		for _, s := range []string{"a", "b", "c"} {
			in <- s
		}
	}()

	lim := ratelimit.New(5, time.Second)
	out, wait := throttle.New[string](lim).Chan(ctx, in)
	for s := range out {
		fmt.Println(s)
	}
	fmt.Println("closed:", wait())
	// Output:
	// a
	// b
	// c
	// closed: <nil>
}

func ExampleNewTransport() {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()

	lim := ratelimit.New(10, time.Second)
	client := &http.Client{Transport: throttle.NewTransport(throttle.New[*http.Request](lim), nil)}

	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status)

	// The limiter is now paused for an hour, for every user of it: a request
	// that may wait only a minute fails at once, without being sent.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	_, err = client.Do(req)
	fmt.Println("deadline exceeded:", errors.Is(err, context.DeadlineExceeded))
	fmt.Println("requests served:", served.Load())
	// Output:
	// 429 Too Many Requests
	// deadline exceeded: true
	// requests served: 1
}

// A Transport pauses its limiter on Retry-After only if the limiter has a
// Pause method; CanPause tells, for example to warn at start-up.
func ExampleTransport_CanPause() {
	lim := ratelimit.New(10, time.Second)
	fmt.Println(throttle.NewTransport(throttle.New[*http.Request](lim), nil).CanPause())

	// A wrapper that has only Acquire hides the Limiter's Pause.
	var acq ratelimit.Acquirer = struct{ ratelimit.Acquirer }{lim}
	fmt.Println(throttle.NewTransport(throttle.New[*http.Request](acq), nil).CanPause())
	// Output:
	// true
	// false
}
