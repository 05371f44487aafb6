package throttle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// problemBody is an RFC 9457 problem details object, with the
// violated-policies member of the RateLimit draft.
type problemBody struct {
	Type     string   `json:"type"`
	Title    string   `json:"title"`
	Status   int      `json:"status"`
	Detail   string   `json:"detail"`
	Violated []string `json:"violated-policies"`
}

// readProblem reads resp's body, which must be application/problem+json.
func readProblem(t *testing.T, resp *http.Response) problemBody {
	t.Helper()
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p problemBody
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Errorf("problem body: %v", err)
	}
	if p.Status != resp.StatusCode {
		t.Errorf("problem status %d in a %d response", p.Status, resp.StatusCode)
	}
	return p
}

// rateHeaders is what a response says in its RateLimit-Policy, RateLimit
// and Retry-After headers; -1 for a value that is not there.
type rateHeaders struct {
	q, w, r, t, retryAfter int64
}

func (h rateHeaders) String() string {
	return fmt.Sprintf("q=%d w=%d r=%d t=%d Retry-After=%d", h.q, h.w, h.r, h.t, h.retryAfter)
}

// readHeaders parses h's rate limit headers strictly, as a client would:
// each a List of exactly one Item, the String policy, with Integer
// parameters and no others.
func readHeaders(t *testing.T, h http.Header, policy string) rateHeaders {
	t.Helper()
	got := rateHeaders{-1, -1, -1, -1, -1}
	one := func(field string, keys ...string) []int64 {
		if len(h.Values(field)) == 0 {
			return nil
		}
		items, err := headerList(h, field)
		if err != nil {
			t.Fatalf("%s: %q: %v", field, h.Values(field), err)
		}
		if len(items) != 1 {
			t.Fatalf("%s: %q: %d items, want 1", field, h.Values(field), len(items))
		}
		it := items[0]
		if name, ok := it.Value.(string); !ok || name != policy {
			t.Fatalf("%s: %q: the item is %#v, want the String %q", field, h.Values(field), it.Value, policy)
		}
		if len(it.Params) != len(keys) {
			t.Fatalf("%s: %q: parameters %v, want %v", field, h.Values(field), it.Params, keys)
		}
		var out []int64
		for _, k := range keys {
			n, err := intParam(it, k)
			if err != nil {
				t.Fatalf("%s: %q: %v", field, h.Values(field), err)
			}
			if n < 0 {
				t.Fatalf("%s: %q: %s is negative", field, h.Values(field), k)
			}
			out = append(out, n)
		}
		return out
	}
	if v := one("RateLimit-Policy", "q", "w"); v != nil {
		got.q, got.w = v[0], v[1]
		if got.w < 1 {
			t.Fatalf("RateLimit-Policy: w=%d, want >= 1", got.w)
		}
	}
	if v := one("RateLimit", "r", "t"); v != nil {
		got.r, got.t = v[0], v[1]
	}
	if ra := h.Values("Retry-After"); len(ra) > 0 {
		if len(ra) != 1 || !isDelaySeconds(ra[0]) {
			t.Fatalf("Retry-After %q is not delay-seconds", ra)
		}
		got.retryAfter, _ = strconv.ParseInt(ra[0], 10, 64)
		if got.retryAfter < 1 {
			t.Fatalf("Retry-After %d on a refusal, want >= 1", got.retryAfter)
		}
		// The draft: Retry-After no earlier than the end of t.
		if got.t > got.retryAfter {
			t.Fatalf("Retry-After %d before the end of t=%d", got.retryAfter, got.t)
		}
	}
	return got
}

func isDelaySeconds(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// client sends requests to a real server and reads their responses.
type client struct {
	t   *testing.T
	c   *http.Client
	url string
}

// get sends a GET with the headers hdr (name, value...) and returns the
// response, its body read.
func (c client) get(hdr ...string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.url, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, body
}

// serve starts a real server of h and returns a client of it.
func serve(t *testing.T, h http.Handler) client {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return client{t, srv.Client(), srv.URL}
}

// TestMiddlewareBucketHeaders follows a key's bucket through a burst and
// its drain on a real server, checking the status and every header of
// each response against the leaky bucket's state.
func TestMiddlewareBucketHeaders(t *testing.T) {
	mock := clock.NewMock()
	keyed := ratelimit.NewKeyed[string](10, 10*time.Second, ratelimit.WithClock(mock))
	c := serve(t, throttle.NewMiddleware(throttle.PerKey(keyed)).Handler(okHandler))

	check := func(wantStatus int, want rateHeaders) {
		t.Helper()
		resp, body := c.get()
		if resp.StatusCode != wantStatus {
			t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, wantStatus)
		}
		if got := readHeaders(t, resp.Header, "default"); got != want {
			t.Fatalf("at %v: %v, want %v", mock.Now().Sub(time.Unix(0, 0)), got, want)
		}
		if wantStatus == http.StatusTooManyRequests {
			p := readProblem(t, resp)
			if p.Type != "https://iana.org/assignments/http-problem-types#quota-exceeded" ||
				p.Title != "Quota Exceeded" || len(p.Violated) != 1 || p.Violated[0] != "default" {
				t.Errorf("problem %+v", p)
			}
		} else if string(body) != "ok" {
			t.Errorf("body %q, want the handler's", body)
		}
	}
	// The burst: each request takes a unit, and the bucket empties in a
	// second a unit.
	for i := int64(1); i <= 10; i++ {
		check(200, rateHeaders{q: 10, w: 10, r: 10 - i, t: i, retryAfter: -1})
	}
	// Full: a unit fits in a second.
	check(429, rateHeaders{q: 10, w: 10, r: 0, t: 1, retryAfter: 1})
	mock.Add(500 * time.Millisecond)
	check(429, rateHeaders{q: 10, w: 10, r: 0, t: 1, retryAfter: 1}) // 0.5 s, rounded up
	mock.Add(500 * time.Millisecond)
	check(200, rateHeaders{q: 10, w: 10, r: 0, t: 10, retryAfter: -1})
	// 2.5 units drain: 1.5 remain after the next request (r rounds down),
	// and the 8.5 in the bucket take 8.5 s to drain (t rounds up).
	mock.Add(2500 * time.Millisecond)
	check(200, rateHeaders{q: 10, w: 10, r: 1, t: 9, retryAfter: -1})
	// A refused request takes nothing.
	check(200, rateHeaders{q: 10, w: 10, r: 0, t: 10, retryAfter: -1})
	check(429, rateHeaders{q: 10, w: 10, r: 0, t: 1, retryAfter: 1})
	mock.Add(10 * time.Second)
	check(200, rateHeaders{q: 10, w: 10, r: 9, t: 1, retryAfter: -1})
}

