package throttle_test

// Adversarial tests of the Middleware: what a client, or a Limit that
// misbehaves, can do to it. TestHTTPAttack* tests are attacks that the code
// withstands; the other tests here failed on the first version of the
// Middleware (each says how) and pin the fix.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"sort"
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

// TestMiddlewareMaxWaitClientWithBodyLeaves is
// TestMiddlewareMaxWaitClientLeaves with POST requests that carry a body:
// the second client hangs up half a second into its wait. net/http notices
// that an HTTP/1.1 client went away only once the request's body has been
// read to its end. The first version waited before anything read the
// body, so the request of the client that left kept its place: it took its
// unit at 1 s and reached the handler, and the third client was admitted
// at 2 s instead of 1 s. Now the Middleware reads a body of up to 64 KiB
// before the request waits: the client that leaves gives up its place at
// 0.5 s, and the handler reads every request's body as it was sent. The
// cases that WithMaxWait says keep their place over HTTP/1.1 (a longer
// body, one of unknown length, Expect: 100-continue) are pinned as such;
// over HTTP/2, the client's leaving is noticed whatever the body.
func TestMiddlewareMaxWaitClientWithBodyLeaves(t *testing.T) {
	const (
		small = 7
		limit = 64 << 10
	)
	tests := []struct {
		name    string
		h2      bool
		size    int
		chunked bool // unknown length
		expect  bool // Expect: 100-continue
		leaves  bool
	}{
		{"HTTP/1.1 small body", false, small, false, false, true},
		{"HTTP/1.1 64 KiB body", false, limit, false, false, true},
		{"HTTP/1.1 body over 64 KiB", false, limit + 1, false, false, false},
		{"HTTP/1.1 chunked body", false, small, true, false, false},
		{"HTTP/1.1 Expect: 100-continue", false, small, false, true, false},
		{"HTTP/2 body over 64 KiB", true, limit + 1, false, false, true},
		{"HTTP/2 chunked body", true, small, true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				keyed := ratelimit.NewKeyed[string](1, time.Second)
				start := time.Now()
				var mu sync.Mutex
				handled := map[string]time.Duration{}
				bodies := map[string]string{}
				h := throttle.NewMiddleware(throttle.PerKey(keyed), throttle.WithMaxWait(10*time.Second)).
					Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						b, err := io.ReadAll(r.Body)
						mu.Lock()
						defer mu.Unlock()
						i := r.Header.Get("X-I")
						handled[i] = time.Since(start)
						if want := map[bool]int{false: 1, true: 2}[tt.h2]; r.ProtoMajor != want {
							t.Errorf("request %s came over %s", i, r.Proto)
						}
						if tt.chunked != (r.ContentLength == -1) {
							t.Errorf("request %s has a Content-Length of %d", i, r.ContentLength)
						}
						if err != nil {
							bodies[i] = "error: " + err.Error()
						} else {
							bodies[i] = string(b)
						}
					}))
				l := newMemListener()
				p := new(http.Protocols)
				if tt.h2 {
					p.SetUnencryptedHTTP2(true)
				} else {
					p.SetHTTP1(true)
				}
				srv := &http.Server{Handler: h, Protocols: p}
				go srv.Serve(l)
				defer srv.Close()
				c := l.client("192.0.2.1:1000")
				c.Transport.(*http.Transport).Protocols = p

				body := func(i int) string {
					return strings.Repeat(strconv.Itoa(i), tt.size)
				}
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
						var b io.Reader = strings.NewReader(body(i))
						if tt.chunked {
							b = io.MultiReader(b) // a length the request cannot know
						}
						req, _ := http.NewRequestWithContext(ctx, "POST", "http://drip.test/", b)
						req.Header.Set("X-I", strconv.Itoa(i))
						if tt.expect {
							req.Header.Set("Expect", "100-continue")
						}
						resp, err := c.Do(req)
						if err != nil {
							errs[i] = err
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							errs[i] = fmt.Errorf("status %d", resp.StatusCode)
						}
					})
				}
				time.Sleep(600 * time.Millisecond)
				synctest.Wait()
				waiting := keyed.Waiting("192.0.2.1")
				wg.Wait()
				if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], context.Canceled) {
					t.Fatalf("errors %v, want only the second cancelled", errs)
				}
				mu.Lock()
				defer mu.Unlock()
				for _, i := range []string{"0", "2"} {
					n, _ := strconv.Atoi(i)
					if got := bodies[i]; got != body(n) {
						t.Errorf("request %s: the handler read %.40q (%d bytes), want the %d bytes sent", i, got, len(got), tt.size)
					}
				}
				if tt.leaves {
					if waiting != 1 {
						t.Errorf("%d requests wait at 0.6 s, want 1: the one whose client hung up at 0.5 s kept its place", waiting)
					}
					if at, ok := handled["1"]; ok {
						t.Errorf("the client that hung up at 0.5 s took a unit and reached the handler at %v", at)
					}
					if handled["2"] != time.Second {
						t.Errorf("the client behind it was admitted at %v, want 1s (handled: %v)", handled["2"], handled)
					}
					return
				}
				// The limit that WithMaxWait documents: the request keeps its
				// place and reaches the handler, and the one behind it waits.
				if waiting != 2 {
					t.Errorf("%d requests wait at 0.6 s, want 2", waiting)
				}
				want := map[string]time.Duration{"0": 0, "1": time.Second, "2": 2 * time.Second}
				if len(handled) != 3 || handled["0"] != want["0"] || handled["1"] != want["1"] || handled["2"] != want["2"] {
					t.Errorf("handled %v, want %v", handled, want)
				}
			})
		})
	}
}

