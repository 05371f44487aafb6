package main

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/didip/tollbooth/v8"
	tollboothlimiter "github.com/didip/tollbooth/v8/limiter"
	"github.com/go-chi/httprate"
	"github.com/sethvargo/go-limiter/httplimit"
	"github.com/sethvargo/go-limiter/memorystore"
	"github.com/throttled/throttled/v2"
	ulule "github.com/ulule/limiter/v3"
	ululestdlib "github.com/ulule/limiter/v3/drivers/middleware/stdlib"
	ululemem "github.com/ulule/limiter/v3/drivers/store/memory"
	"golang.org/x/time/rate"
)

// HTTP middleware: a limit per client address on a server, each library's
// own middleware, on the limit every key gets in the keyed runs.

// A middlewarePeer is a library's net/http middleware, limiting per client
// IP address (RemoteAddr).
type middlewarePeer struct {
	name  string // as in benchmark names
	label string // as in the report
	// headers says which rate-limit headers it writes on an admitted
	// response.
	headers string
	// make returns the middleware for limit c, and what releases what it
	// holds (a goroutine), or nil.
	make func(c keyedConfig) (wrap func(http.Handler) http.Handler, close func())
}

// middlewareLimit admits every request of a run: 100,000 a key every 10
// hours, so that no key runs out however long the run.
var middlewareLimit = keyedConfig{maxRate: 100_000, period: spreadLimit.period}

// middlewareKeys is how many client addresses the requests come from.
const middlewareKeys = 10_000

// dripMiddleware is drip's throttle middleware, when the build has it (see
// middleware_drip.go); nil otherwise.
var dripMiddleware *middlewarePeer

// middlewarePeers returns the libraries, drip's first when the build has it.
func middlewarePeers() []middlewarePeer {
	if dripMiddleware == nil {
		return otherMiddlewarePeers
	}
	return append([]middlewarePeer{*dripMiddleware}, otherMiddlewarePeers...)
}

// otherMiddlewarePeers are the libraries beside drip, in the report's order.
var otherMiddlewarePeers = []middlewarePeer{
	{"golimiter", "go-limiter", "X-RateLimit-*", func(c keyedConfig) (func(http.Handler) http.Handler, func()) {
		store, err := memorystore.New(&memorystore.Config{Tokens: uint64(c.maxRate), Interval: c.period})
		if err != nil {
			panic(err)
		}
		m, err := httplimit.NewMiddleware(store, httplimit.IPKeyFunc())
		if err != nil {
			panic(err)
		}
		return m.Handle, func() { _ = store.Close(context.Background()) }
	}},
	{"httprate", "httprate", "X-RateLimit-*", func(c keyedConfig) (func(http.Handler) http.Handler, func()) {
		// As httprate's docs advise in place of the deprecated LimitByIP:
		// the connection's address, IPv6 by /64.
		return httprate.LimitBy(int(c.maxRate), c.period, func(r *http.Request) (string, error) {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			return httprate.CanonicalizeIP(host), err
		}), nil
	}},
	{"throttled", "throttled", "X-RateLimit-*", func(c keyedConfig) (func(http.Handler) http.Handler, func()) {
		rl := newThrottledGCRA(c, middlewareKeys)
		h := &throttled.HTTPRateLimiterCtx{RateLimiter: rl, VaryBy: &throttled.VaryBy{RemoteAddr: true}}
		return h.RateLimit, nil
	}},
	{"tollbooth", "tollbooth", "X-Rate-Limit-*", func(c keyedConfig) (func(http.Handler) http.Handler, func()) {
		lmt := tollbooth.NewLimiter(c.maxRate/c.period.Seconds(), nil)
		lmt.SetBurst(int(c.maxRate))
		lmt.SetIPLookup(tollboothlimiter.IPLookup{Name: "RemoteAddr"})
		return tollbooth.HTTPMiddleware(lmt), nil
	}},
	{"ulule", "ulule/limiter", "X-RateLimit-*", func(c keyedConfig) (func(http.Handler) http.Handler, func()) {
		lim := ulule.New(ululemem.NewStore(), ulule.Rate{Period: c.period, Limit: int64(c.maxRate)})
		return ululestdlib.NewMiddleware(lim).Handler, nil
	}},
	{"ratemap", "map+x/time/rate", "none", func(c keyedConfig) (func(http.Handler) http.Handler, func()) {
		m := &rateMap{m: make(map[string]*rate.Limiter), r: rate.Limit(c.maxRate / c.period.Seconds()), b: int(c.maxRate)}
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				host, _, err := net.SplitHostPort(r.RemoteAddr)
				if err != nil {
					http.Error(w, "bad address", http.StatusBadRequest)
					return
				}
				if !m.allow(host) {
					http.Error(w, "slow down", http.StatusTooManyRequests)
					return
				}
				next.ServeHTTP(w, r)
			})
		}, nil
	}},
}

// bareHandler is the handler every middleware wraps: it answers 200 with
// nothing more, so that what a run measures beyond it is the middleware's.
var bareHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

// middlewareRequests returns a GET request from each of n client
// addresses, 10.x.y.z:1234, made once.
var middlewareRequests = sync.OnceValue(func() []*http.Request {
	reqs := make([]*http.Request, middlewareKeys)
	for i := range reqs {
		r, err := http.NewRequest(http.MethodGet, "http://api.example/v1/items", nil)
		if err != nil {
			panic(err)
		}
		r.RemoteAddr = ipKey(i) + ":1234"
		reqs[i] = r
	}
	return reqs
})

// recorder is a ResponseWriter that keeps the status and throws the body
// away, its header map cleared for each request and reused: what a run
// allocates is the middleware's own (and the header values it writes).
type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(p []byte) (int, error) { return len(p), nil }
func (r *recorder) WriteHeader(code int)        { r.code = code }

// middlewareBench serves requests from the client addresses in turn
// through h, every one of which must be admitted.
func middlewareBench(h http.Handler) func(*testing.B) {
	return func(b *testing.B) {
		reqs := middlewareRequests()
		w := &recorder{h: http.Header{}}
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			clear(w.h)
			w.code = 0
			h.ServeHTTP(w, reqs[i])
			if w.code != http.StatusOK {
				b.Fatalf("request %d answered %d", i, w.code)
			}
			if i++; i == len(reqs) {
				i = 0
			}
		}
	}
}

// warmMiddleware sends one request from every client address through h,
// so that the library holds every key before the timing starts.
func warmMiddleware(h http.Handler) {
	w := &recorder{h: http.Header{}}
	for _, r := range middlewareRequests() {
		clear(w.h)
		h.ServeHTTP(w, r)
		if w.code != http.StatusOK {
			panic("middleware refused " + r.RemoteAddr + ": " + strconv.Itoa(w.code))
		}
	}
}