// TestMiddlewareWindowHeaders does the same for a sliding window, through
// Global: four admitted in four seconds, the fifth refused until the
// first leaves the window.
func TestMiddlewareWindowHeaders(t *testing.T) {
	mock := clock.NewMock()
	win := ratelimit.NewWindow(4, 8*time.Second, ratelimit.WithClock(mock))
	c := serve(t, throttle.NewMiddleware(throttle.Global(win), throttle.WithPolicyName("window")).Handler(okHandler))
	check := func(wantStatus int, want rateHeaders) {
		t.Helper()
		resp, _ := c.get()
		if resp.StatusCode != wantStatus {
			t.Fatalf("status %d, want %d", resp.StatusCode, wantStatus)
		}
		if got := readHeaders(t, resp.Header, "window"); got != want {
			t.Fatalf("at %v: %v, want %v", mock.Now().Sub(time.Unix(0, 0)), got, want)
		}
	}
	for i := int64(0); i < 4; i++ {
		// Each admission leaves the window 8 s after it was made.
		check(200, rateHeaders{q: 4, w: 8, r: 3 - i, t: 8, retryAfter: -1})
		if i < 3 {
			mock.Add(time.Second)
		}
	}
	// At 3 s the window is full until the admission of 0 s leaves it.
	check(429, rateHeaders{q: 4, w: 8, r: 0, t: 5, retryAfter: 5})
	mock.Add(4500 * time.Millisecond)
	check(429, rateHeaders{q: 4, w: 8, r: 0, t: 1, retryAfter: 1})
	mock.Add(500 * time.Millisecond)
	check(200, rateHeaders{q: 4, w: 8, r: 0, t: 8, retryAfter: -1})
}

// TestMiddlewareRetryAfterExact checks, on random weights and gaps, that
// a refused request is refused again a second before its Retry-After and
// admitted at it: Retry-After is the wait rounded up, never earlier than
// the request would be admitted, and no more than a second later. It does
// so for a bucket and for a window, at rates that are not whole numbers
// of units a second.
func TestMiddlewareRetryAfterExact(t *testing.T) {
	limits := []struct {
		name string
		make func(clock.Clock) throttle.Limit
	}{
		{"bucket", func(c clock.Clock) throttle.Limit {
			return throttle.PerKey(ratelimit.NewKeyed[string](7, 9*time.Second, ratelimit.WithClock(c)))
		}},
		{"window", func(c clock.Clock) throttle.Limit {
			return throttle.Global(ratelimit.NewWindow(7, 9*time.Second, ratelimit.WithClock(c)))
		}},
	}
	for _, l := range limits {
		t.Run(l.name, func(t *testing.T) {
			mock := clock.NewMock()
			cost := throttle.WithRequestCost(func(r *http.Request) float64 {
				f, _ := strconv.ParseFloat(r.Header.Get("X-Cost"), 64)
				return f
			})
			h := throttle.NewMiddleware(l.make(mock), cost).Handler(okHandler)
			send := func(c float64) (int, rateHeaders) {
				req := httptest.NewRequest("GET", "/", nil)
				req.Header.Set("X-Cost", strconv.FormatFloat(c, 'g', -1, 64))
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				return rec.Code, readHeaders(t, rec.Header(), "default")
			}
			rng := rand.New(rand.NewPCG(1, 2))
			refusals := 0
			for range 150 {
				c := float64(rng.IntN(28)+1) / 4 // 0.25 to 7 units
				mock.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
				status, hd := send(c)
				if status == http.StatusOK {
					continue
				}
				if status != http.StatusTooManyRequests {
					t.Fatalf("status %d", status)
				}
				refusals++
				if hd.retryAfter > 1 {
					mock.Add(time.Duration(hd.retryAfter-1) * time.Second)
					if s, _ := send(c); s != http.StatusTooManyRequests {
						t.Fatalf("cost %v admitted a second before Retry-After %d", c, hd.retryAfter)
					}
					mock.Add(time.Second)
				} else {
					mock.Add(time.Second)
				}
				if s, _ := send(c); s != http.StatusOK {
					t.Fatalf("cost %v refused at Retry-After %d", c, hd.retryAfter)
				}
			}
			if refusals < 40 {
				t.Errorf("only %d refusals: the test checks too little", refusals)
			}
		})
	}
}

// TestMiddlewarePolicyNeverRefuses checks what the godoc promises of the
// policy's q and w: a client that sends at most q units in any w seconds
// is never refused, by a bucket or a window, in bursts or spread out.
func TestMiddlewarePolicyNeverRefuses(t *testing.T) {
	for _, window := range []bool{false, true} {
		mock := clock.NewMock()
		var limit throttle.Limit
		if window {
			limit = throttle.Global(ratelimit.NewWindow(10, 2*time.Second, ratelimit.WithClock(mock)))
		} else {
			limit = throttle.PerKey(ratelimit.NewKeyed[string](10, 2*time.Second, ratelimit.WithClock(mock)))
		}
		// A HEAD request costs nothing, and reads the policy.
		h := throttle.NewMiddleware(limit, throttle.WithRequestCost(func(r *http.Request) float64 {
			if r.Method == "HEAD" {
				return 0
			}
			return 1
		})).Handler(okHandler)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("HEAD", "/", nil))
		hd := readHeaders(t, rec.Header(), "default")
		q, w := int(hd.q), time.Duration(hd.w)*time.Second
		send := func(what string) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("window %v: %s at %v refused", window, what, mock.Now().Sub(time.Unix(0, 0)))
			}
		}
		for range 3 { // q at once, every w
			for range q {
				send("burst")
			}
			mock.Add(w)
		}
		for range 3 * q { // one every w/q
			send("steady")
			mock.Add(w / time.Duration(q))
		}
		mock.Add(w)
		for range 3 { // half a burst at the end of a period, half at the start of the next
			mock.Add(w - time.Millisecond)
			for range q / 2 {
				send("split burst")
			}
			mock.Add(time.Millisecond)
			for range q - q/2 {
				send("split burst")
			}
			mock.Add(w)
		}
	}
}