// TestMiddlewareStackedPoliciesListed stacks the two limits a server
// commonly has: a Middleware per client (2 a minute) around one for the
// whole server (100 a minute). The draft lists every policy that applies
// in one field. The first version had each Middleware replace the
// RateLimit and RateLimit-Policy fields, so an admitted response told of
// the inner, server-wide policy alone, r=99: a client that believed it
// (or a Transport with AdoptPolicy, which would adopt 100 a minute) was
// refused on its third request. Now each Middleware adds its item to the
// fields the outer one set: the response lists both policies, the client
// that sends as many requests as the least r allows is admitted, and a
// refusal by either Middleware lists what each said.
func TestMiddlewareStackedPoliciesListed(t *testing.T) {
	mock := clock.NewMock()
	perClient := throttle.NewMiddleware(
		throttle.PerKey(ratelimit.NewKeyed[string](2, time.Minute, ratelimit.WithClock(mock))),
		throttle.WithPolicyName("per-client"))
	server := throttle.NewMiddleware(
		throttle.Global(ratelimit.New(100, time.Minute, ratelimit.WithClock(mock))),
		throttle.WithPolicyName("server"))
	h := perClient.Handler(server.Handler(okHandler))
	send := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		return rec
	}
	rec := send()
	if rec.Code != http.StatusOK {
		t.Fatalf("first request: status %d", rec.Code)
	}
	policies, err := headerList(rec.Header(), "RateLimit-Policy")
	if err != nil {
		t.Fatal(err)
	}
	items, err := headerList(rec.Header(), "RateLimit")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range policies {
		names = append(names, fmt.Sprint(p.Value))
	}
	if !strings.Contains(strings.Join(names, ","), "per-client") {
		t.Errorf("RateLimit-Policy %q: the per-client policy that admitted the request is missing", rec.Header().Values("RateLimit-Policy"))
	}
	// r is what a client may send now: the smallest r of the items.
	r := int64(math.MaxInt64)
	for _, it := range items {
		n, err := intParam(it, "r")
		if err != nil {
			t.Fatal(err)
		}
		r = min(r, n)
	}
	for i := int64(1); i <= r; i++ {
		if rec2 := send(); rec2.Code != http.StatusOK {
			t.Fatalf("RateLimit %q said r=%d, but request %d of those sent right after was refused with %d (%q)",
				rec.Header().Values("RateLimit"), r, i, rec2.Code, rec2.Header().Values("RateLimit-Policy"))
		}
	}

	// The fields exactly, in one line each, the outer policy first; and a
	// refusal by the outer Middleware, which the inner one never sees.
	fields := func(rec *httptest.ResponseRecorder) [3][]string {
		h := rec.Header()
		return [3][]string{h.Values("RateLimit-Policy"), h.Values("RateLimit"), h.Values("Retry-After")}
	}
	want := [3][]string{
		{`"per-client";q=2;w=60, "server";q=100;w=60`},
		{`"per-client";r=1;t=30, "server";r=99;t=1`},
		nil,
	}
	if got := fields(rec); !reflect.DeepEqual(got, want) {
		t.Errorf("first response: %q, want %q", got, want)
	}
	rec = send()
	want = [3][]string{{`"per-client";q=2;w=60`}, {`"per-client";r=0;t=30`}, {"30"}}
	if got := fields(rec); rec.Code != http.StatusTooManyRequests || !reflect.DeepEqual(got, want) {
		t.Errorf("third response: %d %q, want 429 %q", rec.Code, got, want)
	}

	// A refusal by the inner Middleware, for the whole server, after the
	// outer one admitted the client.
	tight := throttle.NewMiddleware(
		throttle.Global(ratelimit.New(1, time.Minute, ratelimit.WithClock(mock))),
		throttle.WithPolicyName("server"))
	h = perClient.Handler(tight.Handler(okHandler))
	for i, want := range []struct {
		code   int
		fields [3][]string
	}{
		{200, [3][]string{{`"per-client";q=2;w=60, "server";q=1;w=60`}, {`"per-client";r=1;t=30, "server";r=0;t=60`}, nil}},
		{429, [3][]string{{`"per-client";q=2;w=60, "server";q=1;w=60`}, {`"per-client";r=0;t=60, "server";r=0;t=60`}, {"60"}}},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = "198.51.100.1:1"
		h.ServeHTTP(rec, req)
		if got := fields(rec); rec.Code != want.code || !reflect.DeepEqual(got, want.fields) {
			t.Errorf("another client's request %d: %d %q, want %d %q", i, rec.Code, got, want.code, want.fields)
		}
	}
}

