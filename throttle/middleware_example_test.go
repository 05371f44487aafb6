package throttle_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"time"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

func ExampleMiddleware() {
	// 2 requests a minute per client address, in bursts of up to 2; at
	// most 100,000 clients held at once.
	limits := ratelimit.NewKeyed[string](2, time.Minute, ratelimit.WithMaxKeys(100_000))
	mw := throttle.NewMiddleware(throttle.PerKey(limits))

	hello := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello\n") })
	srv := httptest.NewServer(mw.Handler(hello))
	defer srv.Close()

	for range 3 {
		resp, err := http.Get(srv.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.Status)
		for _, h := range []string{"RateLimit-Policy", "RateLimit", "Retry-After", "Content-Type"} {
			if v := resp.Header.Get(h); v != "" && (h != "Content-Type" || resp.StatusCode != 200) {
				fmt.Printf("  %s: %s\n", h, v)
			}
		}
		fmt.Printf("  %s", body)
	}
	// Output:
	// 200 OK
	//   RateLimit-Policy: "default";q=2;w=60
	//   RateLimit: "default";r=1;t=30
	//   hello
	// 200 OK
	//   RateLimit-Policy: "default";q=2;w=60
	//   RateLimit: "default";r=0;t=60
	//   hello
	// 429 Too Many Requests
	//   RateLimit-Policy: "default";q=2;w=60
	//   RateLimit: "default";r=0;t=30
	//   Retry-After: 30
	//   Content-Type: application/problem+json
	//   {"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Quota Exceeded","status":429,"detail":"The request exceeds the quota of the \"default\" policy now; it can be sent again after the seconds that Retry-After says.","violated-policies":["default"]}
}

func ExampleKeyByIP() {
	// Behind a load balancer at 10.0.0.0/8, which appends the address it
	// received each request from to X-Forwarded-For.
	limits := ratelimit.NewKeyed[string](1, time.Minute)
	mw := throttle.NewMiddleware(throttle.PerKey(limits),
		throttle.KeyByIP(netip.MustParsePrefix("10.0.0.0/8")))
	h := mw.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))

	send := func(from, forwardedFor string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = from
		if forwardedFor != "" {
			req.Header.Set("X-Forwarded-For", forwardedFor)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Printf("%-12s %-36q %d\n", from, forwardedFor, rec.Code)
	}
	send("10.0.0.7:41000", "203.0.113.9")               // the client 203.0.113.9
	send("10.0.0.7:41001", "198.51.100.1, 203.0.113.9") // the same client, whatever it claims
	send("10.0.0.8:52000", "203.0.113.10, 10.0.0.9")    // another client, through two balancers
	send("192.0.2.1:3000", "203.0.113.11")              // not a balancer: its header is ignored
	send("192.0.2.1:3001", "203.0.113.12")              // so this is the same client again
	// Output:
	// 10.0.0.7:41000 "203.0.113.9"                        200
	// 10.0.0.7:41001 "198.51.100.1, 203.0.113.9"          429
	// 10.0.0.8:52000 "203.0.113.10, 10.0.0.9"             200
	// 192.0.2.1:3000 "203.0.113.11"                       200
	// 192.0.2.1:3001 "203.0.113.12"                       429
}