// TestMiddlewarePolicyValues checks q and w for rates that are not whole
// units and seconds (rounded to understate the rate), after SetRate, and
// the policy's name and unit as Strings.
func TestMiddlewarePolicyValues(t *testing.T) {
	mock := clock.NewMock()
	keyed := ratelimit.NewKeyed[string](2.5, 1500*time.Millisecond, ratelimit.WithClock(mock))
	name := `a "quoted" \ name`
	h := throttle.NewMiddleware(throttle.PerKey(keyed), throttle.WithPolicyName(name),
		throttle.WithQuotaUnit("content-bytes")).Handler(okHandler)
	get := func() http.Header {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		return rec.Header()
	}
	hdr := get()
	items, err := headerList(hdr, "RateLimit-Policy")
	if err != nil || len(items) != 1 {
		t.Fatalf("RateLimit-Policy %q: %v", hdr.Values("RateLimit-Policy"), err)
	}
	if items[0].Value != name {
		t.Errorf("policy name %#v, want %q", items[0].Value, name)
	}
	if qu, _ := items[0].param("qu"); qu != "content-bytes" {
		t.Errorf("qu = %#v, want the String content-bytes", qu)
	}
	q, _ := intParam(items[0], "q")
	w, _ := intParam(items[0], "w")
	if q != 2 || w != 2 {
		t.Errorf("2.5 per 1.5 s: q=%d w=%d, want q=2 w=2", q, w)
	}
	// 1.5 units remain: r=1; the unit drains in 0.6 s: t=1.
	items, err = headerList(hdr, "RateLimit")
	if err != nil || len(items) != 1 || items[0].Value != name {
		t.Fatalf("RateLimit %q: %v", hdr.Values("RateLimit"), err)
	}
	if r, _ := intParam(items[0], "r"); r != 1 {
		t.Errorf("r=%d, want 1", r)
	}

	keyed.SetRate(0.5, 250*time.Millisecond)
	items, _ = headerList(get(), "RateLimit-Policy")
	q, _ = intParam(items[0], "q")
	w, _ = intParam(items[0], "w")
	if q != 0 || w != 1 {
		t.Errorf("after SetRate(0.5, 250ms): q=%d w=%d, want q=0 w=1", q, w)
	}
	keyed.SetRate(3e15, time.Hour)
	items, _ = headerList(get(), "RateLimit-Policy")
	if q, _ = intParam(items[0], "q"); q != 999_999_999_999_999 {
		t.Errorf("after SetRate(3e15, 1h): q=%d, want the largest Integer", q)
	}
}

// TestMiddlewareExceedsCapacity checks the answer to a cost that can never
// fit: 413, the policy, and no Retry-After.
func TestMiddlewareExceedsCapacity(t *testing.T) {
	keyed := ratelimit.NewKeyed[string](10, time.Second, ratelimit.WithClock(clock.NewMock()))
	called := false
	h := throttle.NewMiddleware(throttle.PerKey(keyed),
		throttle.WithRequestCost(func(*http.Request) float64 { return 11 })).
		Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	resp := rec.Result()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || called {
		t.Fatalf("status %d, handler called %v; want 413, not called", resp.StatusCode, called)
	}
	hd := readHeaders(t, resp.Header, "default")
	if hd != (rateHeaders{q: 10, w: 1, r: -1, t: -1, retryAfter: -1}) {
		t.Errorf("headers %v, want the policy alone", hd)
	}
	p := readProblem(t, resp)
	if !strings.Contains(p.Detail, "costs 11 units") || !strings.Contains(p.Detail, "quota of 10") {
		t.Errorf("detail %q does not say the cost and the quota", p.Detail)
	}
	if keyed.Len() != 0 {
		t.Errorf("the refused key is held")
	}
}

// nopWriter is a ResponseWriter that keeps the status and drops the body,
// reused from one request to the next.
type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(code int)        { w.code = code }

// TestMiddlewareMillionKeys sends a million requests from distinct
// addresses of 10.0.0.0/8 to a Keyed capped at 1,000 keys: the first
// thousand are admitted, the others refused with a Retry-After of a
// Period and a sixteenth (60 s and 3.75 s, rounded up), and neither the
// Keyed nor the heap grows with them.
func TestMiddlewareMillionKeys(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000 // one goroutine: the race detector has nothing to find
	}
	const maxKeys = 1000
	keyed := ratelimit.NewKeyed[string](1, time.Minute, ratelimit.WithClock(clock.NewMock()), ratelimit.WithMaxKeys(maxKeys))
	h := throttle.NewMiddleware(throttle.PerKey(keyed)).Handler(okHandler)
	req := httptest.NewRequest("GET", "/", nil)
	w := &nopWriter{h: http.Header{}}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	admitted, refused := 0, 0
	buf := make([]byte, 0, 32)
	for i := range n {
		i += 1 << 16 // 10.1.0.0 and on
		buf = strconv.AppendInt(append(buf[:0], "10."...), int64(i>>16&255), 10)
		buf = strconv.AppendInt(append(buf, '.'), int64(i>>8&255), 10)
		buf = strconv.AppendInt(append(buf, '.'), int64(i&255), 10)
		req.RemoteAddr = string(append(buf, ":4321"...))
		clear(w.h)
		w.code = 200
		h.ServeHTTP(w, req)
		switch w.code {
		case http.StatusOK:
			admitted++
		case http.StatusTooManyRequests:
			refused++
			if ra := w.h.Get("Retry-After"); ra != "64" {
				t.Fatalf("key %d refused at the cap with Retry-After %q, want 64", i, ra)
			}
		default:
			t.Fatalf("status %d", w.code)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if admitted != maxKeys || refused != n-maxKeys {
		t.Errorf("%d admitted, %d refused; want %d and %d", admitted, refused, maxKeys, n-maxKeys)
	}
	if l := keyed.Len(); l > maxKeys {
		t.Errorf("the Keyed holds %d keys, more than its cap of %d", l, maxKeys)
	}
	// Uncapped, a million keys would hold about 20 MB.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Errorf("the heap grew by %d bytes over %d keys", grew, n)
	}
}