// TestMiddlewareHeaderSlicesPerResponse: the first version put one
// []string, shared by every response, in the header map of each: the
// RateLimit-Policy value, and the Content-Type of its own answers. Its
// capacity of one protected it from an append, but not from a write to its
// element, which is legal on an http.Header the handler owns: here a
// handler of uploads adds its own policy to the field's one line, as a
// List allows, and a wrapper of the ResponseWriter adds a charset to the
// Content-Type of whatever it writes. Every later response, of every
// handler, then advertised the uploads policy too (and concurrent handlers
// doing so raced). Now each response has slices of its own; the strings
// in them are shared, which is safe, since strings cannot change.
func TestMiddlewareHeaderSlicesPerResponse(t *testing.T) {
	keyed := ratelimit.NewKeyed[string](100, time.Minute, ratelimit.WithClock(clock.NewMock()))
	mux := http.NewServeMux()
	mux.HandleFunc("/upload", func(w http.ResponseWriter, _ *http.Request) {
		if p := w.Header()["Ratelimit-Policy"]; len(p) == 1 {
			p[0] += `, "uploads";q=10;w=60`
		}
	})
	mux.Handle("/", okHandler)
	h := throttle.NewMiddleware(throttle.PerKey(keyed)).Handler(mux)
	get := func(path string) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return strings.Join(rec.Result().Header.Values("RateLimit-Policy"), ", ")
	}
	before := get("/")
	get("/upload")
	get("/upload")
	if after := get("/"); after != before {
		t.Errorf("RateLimit-Policy of GET / was %q; after two uploads, it is %q", before, after)
	}

	// The Middleware's own answers: 429, 413 and 400, each twice, through
	// a writer that adds a charset to the Content-Type in place.
	full := ratelimit.NewKeyed[string](1, time.Minute, ratelimit.WithClock(clock.NewMock()))
	full.Allow("192.0.2.1", 1)
	refusing := throttle.NewMiddleware(throttle.PerKey(full), throttle.WithRequestCost(func(r *http.Request) float64 {
		if r.URL.Path == "/big" {
			return 2
		}
		return 1
	})).Handler(okHandler)
	byKey := throttle.NewMiddleware(throttle.PerKey(keyed), throttle.KeyByHeader("X-Key")).Handler(okHandler)
	for _, tt := range []struct {
		name string
		h    http.Handler
		path string
		code int
	}{
		{"429", refusing, "/", http.StatusTooManyRequests},
		{"413", refusing, "/big", http.StatusRequestEntityTooLarge},
		{"400", byKey, "/", http.StatusBadRequest},
	} {
		for i := range 2 {
			rec := httptest.NewRecorder()
			tt.h.ServeHTTP(charsetWriter{rec}, httptest.NewRequest("GET", tt.path, nil))
			if ct := rec.Result().Header.Values("Content-Type"); rec.Code != tt.code || len(ct) != 1 ||
				ct[0] != "application/problem+json; charset=utf-8" {
				t.Errorf("%s, response %d: status %d, Content-Type %q", tt.name, i, rec.Code, ct)
			}
		}
	}
}

// charsetWriter adds "; charset=utf-8" to the Content-Type of what it
// writes, in the header map's slice, as a handler may: the map, and the
// slices in it, are the response's own.
type charsetWriter struct{ http.ResponseWriter }

func (w charsetWriter) WriteHeader(code int) {
	if ct := w.Header()["Content-Type"]; len(ct) == 1 {
		ct[0] += "; charset=utf-8"
	}
	w.ResponseWriter.WriteHeader(code)
}

// TestMiddlewareRetryAfterAtKeyCap: a Keyed capped at one key holds
// client A's bucket, which drains at 60 s. Client B, new, is refused at 0 s.
// A Keyed at its cap sweeps for drained keys at most 16 times a Period, so
// another new client (C) refused at 57 s takes the sweep. The first version
// told B to come back after one Period, 60 s, when it was refused again (it
// got in at 61 s), against the doc's "never names a time before the one at
// which the request would be admitted". Retry-After at the cap is now a
// Period and a sixteenth, rounded up: 64 s, by when a sweep has found A's
// drained bucket.
func TestMiddlewareRetryAfterAtKeyCap(t *testing.T) {
	mock := clock.NewMock()
	keyed := ratelimit.NewKeyed[string](1, time.Minute, ratelimit.WithClock(mock), ratelimit.WithMaxKeys(1))
	h := throttle.NewMiddleware(throttle.PerKey(keyed)).Handler(okHandler)
	send := func(ip string) (int, string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = ip + ":1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Header().Get("Retry-After")
	}
	if code, _ := send("192.0.2.1"); code != http.StatusOK {
		t.Fatalf("A: status %d", code)
	}
	code, ra := send("192.0.2.2")
	if code != http.StatusTooManyRequests || ra != "64" {
		t.Fatalf("B at the cap: %d, Retry-After %q; want 429, 64", code, ra)
	}
	mock.Add(57 * time.Second)
	if code, _ := send("192.0.2.3"); code != http.StatusTooManyRequests {
		t.Fatalf("C at 57 s: status %d, want 429", code)
	}
	mock.Add(7 * time.Second)
	if lvl := keyed.Level("192.0.2.1"); lvl != 0 {
		t.Fatalf("A's bucket holds %v at 64 s, want 0", lvl)
	}
	if code, ra := send("192.0.2.2"); code != http.StatusOK {
		t.Errorf("B, back at its Retry-After of 64 s with every bucket drained: status %d (Retry-After %q), want 200", code, ra)
	}
}