// TestMiddlewareLimitErrors checks the answers to a Limit that fails: by
// default 503 and a log line, 500 for an invalid cost, and the handler of
// WithLimitErrorHandler if given, with the error.
func TestMiddlewareLimitErrors(t *testing.T) {
	var logged bytes.Buffer
	log.SetOutput(&logged)
	defer log.SetOutput(io.Discard) // as before: the test binary's log is not read
	defer log.SetOutput(log.Writer())

	errDown := errors.New("redis: connection refused")
	down := &recordingLimit{decide: func(string, float64) ratelimit.Decision { return ratelimit.Decision{Err: errDown} }}
	rec := httptest.NewRecorder()
	throttle.NewMiddleware(down).Handler(okHandler).ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	resp := rec.Result()
	if p := readProblem(t, resp); resp.StatusCode != 503 || strings.Contains(p.Detail, "redis") {
		t.Errorf("status %d, problem %+v; want 503 that does not show the error", resp.StatusCode, p)
	}
	if !strings.Contains(logged.String(), errDown.Error()) || !strings.Contains(logged.String(), `"/x"`) {
		t.Errorf("log %q does not name the error and the path", logged.String())
	}

	keyed := ratelimit.NewKeyed[string](10, time.Second, ratelimit.WithClock(clock.NewMock()))
	rec = httptest.NewRecorder()
	throttle.NewMiddleware(throttle.PerKey(keyed), throttle.WithRequestCost(func(*http.Request) float64 { return math.NaN() })).
		Handler(okHandler).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("NaN cost: status %d, want 500", rec.Code)
	}

	var got error
	rec = httptest.NewRecorder()
	throttle.NewMiddleware(down, throttle.WithLimitErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
		got = err
		okHandler.ServeHTTP(w, r) // fail open
	})).Handler(okHandler).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if got != errDown || rec.Body.String() != "ok" {
		t.Errorf("handler got %v, body %q; want %v, ok", got, rec.Body, errDown)
	}

	// A client gone: nothing to answer, nothing to report.
	got = nil
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := &nopWriter{h: http.Header{}}
	throttle.NewMiddleware(down, throttle.WithLimitErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
		got = err
	})).Handler(okHandler).ServeHTTP(w, httptest.NewRequestWithContext(ctx, "GET", "/", nil))
	if got != nil || w.code != 0 || len(w.h) != 0 {
		t.Errorf("client gone: handler got %v, status %d, headers %v; want nothing", got, w.code, w.h)
	}
}

// TestMiddlewareRefusedHandler checks that WithRefusedHandler writes the
// refusal, with the headers already set.
func TestMiddlewareRefusedHandler(t *testing.T) {
	keyed := ratelimit.NewKeyed[string](1, time.Minute, ratelimit.WithClock(clock.NewMock()))
	h := throttle.NewMiddleware(throttle.PerKey(keyed), throttle.WithRefusedHandler(http.HandlerFunc(
		func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, "<p>slow down</p>")
		}))).Handler(okHandler)
	for i, want := range []int{200, 429} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != want {
			t.Fatalf("request %d: status %d, want %d", i, rec.Code, want)
		}
		if i == 1 {
			hd := readHeaders(t, rec.Header(), "default")
			if hd != (rateHeaders{q: 1, w: 60, r: 0, t: 60, retryAfter: 60}) || rec.Body.String() != "<p>slow down</p>" {
				t.Errorf("headers %v, body %q", hd, rec.Body)
			}
		}
	}
}

// TestMiddlewareGlobal checks that a Global limit holds every client to
// one limiter, computes no key (so an address it could not parse is no
// error), and works with a Limiter and one key of a Keyed.
func TestMiddlewareGlobal(t *testing.T) {
	mock := clock.NewMock()
	for name, l := range map[string]throttle.GlobalLimiter{
		"Limiter":    ratelimit.New(2, time.Second, ratelimit.WithClock(mock)),
		"KeyLimiter": ratelimit.NewKeyed[string](2, time.Second, ratelimit.WithClock(mock)).Key("all"),
	} {
		h := throttle.NewMiddleware(throttle.Global(l)).Handler(okHandler)
		var got []int
		for _, remote := range []string{"192.0.2.1:1", "198.51.100.1:1", "pipe"} {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = remote
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got = append(got, rec.Code)
		}
		if want := []int{200, 200, 429}; !equal(got, want) {
			t.Errorf("%s: statuses %v, want %v", name, got, want)
		}
	}
}

// TestNewMiddlewarePanics checks that each misuse panics at construction,
// naming what is wrong.
func TestNewMiddlewarePanics(t *testing.T) {
	keyed := throttle.PerKey(ratelimit.NewKeyed[string](1, time.Second))
	global := throttle.Global(ratelimit.New(1, time.Second))
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"nil Limit", func() { throttle.NewMiddleware(nil) }, "nil Limit"},
		{"nil Keyed", func() { throttle.PerKey(nil) }, "nil Keyed"},
		{"nil GlobalLimiter", func() { throttle.Global(nil) }, "nil GlobalLimiter"},
		{"nil handler", func() { throttle.NewMiddleware(keyed).Handler(nil) }, "nil http.Handler"},
		{"two keys", func() { throttle.NewMiddleware(keyed, throttle.KeyByIP(), throttle.KeyByHeader("X-Key")) }, "both KeyByIP and KeyByHeader"},
		{"two keys again", func() {
			throttle.NewMiddleware(keyed, throttle.KeyBy(func(*http.Request) (string, error) { return "", nil }), throttle.KeyByHeader("X-Key"))
		}, "both KeyBy and KeyByHeader"},
		{"key with Global", func() { throttle.NewMiddleware(global, throttle.KeyByHeader("X-Key")) }, "KeyByHeader has no effect with a Global limit"},
		{"IPv6 with Global", func() { throttle.NewMiddleware(global, throttle.WithIPv6Prefix(56)) }, "WithIPv6Prefix has no effect"},
		{"length with Global", func() { throttle.NewMiddleware(global, throttle.WithMaxKeyLength(9)) }, "WithMaxKeyLength has no effect"},
		{"IPv6 with header", func() { throttle.NewMiddleware(keyed, throttle.KeyByHeader("X-Key"), throttle.WithIPv6Prefix(56)) }, "WithIPv6Prefix applies only to keys by IP"},
		{"key length 0", func() { throttle.WithMaxKeyLength(0) }, "WithMaxKeyLength: n 0 must be >= 1"},
		{"negative wait", func() { throttle.WithMaxWait(-time.Second) }, "WithMaxWait: d -1s must be >= 0"},
		{"empty name", func() { throttle.WithPolicyName("") }, `WithPolicyName: name ""`},
		{"non-ASCII name", func() { throttle.WithPolicyName("été") }, "WithPolicyName: name"},
		{"control in unit", func() { throttle.WithQuotaUnit("a\nb") }, "WithQuotaUnit: unit"},
		{"IPv6 bits 0", func() { throttle.WithIPv6Prefix(0) }, "WithIPv6Prefix: bits 0 must be from 1 to 128"},
		{"IPv6 bits 129", func() { throttle.WithIPv6Prefix(129) }, "bits 129"},
		{"header name", func() { throttle.KeyByHeader("X Key") }, `KeyByHeader: "X Key" is not a valid header name`},
		{"nil KeyBy", func() { throttle.KeyBy(nil) }, "KeyBy: nil function"},
		{"invalid prefix", func() { throttle.KeyByIP(netip.Prefix{}) }, "KeyByIP: invalid prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				s, _ := r.(string)
				if !strings.HasPrefix(s, "throttle: ") || !strings.Contains(s, tt.want) {
					t.Errorf("panic %v, want one naming %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
}

// TestMiddlewareBadInput sends a real server what a client may send: 10 KB
// headers, addresses that are not, lists with holes, from behind a
// trusted proxy (127.0.0.1) and keyed by a header. No request may panic or
// get other than 200, 400 or 429.
func TestMiddlewareBadInput(t *testing.T) {
	mock := clock.NewMock()
	byIP := serve(t, throttle.NewMiddleware(
		throttle.PerKey(ratelimit.NewKeyed[string](1000, time.Second, ratelimit.WithClock(mock))),
		throttle.KeyByIP(netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"))).
		Handler(okHandler))
	byHeader := serve(t, throttle.NewMiddleware(
		throttle.PerKey(ratelimit.NewKeyed[string](1000, time.Second, ratelimit.WithClock(mock))),
		throttle.KeyByHeader("X-Api-Key")).Handler(okHandler))

	kb10 := strings.Repeat("x", 10<<10)
	trustedHops := strings.TrimSuffix(strings.Repeat("10.1.2.3, ", 1000), ", ")
	for _, tt := range []struct {
		name string
		c    client
		hdr  []string
		want int
	}{
		{"10 KB X-Forwarded-For", byIP, []string{xff, kb10}, 400},
		{"10 KB X-Real-IP", byIP, []string{xRealIP, kb10}, 400},
		{"10 KB of trusted hops", byIP, []string{xff, trustedHops}, 200},
		{"10 KB of trusted hops after a client", byIP, []string{xff, "203.0.113.1, " + trustedHops}, 200},
		{"10 KB of commas", byIP, []string{xff, strings.Repeat(",", 10<<10)}, 200},
		{"unclosed bracket", byIP, []string{xff, "[2001:db8::1"}, 400},
		{"brackets only", byIP, []string{xff, "[]"}, 400},
		{"port only", byIP, []string{xff, ":80"}, 400},
		{"port too large", byIP, []string{xff, "203.0.113.1:65536"}, 400},
		{"zone only", byIP, []string{xff, "%eth0"}, 400},
		{"mapped junk", byIP, []string{xff, "::ffff:"}, 400},
		{"Forwarded syntax", byIP, []string{xff, `for="[2001:db8::1]"`}, 400},
		{"unicode", byIP, []string{xff, "２０３.0.113.1"}, 400},
		{"10 KB API key", byHeader, []string{"X-Api-Key", kb10}, 400},
		{"257-byte API key", byHeader, []string{"X-Api-Key", strings.Repeat("k", 257)}, 400},
		{"256-byte API key", byHeader, []string{"X-Api-Key", strings.Repeat("k", 256)}, 200},
		{"no API key", byHeader, nil, 400},
	} {
		resp, body := tt.c.get(tt.hdr...)
		if resp.StatusCode != tt.want {
			t.Errorf("%s: status %d (%s), want %d", tt.name, resp.StatusCode, body, tt.want)
		}
	}
}

// memListener is an in-memory net.Listener for a server inside a
// synctest bubble, where real sockets would not let the bubble settle: each
// client's dial makes a net.Pipe, whose server end comes from the
// address the client was made with.
type memListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newMemListener() *memListener {
	return &memListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *memListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80} }

// client returns an HTTP client whose connections reach l from remote, a
// RemoteAddr, without keep-alives.
func (l *memListener) client(remote string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			srv, cli := net.Pipe()
			select {
			case l.conns <- memConn{srv, memAddr(remote)}:
				return cli, nil
			case <-l.closed:
				return nil, net.ErrClosed
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}}
}

type memAddr string

func (a memAddr) Network() string { return "pipe" }
func (a memAddr) String() string  { return string(a) }

type memConn struct {
	net.Conn
	remote net.Addr
}

func (c memConn) RemoteAddr() net.Addr { return c.remote }

// memServer starts a real server of h on a memListener.
func memServer(h http.Handler) (*httptest.Server, *memListener) {
	l := newMemListener()
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: h}}
	srv.Start()
	return srv, l
}

// waitResult is what a client got for one request sent in a bubble.
type waitResult struct {
	status int
	at     time.Duration // since the start of the test
	header http.Header
	err    error
}