// TestMiddlewareUnmadeLimiterPanicsAtConstruction gives Global, PerKey and
// NewMiddleware limiters that were never made by their constructors: typed
// nil pointers, zero values, and, to Global, limiters whose rate is not
// above 0. The first version let a nil *Limiter, a zero Limiter and a zero
// Keyed dereference nil inside NewMiddleware (a runtime error that named
// nothing), and took a zero Window, which then panicked on every request.
// Now each panics where it is given, in a message that names the function,
// the type and the problem. (NewMiddleware itself takes a Limit of any
// rate, as TestHTTPAttackWeirdLimit checks: it answers all of them.)
func TestMiddlewareUnmadeLimiterPanicsAtConstruction(t *testing.T) {
	for _, tt := range []struct {
		name  string
		limit func() throttle.Limit
		want  string
	}{
		{"nil *Limiter", func() throttle.Limit { return throttle.Global((*ratelimit.Limiter)(nil)) },
			"throttle: Global: nil *ratelimit.Limiter"},
		{"nil *Window", func() throttle.Limit { return throttle.Global((*ratelimit.Window)(nil)) },
			"throttle: Global: nil *ratelimit.Window"},
		{"zero Limiter", func() throttle.Limit { return throttle.Global(&ratelimit.Limiter{}) },
			"throttle: Global: *ratelimit.Limiter's MaxRate or Period panics (not made by its constructor?): "},
		{"zero Window", func() throttle.Limit { return throttle.Global(&ratelimit.Window{}) },
			"throttle: Global: *ratelimit.Window has MaxRate 0 and Period 0s; both must be > 0"},
		{"zero KeyLimiter", func() throttle.Limit { return throttle.Global(&ratelimit.KeyLimiter[string]{}) },
			"throttle: Global: *ratelimit.KeyLimiter[string]'s MaxRate or Period panics"},
		{"zero Keyed", func() throttle.Limit { return throttle.PerKey(&ratelimit.Keyed[string]{}) },
			"throttle: PerKey: *ratelimit.Keyed[string]'s MaxRate or Period panics"},
		{"nil Limit of a type", func() throttle.Limit { return (*recordingLimit)(nil) },
			"throttle: NewMiddleware: nil *throttle_test.recordingLimit"},
		{"nil GlobalLimiter of a type", func() throttle.Limit { return throttle.Global((*fixedLimit)(nil)) },
			"throttle: Global: nil *throttle_test.fixedLimit"},
		{"zero wrapper of a Limit", func() throttle.Limit { return struct{ throttle.Limit }{} },
			"throttle: NewMiddleware: struct { throttle.Limit }'s MaxRate or Period panics"},
		{"GlobalLimiter of Period 0", func() throttle.Limit { return throttle.Global(&fixedLimit{rate: 10}) },
			"throttle: Global: *throttle_test.fixedLimit has MaxRate 10 and Period 0s; both must be > 0"},
		{"GlobalLimiter of MaxRate NaN", func() throttle.Limit {
			return throttle.Global(&fixedLimit{rate: math.NaN(), period: time.Second})
		}, "throttle: Global: *throttle_test.fixedLimit has MaxRate NaN and Period 1s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			made := func() (r any) {
				defer func() { r = recover() }()
				throttle.NewMiddleware(tt.limit())
				return nil
			}()
			if s, ok := made.(string); !ok || !strings.HasPrefix(s, tt.want) {
				t.Errorf("panic %#v, want one that starts %q", made, tt.want)
			}
		})
	}
	// A limiter whose MaxRate and Period are above 0 is taken, and answers.
	rec := httptest.NewRecorder()
	throttle.NewMiddleware(throttle.Global(&fixedLimit{rate: 0.5, period: time.Nanosecond})).Handler(okHandler).
		ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("RateLimit-Policy") != `"default";q=0;w=1` {
		t.Errorf("a Limit of 0.5 per nanosecond: %d %q", rec.Code, rec.Header().Get("RateLimit-Policy"))
	}
}

// fixedLimit is a GlobalLimiter that admits everything and reports the
// rate it is given.
type fixedLimit struct {
	rate   float64
	period time.Duration
}

func (l *fixedLimit) Allow(float64) ratelimit.Decision       { return ratelimit.Decision{OK: true} }
func (l *fixedLimit) Acquire(context.Context, float64) error { return nil }
func (l *fixedLimit) MaxRate() float64                       { return l.rate }
func (l *fixedLimit) Period() time.Duration                  { return l.period }