// TestMiddlewareMaxWait queues requests from one client on a real server
// inside a synctest bubble: those whose wait is shorter than MaxWait are
// admitted in order as the bucket drains, the one whose wait is longer is
// refused at once, with that wait in Retry-After.
func TestMiddlewareMaxWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keyed := ratelimit.NewKeyed[string](1, time.Second)
		start := time.Now()
		var mu sync.Mutex
		var order []string
		h := throttle.NewMiddleware(throttle.PerKey(keyed), throttle.WithMaxWait(3500*time.Millisecond)).
			Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				order = append(order, r.Header.Get("X-I"))
				mu.Unlock()
			}))
		srv, l := memServer(h)
		defer srv.Close()
		c := l.client("192.0.2.1:1000")

		results := make([]waitResult, 5)
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * time.Millisecond) // arrive in order, 1 ms apart
				req, _ := http.NewRequest("GET", srv.URL, nil)
				req.Header.Set("X-I", strconv.Itoa(i))
				resp, err := c.Do(req)
				if err != nil {
					results[i].err = err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				results[i] = waitResult{resp.StatusCode, time.Since(start), resp.Header, nil}
			})
		}
		wg.Wait()
		want := []struct {
			status int
			at     time.Duration
			hd     rateHeaders
		}{
			// Each admitted with nothing remaining, until the bucket has
			// drained its own unit and those of the requests still
			// waiting behind it.
			{200, 0, rateHeaders{q: 1, w: 1, r: 0, t: 1, retryAfter: -1}},
			{200, time.Second, rateHeaders{q: 1, w: 1, r: 0, t: 3, retryAfter: -1}},
			{200, 2 * time.Second, rateHeaders{q: 1, w: 1, r: 0, t: 2, retryAfter: -1}},
			{200, 3 * time.Second, rateHeaders{q: 1, w: 1, r: 0, t: 1, retryAfter: -1}},
			// Its turn is at 4 s, 3.996 s away: refused at once.
			{429, 4 * time.Millisecond, rateHeaders{q: 1, w: 1, r: 0, t: 4, retryAfter: 4}},
		}
		for i, w := range want {
			got := results[i]
			if got.err != nil {
				t.Fatalf("request %d: %v", i, got.err)
			}
			if got.status != w.status || got.at != w.at {
				t.Errorf("request %d: %d at %v, want %d at %v", i, got.status, got.at, w.status, w.at)
			}
			if hd := readHeaders(t, got.header, "default"); hd != w.hd {
				t.Errorf("request %d: %v, want %v", i, hd, w.hd)
			}
		}
		if want := []string{"0", "1", "2", "3"}; !equal(order, want) {
			t.Errorf("handled %v, want %v", order, want)
		}
	})
}

// TestMiddlewareMaxWaitClientLeaves cancels a queued request on a real
// server: the request behind it is admitted when the cancelled one would
// have been, and the handler never sees the cancelled one.
func TestMiddlewareMaxWaitClientLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keyed := ratelimit.NewKeyed[string](1, time.Second)
		start := time.Now()
		var mu sync.Mutex
		handled := map[string]time.Duration{}
		h := throttle.NewMiddleware(throttle.PerKey(keyed), throttle.WithMaxWait(10*time.Second)).
			Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				handled[r.Header.Get("X-I")] = time.Since(start)
				mu.Unlock()
			}))
		srv, l := memServer(h)
		defer srv.Close()
		c := l.client("[2001:db8::1]:1000")

		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * time.Millisecond)
				ctx := context.Background()
				if i == 1 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(ctx)
					time.AfterFunc(500*time.Millisecond, cancel)
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
				req.Header.Set("X-I", strconv.Itoa(i))
				resp, err := c.Do(req)
				if err != nil {
					errs[i] = err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		wg.Wait()
		if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], context.Canceled) {
			t.Errorf("errors %v, want only the second cancelled", errs)
		}
		want := map[string]time.Duration{"0": 0, "2": time.Second}
		if len(handled) != len(want) || handled["0"] != want["0"] || handled["2"] != want["2"] {
			t.Errorf("handled %v, want %v", handled, want)
		}
		if n := keyed.Waiting("2001:db8::/64"); n != 0 {
			t.Errorf("%d callers still wait on the key", n)
		}
	})
}

// TestMiddlewareWaitOutcomes checks, with a scripted Limit, what a request
// that waits is answered for each way Acquire ends.
func TestMiddlewareWaitOutcomes(t *testing.T) {
	refused := func(string, float64) ratelimit.Decision {
		return ratelimit.Decision{Remaining: 0.5, RetryAfter: time.Second, Reset: 3 * time.Second}
	}
	errDown := errors.New("redis down")
	tests := []struct {
		name    string
		acquire error
		decide  func(key string, cost float64) ratelimit.Decision
		cancel  bool
		status  int
		hd      rateHeaders
		costs   []float64 // what Allow was asked
	}{
		{"admitted", nil, nil, false, 200,
			rateHeaders{q: 10, w: 60, r: 10, t: 0, retryAfter: -1}, []float64{2, 0}},
		{"deadline cannot be met", &ratelimit.DeadlineError{Amount: 2, Wait: 2500 * time.Millisecond}, nil, false, 429,
			rateHeaders{q: 10, w: 60, r: 0, t: 3, retryAfter: 3}, []float64{2}},
		{"deadline passed while waiting", context.DeadlineExceeded, nil, false, 429,
			rateHeaders{q: 10, w: 60, r: 0, t: 1, retryAfter: 1}, []float64{2, 2}},
		{"at the cap", fmt.Errorf("key: %w", ratelimit.ErrTooManyKeys), nil, false, 429,
			rateHeaders{q: 10, w: 60, r: 0, t: 60, retryAfter: 60}, []float64{2}},
		{"capacity lowered", fmt.Errorf("x: %w", ratelimit.ErrExceedsCapacity), nil, false, 413,
			rateHeaders{q: 10, w: 60, r: -1, t: -1, retryAfter: -1}, []float64{2}},
		{"limit error", errDown, nil, false, 503,
			rateHeaders{-1, -1, -1, -1, -1}, []float64{2}},
		{"client left", context.Canceled, nil, true, 0,
			rateHeaders{-1, -1, -1, -1, -1}, []float64{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := &recordingLimit{acquire: func(ctx context.Context, _ string, _ float64) error {
				if d, ok := ctx.Deadline(); !ok || d.IsZero() {
					t.Errorf("Acquire without a deadline")
				}
				return tt.acquire
			}}
			lim.decide = func(key string, cost float64) ratelimit.Decision {
				if cost == 0 {
					return ratelimit.Decision{OK: true, Remaining: 10}
				}
				return refused(key, cost)
			}
			var gotErr error
			called := false
			h := throttle.NewMiddleware(lim, throttle.WithMaxWait(2*time.Second),
				throttle.WithRequestCost(func(*http.Request) float64 { return 2 }),
				throttle.WithLimitErrorHandler(func(w http.ResponseWriter, _ *http.Request, err error) {
					gotErr = err
					w.WriteHeader(503)
				})).
				Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					called = true
					w.WriteHeader(http.StatusOK)
				}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			rec := &nopWriter{h: http.Header{}}
			h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "GET", "/", nil))
			if rec.code != tt.status || called != (tt.status == 200) {
				t.Errorf("status %d, handler called %v; want %d", rec.code, called, tt.status)
			}
			if tt.status == 0 && len(rec.h) != 0 {
				t.Errorf("headers %v written for a client that left", rec.h)
			}
			if hd := readHeaders(t, rec.h, "default"); hd != tt.hd {
				t.Errorf("%v, want %v", hd, tt.hd)
			}
			if tt.status == 503 && gotErr != errDown {
				t.Errorf("limit error handler got %v", gotErr)
			}
			lim.mu.Lock()
			defer lim.mu.Unlock()
			if !equal(lim.costs, tt.costs) {
				t.Errorf("Allow asked for %v, want %v", lim.costs, tt.costs)
			}
		})
	}

	// A wait of MaxWait or more is refused at once, with no Acquire.
	lim := &recordingLimit{
		decide:  func(string, float64) ratelimit.Decision { return ratelimit.Decision{RetryAfter: 2 * time.Second} },
		acquire: func(context.Context, string, float64) error { t.Error("Acquire called"); return nil },
	}
	rec := httptest.NewRecorder()
	throttle.NewMiddleware(lim, throttle.WithMaxWait(2*time.Second)).Handler(okHandler).
		ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "2" {
		t.Errorf("status %d, Retry-After %q; want 429, 2", rec.Code, rec.Header().Get("Retry-After"))
	}
}