// TestHTTPAttackKeyVariants sends, for each client, every form in which its
// address can come (ports, IPv4-mapped IPv6 in both notations, zones, upper
// case, leading zeros in IPv6 groups, several X-Forwarded-For lines, trusted
// addresses and garbage a client adds to the left, X-Real-IP beside
// X-Forwarded-For): each must give the one key, and no header from an
// untrusted peer may change it.
func TestHTTPAttackKeyVariants(t *testing.T) {
	trust := []throttle.MiddlewareOption{throttle.KeyByIP(
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("fd00::/8"),
		netip.MustParsePrefix("::ffff:198.51.100.0/120"), // 198.51.100.0/24
	)}
	type variant struct {
		remote string
		hdr    []string
	}
	for _, tt := range []struct {
		name     string
		opts     []throttle.MiddlewareOption
		want     string
		variants []variant
	}{
		{"IPv4 client, no proxy", noOptions, "192.0.2.1", []variant{
			{"192.0.2.1:1", nil},
			{"192.0.2.1", nil},
			{"[::ffff:192.0.2.1]:2", nil},
			{"::ffff:192.0.2.1", nil},
			{"[::ffff:c000:201]:3", nil},
			{"[::FFFF:C000:0201%eth0]:3", nil},
			{"192.0.2.1:4", []string{xff, "203.0.113.9", xRealIP, "203.0.113.10"}},
			{"192.0.2.1:5", []string{xff, "10.0.0.1", xff, "fd00::1"}},
		}},
		{"IPv6 client, its /64", noOptions, "2001:db8:1:2::/64", []variant{
			{"[2001:db8:1:2::1]:1", nil},
			{"[2001:DB8:1:2:FFFF:FFFF:FFFF:FFFF]:1", nil},
			{"[2001:0db8:0001:0002:0:0:0:5%25eth0]:1", nil},
			{"2001:db8:1:2:a:b:c:d", nil},
			{"[2001:db8:1:2::7]:9", []string{xff, "2001:db8:ffff::1", xRealIP, "2001:db8:eeee::1"}},
		}},
		{"IPv6 client, its /48", []throttle.MiddlewareOption{throttle.WithIPv6Prefix(48)}, "2001:db8:1::/48", []variant{
			{"[2001:db8:1:2::1]:1", nil},
			{"[2001:db8:1:ffff::1]:1", nil},
			{"[2001:db8:1:0:8000::]:1", nil},
		}},
		{"behind trusted proxies", trust, "203.0.113.7", []variant{
			{"10.0.0.1:1", []string{xff, "203.0.113.7"}},
			{"[::ffff:10.0.0.1]:1", []string{xff, "1.2.3.4, 203.0.113.7"}},
			{"[fd00::1]:1", []string{xff, "203.0.113.7, 10.9.9.9"}},
			{"198.51.100.5:1", []string{xff, "6.6.6.6", xff, "203.0.113.7:4431"}},
			{"[::ffff:198.51.100.5]:1", []string{xff, "[::ffff:203.0.113.7]:80"}},
			{"10.0.0.1:1", []string{xff, "203.0.113.7", xRealIP, "6.6.6.6"}},
			{"10.0.0.1:1", []string{xff, "::ffff:cb00:7107, 10.0.0.2"}},
			{"10.0.0.1:1", []string{xff, "6.6.6.6, 10.0.0.99, 203.0.113.7"}},
			{"10.0.0.1:1", []string{xff, "garbage, [, 10.0.0.9, 203.0.113.7,, fd00::5"}},
			{"10.0.0.1:1", []string{xff, "\t203.0.113.7 \t"}},
			{"10.0.0.1:1", []string{xRealIP, "203.0.113.7"}},
			{"10.0.0.1:1", []string{xff, ", ,", xRealIP, "203.0.113.7"}},
		}},
		{"untrusted peer with trusted-looking headers", trust, "192.0.2.50", []variant{
			{"192.0.2.50:1", []string{xff, "10.0.0.1"}},
			{"192.0.2.50:1", []string{xff, "203.0.113.7, 10.0.0.1", xRealIP, "10.0.0.2"}},
			{"[::ffff:192.0.2.50]:1", []string{xRealIP, "198.51.100.1"}},
			{"192.0.2.50:1", []string{xff, "garbage"}},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range tt.variants {
				got, status := keyOf(t, tt.opts, v.remote, v.hdr...)
				if status != http.StatusOK || got != tt.want {
					t.Errorf("RemoteAddr %q, headers %q: key %q (status %d), want %q", v.remote, v.hdr, got, status, tt.want)
				}
			}
		})
	}
}