// TestMiddlewareAddsToFields checks how a Middleware adds its items to
// RateLimit-Policy and RateLimit fields that an earlier Middleware (or
// any handler before it) set: after theirs, in one line, in place of any
// item of its own policy name, without splitting a member at a comma
// within a String or an Inner List, and keeping a member it cannot parse.
// An item of its name is taken out of RateLimit even when it has no
// RateLimit item to put there (its Limit failed to report the state
// after a wait).
func TestMiddlewareAddsToFields(t *testing.T) {
	const (
		ourPolicy = `"default";q=10;w=60`
		ourRL     = `"default";r=10;t=0`
	)
	tests := []struct {
		name               string
		policy, rl         []string // the fields before; nil for none
		wantPolicy, wantRL []string
	}{
		{"none", nil, nil, []string{ourPolicy}, []string{ourRL}},
		{"another policy", []string{`"a";q=1;w=1`}, []string{`"a";r=0;t=1`},
			[]string{`"a";q=1;w=1, ` + ourPolicy}, []string{`"a";r=0;t=1, ` + ourRL}},
		{"the same name", []string{`"default";q=5;w=5, "a";q=1;w=1`}, []string{`"default";r=5;t=5,"a";r=0;t=1`},
			[]string{`"a";q=1;w=1, ` + ourPolicy}, []string{`"a";r=0;t=1, ` + ourRL}},
		{"two lines", []string{`"a";q=1;w=1`, ` "default";q=5;w=5 ,	"b";q=2;w=2`}, nil,
			[]string{`"a";q=1;w=1, "b";q=2;w=2, ` + ourPolicy}, []string{ourRL}},
		{"commas and quotes in names", []string{`"x,\"default\"";q=1;w=1, "default\\";q=2;w=2`}, nil,
			[]string{`"x,\"default\"";q=1;w=1, "default\\";q=2;w=2, ` + ourPolicy}, []string{ourRL}},
		{"escapes before the end of a name", []string{`"x\\\"";q=1, "default";q=2`}, nil,
			[]string{`"x\\\"";q=1, ` + ourPolicy}, []string{ourRL}},
		{"a longer name", []string{`"default2";q=1;w=1, "defaults"`}, nil,
			[]string{`"default2";q=1;w=1, "defaults", ` + ourPolicy}, []string{ourRL}},
		{"a name and more", []string{`"default"x;q=1`}, nil,
			[]string{`"default"x;q=1, ` + ourPolicy}, []string{ourRL}},
		{"inner list", []string{`("default" "a");q=1, "default";q=3`}, nil,
			[]string{`("default" "a");q=1, ` + ourPolicy}, []string{ourRL}},
		{"empty members", []string{``, `,, "a";q=1;w=1,`}, nil,
			[]string{`"a";q=1;w=1, ` + ourPolicy}, []string{ourRL}},
		{"RateLimit alone", nil, []string{`"a";r=1;t=1`},
			[]string{ourPolicy}, []string{`"a";r=1;t=1, ` + ourRL}},
		{"unterminated String", []string{`"a;q=1, "default";q=2`}, nil,
			[]string{`"a;q=1, "default";q=2, ` + ourPolicy}, []string{ourRL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mw := throttle.NewMiddleware(&recordingLimit{}).Handler(okHandler)
			rec := httptest.NewRecorder()
			before := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := w.Header()
				if tt.policy != nil {
					h["Ratelimit-Policy"] = tt.policy
				}
				if tt.rl != nil {
					h["Ratelimit"] = tt.rl
				}
				mw.ServeHTTP(w, r)
			})
			policy, rl := slices.Clone(tt.policy), slices.Clone(tt.rl)
			before.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			if got := rec.Header().Values("RateLimit-Policy"); !equal(got, tt.wantPolicy) {
				t.Errorf("RateLimit-Policy %q, want %q", got, tt.wantPolicy)
			}
			if got := rec.Header().Values("RateLimit"); !equal(got, tt.wantRL) {
				t.Errorf("RateLimit %q, want %q", got, tt.wantRL)
			}
			if !equal(policy, tt.policy) || !equal(rl, tt.rl) {
				t.Errorf("the fields before were written to: %q, %q", tt.policy, tt.rl)
			}
		})
	}

	// Admitted after a wait, with no state to report.
	lim := &recordingLimit{decide: func(_ string, cost float64) ratelimit.Decision {
		if cost == 0 {
			return ratelimit.Decision{Err: errors.New("redis down")}
		}
		return ratelimit.Decision{RetryAfter: time.Second}
	}}
	mw := throttle.NewMiddleware(lim, throttle.WithMaxWait(2*time.Second)).Handler(okHandler)
	for _, tt := range []struct{ rl, want []string }{
		{[]string{`"default";r=5;t=5, "a";r=1;t=1`}, []string{`"a";r=1;t=1`}},
		{[]string{`"default";r=5;t=5`}, nil},
	} {
		w := &nopWriter{h: http.Header{"Ratelimit": tt.rl}}
		mw.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		if got := w.h.Values("RateLimit"); w.code != 0 || !equal(got, tt.want) ||
			!equal(w.h.Values("RateLimit-Policy"), []string{`"default";q=10;w=60`}) {
			t.Errorf("after RateLimit %q: RateLimit %q, RateLimit-Policy %q; want %q",
				tt.rl, got, w.h.Values("RateLimit-Policy"), tt.want)
		}
	}
}

// TestMiddlewareMaxWaitHoldsBody checks, with a scripted Limit, which
// requests have their body read before they wait (see WithMaxWait), and
// that the handler reads what the body held either way: the bytes, then
// the end or the error the body came to, or the rest of a body longer than
// its Content-Length. A request that does not wait is not touched. The
// body's client takes a second to send it, in a synctest bubble: the wait
// of MaxWait starts once it has.
func TestMiddlewareMaxWaitHoldsBody(t *testing.T) {
	errBroken := errors.New("connection broke")
	const limit = 64 << 10
	tests := []struct {
		name    string
		body    string
		length  int64 // the declared Content-Length
		failAt  int   // the body fails with errBroken after failAt bytes; -1 never
		expect  bool  // an Expect: 100-continue header
		http2   bool
		wait    bool  // whether Allow asks the request to wait
		readAt  int   // the bytes read from the body when Acquire is called
		wantErr error // what the handler's read ends with
	}{
		{"small", "hello", 5, -1, false, false, true, 5, nil},
		{"64 KiB", strings.Repeat("x", limit), limit, -1, false, false, true, limit, nil},
		{"over 64 KiB", strings.Repeat("x", limit+1), limit + 1, -1, false, false, true, 0, nil},
		{"Expect", "hello", 5, -1, true, false, true, 0, nil},
		{"HTTP/2", "hello", 5, -1, false, true, true, 0, nil},
		{"unknown length", "hello", -1, -1, false, false, true, 0, nil},
		{"longer than declared", "0123456789", 4, -1, false, false, true, 5, nil},
		{"broken", "abcdefgh", 8, 3, false, false, true, 3, errBroken},
		{"not waiting", "hello", 5, -1, false, false, false, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				body := &countingBody{r: strings.NewReader(tt.body), failAt: tt.failAt, err: errBroken, delay: time.Second}
				readAt := -1
				lim := &recordingLimit{
					decide: func(_ string, cost float64) ratelimit.Decision {
						if cost == 0 || !tt.wait {
							return ratelimit.Decision{OK: true, Remaining: 1}
						}
						return ratelimit.Decision{RetryAfter: time.Second}
					},
					acquire: func(ctx context.Context, _ string, _ float64) error {
						readAt = body.n
						if d, _ := ctx.Deadline(); time.Until(d) != 2*time.Second {
							t.Errorf("Acquire called with %v left of a MaxWait of 2s", time.Until(d))
						}
						return nil
					},
				}
				var got []byte
				var gotErr error
				var handlerSaw int
				h := throttle.NewMiddleware(lim, throttle.WithMaxWait(2*time.Second)).
					Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						handlerSaw = body.n
						got, gotErr = io.ReadAll(r.Body)
						r.Body.Close()
					}))
				req := httptest.NewRequest("POST", "/", nil)
				req.Body, req.ContentLength = body, tt.length
				if tt.expect {
					req.Header.Set("Expect", "100-continue")
				}
				if tt.http2 {
					req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d", rec.Code)
				}
				if tt.wait && readAt != tt.readAt {
					t.Errorf("%d bytes read when the request waits, want %d", readAt, tt.readAt)
				}
				if !tt.wait && handlerSaw != 0 {
					t.Errorf("%d bytes read before a request that did not wait reached the handler", handlerSaw)
				}
				want := tt.body
				if tt.failAt >= 0 {
					want = tt.body[:tt.failAt]
				}
				if string(got) != want || gotErr != tt.wantErr {
					t.Errorf("the handler read %.40q (%d bytes) and %v; want %.40q (%d bytes) and %v",
						got, len(got), gotErr, want, len(want), tt.wantErr)
				}
				if !body.closed {
					t.Errorf("closing the handler's body did not close the request's")
				}
			})
		})
	}
}

// countingBody is a request body that counts the bytes read from it, and
// fails with err after failAt bytes, unless failAt is -1. Its first Read
// sleeps for delay.
type countingBody struct {
	r      io.Reader
	n      int
	failAt int
	err    error
	delay  time.Duration
	closed bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	time.Sleep(b.delay)
	b.delay = 0
	if b.failAt >= 0 {
		if b.n >= b.failAt {
			return 0, b.err
		}
		p = p[:min(len(p), b.failAt-b.n)]
	}
	n, err := b.r.Read(p)
	b.n += n
	return n, err
}

func (b *countingBody) Close() error {
	b.closed = true
	return nil
}

// BenchmarkMiddleware measures a request through the Middleware and
// through the bare handler, from 10,000 client addresses, on a Keyed that
// admits them all (wrapped: 100,000 a key every 10 hours, so that every
// key holds state) or refuses them all (refused): wrapped less bare is
// the Middleware's cost per request. Each runs on a new
// httptest.ResponseRecorder per request (recorder), which copies the
// headers when the status is written, and on one writer whose header map
// is cleared and reused (reused), which leaves the Middleware's own
// allocations.
func BenchmarkMiddleware(b *testing.B) {
	const keys = 10_000
	reqs := make([]*http.Request, keys)
	for i := range reqs {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 1024+i)
		reqs[i] = r
	}
	bare := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	open := ratelimit.NewKeyed[string](100_000, 10*time.Hour)
	full := ratelimit.NewKeyed[string](1, time.Hour)
	for _, r := range reqs {
		full.Allow(r.RemoteAddr[:strings.LastIndexByte(r.RemoteAddr, ':')], 1)
	}
	handlers := []struct {
		name string
		h    http.Handler
		want int
	}{
		{"bare", bare, http.StatusOK},
		{"wrapped", throttle.NewMiddleware(throttle.PerKey(open)).Handler(bare), http.StatusOK},
		{"refused", throttle.NewMiddleware(throttle.PerKey(full)).Handler(bare), http.StatusTooManyRequests},
	}
	for _, hc := range handlers {
		b.Run("recorder/"+hc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				rec := httptest.NewRecorder()
				hc.h.ServeHTTP(rec, reqs[i%keys])
				if rec.Code != hc.want {
					b.Fatalf("status %d", rec.Code)
				}
				i++
			}
		})
	}
	for _, hc := range handlers {
		b.Run("reused/"+hc.name, func(b *testing.B) {
			b.ReportAllocs()
			w := &nopWriter{h: http.Header{}}
			i := 0
			for b.Loop() {
				clear(w.h)
				hc.h.ServeHTTP(w, reqs[i%keys])
				if w.code != hc.want {
					b.Fatalf("status %d", w.code)
				}
				i++
			}
		})
	}
}