// TestHTTPAttackHugeForwardedFor sends a real server, through a trusted
// proxy (127.0.0.1), an X-Forwarded-For of nearly the 1 MB that net/http
// takes: 70,000 trusted hops after the client, or 70,000 made-up clients
// before it. The key is the client's, and the request is answered at once.
func TestHTTPAttackHugeForwardedFor(t *testing.T) {
	mock := clock.NewMock()
	keyed := ratelimit.NewKeyed[string](1, time.Minute, ratelimit.WithClock(mock))
	c := serve(t, throttle.NewMiddleware(throttle.PerKey(keyed),
		throttle.KeyByIP(netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"))).Handler(okHandler))
	hops := strings.TrimSuffix(strings.Repeat("10.1.2.3, ", 70_000), ", ")
	fakes := strings.TrimSuffix(strings.Repeat("1.2.3.4, ", 70_000), ", ")
	for i, fwd := range []string{"203.0.113.1, " + hops, fakes + ", 203.0.113.1"} {
		resp, body := c.get(xff, fwd)
		want := http.StatusOK
		if i > 0 {
			want = http.StatusTooManyRequests // the same client: its bucket holds 1
		}
		if resp.StatusCode != want {
			t.Errorf("X-Forwarded-For of %d bytes: status %d (%s), want %d", len(fwd), resp.StatusCode, body, want)
		}
	}
	if n := keyed.Len(); n != 1 {
		t.Errorf("%d keys held, want 1", n)
	}
}

// TestHTTPAttackRetryAfterAndRemaining runs random weighted requests, gaps,
// Pauses and SetRates against a bucket (Limiter, Keyed, one key of a Keyed)
// and a window, at rates and periods that are not whole, and holds the
// headers to what they promise: a request refused with Retry-After n is
// admitted n seconds later, and after a response that says r, r requests
// of one unit sent at once are all admitted. Every header is parsed
// strictly (RFC 9651).
func TestHTTPAttackRetryAfterAndRemaining(t *testing.T) {
	seeds := uint64(40)
	if testing.Short() {
		seeds = 10
	}
	rates := []float64{0.5, 1, 2.5, 3, 7, 10, 1.0 / 3, 123.456, 1.1, 0.7, 17}
	periods := []time.Duration{700 * time.Millisecond, time.Second, 1500 * time.Millisecond, 3 * time.Second,
		9 * time.Second, time.Millisecond, 37 * time.Millisecond, time.Hour, 333_333_333}
	// Inside a bubble, so that the mock clock's Add, which sleeps a
	// millisecond of real time to let timers run, costs nothing.
	synctest.Test(t, func(t *testing.T) {
		checked := 0
		for seed := range seeds {
			rng := rand.New(rand.NewPCG(seed, 7))
			rate := rates[rng.IntN(len(rates))]
			period := periods[rng.IntN(len(periods))]
			mock := clock.NewMock()
			for _, al := range atkLimits(mock, rate, period) {
				rng := rand.New(rand.NewPCG(seed, 9))
				curRate := rate
				h := throttle.NewMiddleware(al.limit, throttle.WithRequestCost(func(r *http.Request) float64 {
					f, _ := strconv.ParseFloat(r.Header.Get("X-Cost"), 64)
					return f
				})).Handler(okHandler)
				send := func(c float64) (int, rateHeaders) {
					req := httptest.NewRequest("GET", "/", nil)
					req.RemoteAddr = "192.0.2.1:1"
					req.Header.Set("X-Cost", strconv.FormatFloat(c, 'g', -1, 64))
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					return rec.Code, readHeaders(t, rec.Header(), "default")
				}
				for step := range 120 {
					mock.Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
					switch rng.IntN(20) {
					case 0:
						al.pause(time.Duration(rng.IntN(5000)) * time.Millisecond)
					case 1:
						curRate = rates[rng.IntN(len(rates))]
						al.setRate(curRate, periods[rng.IntN(len(periods))])
					}
					c := min(float64(rng.IntN(30)+1)/10, curRate)
					status, hd := send(c)
					switch status {
					case http.StatusOK:
						if rng.IntN(2) == 0 && hd.r > 0 && hd.r < 200 {
							for i := range hd.r {
								if s, hd2 := send(1); s != http.StatusOK {
									t.Fatalf("%s, seed %d, step %d: r=%d, but unit request %d sent at once got %d (%v)",
										al.name, seed, step, hd.r, i+1, s, hd2)
								}
								checked++
							}
						}
					case http.StatusTooManyRequests:
						mock.Add(time.Duration(hd.retryAfter) * time.Second)
						if s, hd2 := send(c); s != http.StatusOK {
							t.Fatalf("%s, seed %d, step %d: cost %v refused again at its Retry-After of %d s (%v)",
								al.name, seed, step, c, hd.retryAfter, hd2)
						}
						checked++
					default:
						t.Fatalf("%s: status %d for cost %v at rate %v", al.name, status, c, curRate)
					}
				}
			}
		}
		if checked < 300 {
			t.Errorf("only %d promises checked: the test checks too little", checked)
		}
	})
}

// atkLimit is a Limit with the Pause and SetRate of the limiter under it.
type atkLimit struct {
	name    string
	limit   throttle.Limit
	pause   func(time.Duration)
	setRate func(float64, time.Duration)
}

func atkLimits(mock clock.Clock, rate float64, period time.Duration) []atkLimit {
	lim := ratelimit.New(rate, period, ratelimit.WithClock(mock))
	keyed := ratelimit.NewKeyed[string](rate, period, ratelimit.WithClock(mock))
	keyed2 := ratelimit.NewKeyed[string](rate, period, ratelimit.WithClock(mock))
	win := ratelimit.NewWindow(rate, period, ratelimit.WithClock(mock))
	one := keyed2.Key("all")
	return []atkLimit{
		{"Limiter", throttle.Global(lim), lim.Pause, lim.SetRate},
		{"Keyed", throttle.PerKey(keyed), func(d time.Duration) { keyed.Pause("192.0.2.1", d) }, keyed.SetRate},
		{"Window", throttle.Global(win), win.Pause, win.SetRate},
		{"KeyLimiter", throttle.Global(one), one.Pause, keyed2.SetRate},
	}
}

// TestHTTPAttackMaxWaitRandom sends 40 requests of random weights from two
// clients, at random times, to a bucket, a window and a Keyed with a random
// MaxWait, and checks what WithMaxWait promises: a request is either
// admitted within MaxWait or refused at once, never after waiting; and the
// requests of a key (of the whole limit, for Global) are admitted in the
// order they came.
func TestHTTPAttackMaxWaitRandom(t *testing.T) {
	seeds := uint64(100)
	if testing.Short() {
		seeds = 10
	}
	waited := 0
	for seed := range seeds {
		for kind := range 3 {
			synctest.Test(t, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, uint64(kind)))
				rate := []float64{1, 2.5, 3, 0.7, 10}[rng.IntN(5)]
				period := []time.Duration{time.Second, 1500 * time.Millisecond, 3 * time.Second}[rng.IntN(3)]
				maxWait := time.Duration(rng.IntN(4000)+1) * time.Millisecond
				var limit throttle.Limit
				switch kind {
				case 0:
					limit = throttle.Global(ratelimit.New(rate, period))
				case 1:
					limit = throttle.Global(ratelimit.NewWindow(rate, period))
				case 2:
					limit = throttle.PerKey(ratelimit.NewKeyed[string](rate, period))
				}
				start := time.Now()
				type result struct {
					key         string
					arrive, end time.Duration
					status      int
				}
				const n = 40
				var results [n]result
				var mu sync.Mutex
				h := throttle.NewMiddleware(limit, throttle.WithMaxWait(maxWait), throttle.WithRequestCost(func(r *http.Request) float64 {
					f, _ := strconv.ParseFloat(r.Header.Get("X-Cost"), 64)
					return f
				})).Handler(okHandler)
				var wg sync.WaitGroup
				at := time.Duration(0)
				for i := range n {
					at += time.Duration(rng.IntN(700)) * time.Millisecond
					key := "192.0.2." + strconv.Itoa(rng.IntN(2)+1)
					c := min(float64(rng.IntN(8)+1)/4, rate)
					arrive := at
					wg.Go(func() {
						time.Sleep(arrive)
						req := httptest.NewRequest("GET", "/", nil)
						req.RemoteAddr = key + ":1"
						req.Header.Set("X-Cost", strconv.FormatFloat(c, 'g', -1, 64))
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, req)
						mu.Lock()
						results[i] = result{key, arrive, time.Since(start), rec.Code}
						mu.Unlock()
					})
				}
				wg.Wait()
				order := make([]int, n)
				for i := range order {
					order[i] = i
				}
				sort.SliceStable(order, func(a, b int) bool { return results[order[a]].arrive < results[order[b]].arrive })
				for a, i := range order {
					r := results[i]
					switch {
					case r.status == http.StatusOK && r.end-r.arrive > maxWait:
						t.Errorf("seed %d kind %d: request %d admitted after %v, MaxWait %v", seed, kind, i, r.end-r.arrive, maxWait)
					case r.status == http.StatusOK && r.end > r.arrive:
						waited++
					case r.status == http.StatusTooManyRequests && r.end != r.arrive:
						t.Errorf("seed %d kind %d: request %d refused after waiting %v", seed, kind, i, r.end-r.arrive)
					case r.status != http.StatusOK && r.status != http.StatusTooManyRequests:
						t.Errorf("seed %d kind %d: request %d: status %d", seed, kind, i, r.status)
					}
					for _, j := range order[a+1:] {
						later := results[j]
						if kind == 2 && later.key != r.key {
							continue
						}
						if r.status == http.StatusOK && later.status == http.StatusOK && later.arrive > r.arrive && later.end < r.end {
							t.Errorf("seed %d kind %d: request %d (came at %v) admitted at %v, before %d (came at %v) at %v",
								seed, kind, j, later.arrive, later.end, i, r.arrive, r.end)
						}
					}
				}
			})
		}
	}
	if waited < int(seeds) {
		t.Errorf("only %d requests waited: the test checks too little", waited)
	}
}

// TestHTTPAttackMaxWaitTurnAtDeadline pauses a Limiter while a request
// waits, so that its turn moves to just before, exactly at, and just after
// the end of MaxWait: it is admitted at its turn in the first two cases and
// refused at MaxWait in the others; the request takes its unit once if
// admitted (the bucket is then full, at 1), and none if refused.
func TestHTTPAttackMaxWaitTurnAtDeadline(t *testing.T) {
	for _, tt := range []struct {
		turn   time.Duration // where the pause moves the waiting request's turn
		status int
		at     time.Duration
	}{
		{1500 * time.Millisecond, 200, 1500 * time.Millisecond},
		{2 * time.Second, 200, 2 * time.Second},
		{2*time.Second + time.Nanosecond, 429, 2 * time.Second},
		{2100 * time.Millisecond, 429, 2 * time.Second},
	} {
		synctest.Test(t, func(t *testing.T) {
			lim := ratelimit.New(1, time.Second)
			h := throttle.NewMiddleware(throttle.Global(lim), throttle.WithMaxWait(2*time.Second)).Handler(okHandler)
			start := time.Now()
			send := func() (int, time.Duration) {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				return rec.Code, time.Since(start)
			}
			if s, _ := send(); s != 200 {
				t.Fatalf("first request: %d", s)
			}
			var wg sync.WaitGroup
			var status int
			var at time.Duration
			wg.Go(func() { status, at = send() })
			time.Sleep(500 * time.Millisecond)
			lim.Pause(tt.turn - 500*time.Millisecond)
			wg.Wait()
			if status != tt.status || at != tt.at {
				t.Errorf("turn moved to %v: %d at %v, want %d at %v", tt.turn, status, at, tt.status, tt.at)
			}
			if lvl := lim.Level(); (status == 200) != (lvl == 1) || lvl > 1 {
				t.Errorf("turn moved to %v: %d, and the bucket holds %v after", tt.turn, status, lvl)
			}
		})
	}
}

// atkDecider is a Limit that answers Allow and Acquire as its functions
// say, with the rate and period given.
type atkDecider struct {
	allow   func(cost float64) ratelimit.Decision
	acquire error
	rate    float64
	period  time.Duration
}

func (l *atkDecider) Allow(_ context.Context, _ string, cost float64) ratelimit.Decision {
	return l.allow(cost)
}
func (l *atkDecider) Acquire(context.Context, string, float64) error { return l.acquire }
func (l *atkDecider) MaxRate() float64                               { return l.rate }
func (l *atkDecider) Period() time.Duration                          { return l.period }

// TestHTTPAttackWeirdLimit answers with a Limit whose decisions and rate
// take every extreme value (NaN, infinities, negatives, the largest
// Duration, wrapped and foreign errors, OK with an error), with and
// without MaxWait: no request panics, the status is one the Middleware
// documents, and every header it writes is valid (RFC 9651, Retry-After
// delay-seconds of at least 1, never before the end of t).
func TestHTTPAttackWeirdLimit(t *testing.T) {
	floats := []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, 0, 0.5, 1, 1e300, 999_999_999_999_999.5, 3}
	durs := []time.Duration{math.MinInt64, -time.Second, 0, 1, 999 * time.Millisecond, time.Second, math.MaxInt64}
	errs := []error{nil, nil, nil, fmt.Errorf("k: %w", ratelimit.ErrTooManyKeys), fmt.Errorf("x: %w", ratelimit.ErrExceedsCapacity),
		ratelimit.ErrInvalidAmount, errors.New("redis: down"), &ratelimit.DeadlineError{Amount: 1, Wait: time.Hour}}
	acquireErrs := []error{nil, context.DeadlineExceeded, &ratelimit.DeadlineError{Amount: 1, Wait: math.MaxInt64},
		&ratelimit.DeadlineError{Amount: 1, Wait: -time.Second}, errors.New("redis: down"), fmt.Errorf("k: %w", ratelimit.ErrTooManyKeys)}
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(n int) int { return rng.IntN(n) }
	statuses := map[int]bool{200: true, 413: true, 429: true, 500: true, 503: true}
	for i := range 3000 {
		lim := &atkDecider{
			rate:    floats[pick(len(floats))],
			period:  durs[pick(len(durs))],
			acquire: acquireErrs[pick(len(acquireErrs))],
		}
		d := ratelimit.Decision{
			OK:         pick(3) == 0,
			Remaining:  floats[pick(len(floats))],
			RetryAfter: durs[pick(len(durs))],
			Reset:      durs[pick(len(durs))],
			Err:        errs[pick(len(errs))],
		}
		lim.allow = func(float64) ratelimit.Decision { return d }
		opts := []throttle.MiddlewareOption{throttle.WithPolicyName(`"q\uo"`),
			throttle.WithLimitErrorHandler(func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(503) })}
		if pick(2) == 0 {
			opts = append(opts, throttle.WithMaxWait(time.Duration(pick(3))*time.Hour))
		}
		var rec *httptest.ResponseRecorder
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("case %d: decision %+v, limit %+v: panic %v", i, d, lim, r)
				}
			}()
			rec = httptest.NewRecorder()
			throttle.NewMiddleware(lim, opts...).Handler(okHandler).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		}()
		if !statuses[rec.Code] {
			t.Fatalf("case %d: decision %+v: status %d", i, d, rec.Code)
		}
		readHeaders(t, rec.Header(), `"q\uo"`)
	}
}

// TestHTTPAttackKeyFloodWithWaiters sends, from 400 addresses at once,
// three requests each to a Keyed capped at 50 keys with MaxWait: the keys
// that got in hold waiters, the others are refused. The Keyed never holds
// more than its cap, every request is answered, and none is left waiting.
func TestHTTPAttackKeyFloodWithWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const maxKeys, clients = 50, 400
		keyed := ratelimit.NewKeyed[string](1, time.Second, ratelimit.WithMaxKeys(maxKeys))
		h := throttle.NewMiddleware(throttle.PerKey(keyed), throttle.WithMaxWait(5*time.Second)).Handler(okHandler)
		var mu sync.Mutex
		counts := map[int]int{}
		var wg sync.WaitGroup
		for i := range clients {
			for range 3 {
				wg.Go(func() {
					req := httptest.NewRequest("GET", "/", nil)
					req.RemoteAddr = fmt.Sprintf("10.0.%d.%d:1", i>>8, i&255)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					mu.Lock()
					counts[rec.Code]++
					mu.Unlock()
				})
			}
		}
		synctest.Wait()
		if n := keyed.Len(); n > maxKeys {
			t.Errorf("the Keyed holds %d keys while requests wait, more than its cap of %d", n, maxKeys)
		}
		wg.Wait()
		if counts[200] != 3*maxKeys || counts[429] != 3*(clients-maxKeys) || len(counts) != 2 {
			t.Errorf("statuses %v, want %d admitted and %d refused", counts, 3*maxKeys, 3*(clients-maxKeys))
		}
		time.Sleep(2 * time.Second)
		if n := keyed.Len(); n != 0 {
			t.Errorf("%d keys still held once every bucket drained", n)
		}
	})
}
