package throttle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dripgo/drip/internal/usable"
	"github.com/dripgo/drip/ratelimit"
)

// A Limit is what a [Middleware] asks, once per request: whether the
// request's cost fits now for its key, and, with [WithMaxWait], a turn in
// the queue. [PerKey] makes one from a [ratelimit.Keyed], [Global] from a
// single limiter; the Redis-backed
// [github.com/dripgo/drip/ratelimit/redisbucket.Keyed] is one as it is, so
// that a fleet of servers shares each client's bucket.
type Limit interface {
	// Allow takes cost units for key if they fit now, and reports the
	// key's state right after (see [ratelimit.Decision]). An Err that is
	// not a refusal (Redis unreachable, an invalid cost) goes to the
	// Middleware's limit error handler.
	Allow(ctx context.Context, key string, cost float64) ratelimit.Decision
	// Acquire waits in FIFO order until cost fits for key, or until ctx
	// ends. It returns at once with a *[ratelimit.DeadlineError] if ctx's
	// deadline cannot be met. The Middleware calls it only with WithMaxWait.
	Acquire(ctx context.Context, key string, cost float64) error
	// MaxRate is what the bucket (or window) of each key holds: the q of
	// the RateLimit-Policy header.
	MaxRate() float64
	// Period is the time in which MaxRate units drain from a full bucket
	// (or the length of the window): the w of the RateLimit-Policy header.
	Period() time.Duration
}

// A GlobalLimiter is a single limiter that [Global] makes a [Limit] for
// every key at once: a [ratelimit.Limiter], a [ratelimit.Window], or one
// key of a Keyed ([ratelimit.KeyLimiter]).
type GlobalLimiter interface {
	Allow(amount float64) ratelimit.Decision
	Acquire(ctx context.Context, amount float64) error
	MaxRate() float64
	Period() time.Duration
}

var (
	_ GlobalLimiter = (*ratelimit.Limiter)(nil)
	_ GlobalLimiter = (*ratelimit.Window)(nil)
	_ GlobalLimiter = (*ratelimit.KeyLimiter[string])(nil)
)

// PerKey returns a Limit that gives each key (each client, by default) a
// leaky bucket of its own in k. Cap k with [ratelimit.WithMaxKeys] when
// clients choose their keys: a flood of new keys is then refused with 429
// instead of growing the server's memory. PerKey panics if k is nil, or
// was not made by [ratelimit.NewKeyed] (a zero Keyed), naming the problem.
func PerKey(k *ratelimit.Keyed[string]) Limit {
	if k == nil {
		panic("throttle: PerKey: nil Keyed")
	}
	usable.Check("throttle: PerKey", k, true)
	return perKey{k}
}

type perKey struct{ k *ratelimit.Keyed[string] }

func (p perKey) Allow(_ context.Context, key string, cost float64) ratelimit.Decision {
	return p.k.Allow(key, cost)
}

func (p perKey) Acquire(ctx context.Context, key string, cost float64) error {
	return p.k.Acquire(ctx, key, cost)
}

func (p perKey) MaxRate() float64      { return p.k.MaxRate() }
func (p perKey) Period() time.Duration { return p.k.Period() }

// Global returns a Limit that holds every request to the one limiter l,
// whoever sends it: a limit on the server as a whole. A Middleware with a
// Global limit computes no key, so it never answers 400, and takes none of
// the options about keys. Global panics if l is nil, a nil pointer
// included, or if its MaxRate or Period panics or is not above 0, as for
// a limiter that its constructor did not make (a zero [ratelimit.Limiter]
// or [ratelimit.Window]), naming the problem.
func Global(l GlobalLimiter) Limit {
	if l == nil {
		panic("throttle: Global: nil GlobalLimiter")
	}
	usable.Check("throttle: Global", l, true)
	return global{l}
}

type global struct{ l GlobalLimiter }

func (g global) Allow(_ context.Context, _ string, cost float64) ratelimit.Decision {
	return g.l.Allow(cost)
}

func (g global) Acquire(ctx context.Context, _ string, cost float64) error {
	return g.l.Acquire(ctx, cost)
}

func (g global) MaxRate() float64      { return g.l.MaxRate() }
func (g global) Period() time.Duration { return g.l.Period() }

// A Middleware rate-limits the requests to an [http.Handler]: each request
// takes its cost (one unit, unless [WithRequestCost] says otherwise) from
// the bucket of its key (the client's IP address, unless an option says
// otherwise) in a [Limit], in one call, and either goes on to the handler
// or is refused.
//
// For each request, in order:
//
//  1. The key: by default the client's IP address from RemoteAddr, an IPv6
//     client's /64 network; [KeyByIP] trusts proxies' X-Forwarded-For,
//     [KeyByHeader] and [KeyBy] key by other things. A request without a
//     valid key, or with one longer than [WithMaxKeyLength] bytes (256 by
//     default), is answered 400 (or by [WithKeyErrorHandler]) and takes
//     nothing from any bucket.
//  2. Limit.Allow with the key and the cost: one call, so one round trip
//     for a limit kept in Redis.
//  3. If the cost fits, the request goes on to the handler, with the
//     RateLimit-Policy and RateLimit headers already set on its response.
//  4. If not, and [WithMaxWait] allows a wait longer than the one Allow
//     reported, the request waits its turn (see WithMaxWait).
//     Otherwise it is refused at once: 429 Too Many Requests, with
//     Retry-After, the two RateLimit headers, and an application/problem+json
//     body (RFC 9457) of type
//     https://iana.org/assignments/http-problem-types#quota-exceeded,
//     or whatever [WithRefusedHandler] writes. A key refused because a
//     Keyed is at its cap ([ratelimit.ErrTooManyKeys]) is refused the
//     same way, with a Retry-After of one Period and a sixteenth (see
//     [ratelimit.Decision]).
//  5. A cost that can never fit, larger than MaxRate, is answered 413
//     Content Too Large, with RateLimit-Policy and a problem+json body of
//     the same type, and no Retry-After: trying again would not help.
//     Any other error of the limit (Redis unreachable, or a cost that is
//     negative, NaN or infinite) goes to [WithLimitErrorHandler]; by
//     default it is logged and answered 503 Service Unavailable (500 for
//     an invalid cost, a bug of the server's).
//
// # Headers
//
// The headers are those of draft-ietf-httpapi-ratelimit-headers-11, as
// Structured Fields (RFC 9651), with the policy named by [WithPolicyName]
// ("default" unless set):
//
//	RateLimit-Policy: "default";q=100;w=60
//	RateLimit: "default";r=42;t=35
//
// q is the Limit's MaxRate and w its Period in seconds. Both are Integers,
// as the draft requires, so they are rounded to understate the rate, never
// to overstate it: q is MaxRate rounded down (0 below one unit), and w is
// Period rounded up to whole seconds. For a leaky bucket ([PerKey],
// [ratelimit.Limiter], Redis) they mean that a key's bucket holds q units
// and drains q units every w seconds, smoothly: a client that sends q
// units in a burst must then wait w/q seconds a unit, and a client that
// sends at most q units in any w seconds is never refused (but for the
// bucket's rounding of a unit's cost up to its next tick, a fraction of a
// nanosecond: see the ratelimit package). For a [ratelimit.Window] they
// mean that no w seconds admit more than q units, and a client that keeps
// to that is never refused. The header is read from MaxRate and Period on
// each request, so it follows SetRate.
// [WithQuotaUnit] adds the draft's qu parameter, for costs that are not
// requests.
//
// r is the units a request could take now: [ratelimit.Decision]'s
// Remaining, rounded down. On an admitted response, t is Decision's Reset
// rounded up to whole seconds: how long until the key has all q units
// again, if it sends nothing more than the requests already waiting (see
// WithMaxWait). In between, what is available grows
// from r to q: steadily for a bucket, which drains all the time, and in
// steps for a window, as each admission leaves it w seconds after it was
// made. On a refusal, Retry-After is Decision's RetryAfter in seconds,
// rounded up and at least 1, so it never names a time before the one at
// which the request would be admitted, and t is the same number of
// seconds, since the draft asks that Retry-After not come before the end
// of t.
//
// The draft's partition key parameter (pk) is not sent: it would tell the
// client its own key (an address or an API key), which adds nothing it
// can use.
//
// Middlewares can be stacked, such as one per client around one for the
// whole server. Each adds its item to the RateLimit-Policy and RateLimit
// fields that the Middlewares before it set, in one line, after theirs:
//
//	RateLimit-Policy: "per-client";q=2;w=60, "server";q=100;w=60
//	RateLimit: "per-client";r=1;t=30, "server";r=99;t=1
//
// A client may then send as many requests as the least r allows. An item
// with the Middleware's own policy name takes the place of the one there:
// give each Middleware its own name with [WithPolicyName].
//
// # Cost
//
// On a request admitted at once, the Middleware adds a few hundred
// nanoseconds to the Limit's own time (a Keyed's Allow takes about 125 ns
// among 10,000 keys), and makes two allocations: the RateLimit value, and
// one array that holds the values of both fields. The key of an IPv4
// client is a part of RemoteAddr, and the RateLimit-Policy value is a
// string built once per rate and shared by every response. The slices
// that hold the values in the header map are the response's own, so a
// handler may write to them. (The response's header map, if it was
// empty, grows to hold the two headers, as it would for any.)
//
// A Middleware is safe for concurrent use.
type Middleware struct {
	limit     Limit
	keyOf     func(*http.Request) (string, error) // nil for a Global limit
	maxKeyLen int
	cost      func(*http.Request) float64 // nil means 1
	maxWait   time.Duration

	onKeyError   func(http.ResponseWriter, *http.Request, error)
	onLimitError func(http.ResponseWriter, *http.Request, error)
	onRefused    http.Handler // nil means the problem+json 429

	name        string
	unit        string // the qu parameter, "" for none
	sfName      string // the name as a Structured Fields String: `"name"`
	rlPrefix    string // `"name";r=`, the start of every RateLimit value
	refusedBody []byte
	policy      atomic.Pointer[policyField]

	// What the options asked, checked and resolved by NewMiddleware.
	keyOpt   string // the option that chose the key, "" for the default
	ipOpts   ipKeys
	v6Set    bool
	lenSet   bool
	optPanic string
}

// policyField is the RateLimit-Policy value for one rate. The string is
// shared by every response; the slice that holds it in a header map is
// each response's own (see putFields).
type policyField struct {
	maxRate float64
	period  time.Duration
	value   string
}

// A MiddlewareOption configures a [Middleware] in [NewMiddleware].
type MiddlewareOption func(*Middleware)

// The canonical forms of the header names the Middleware writes, so that
// it can set them in the header map directly.
const (
	hdrPolicy      = "Ratelimit-Policy"
	hdrRateLimit   = "Ratelimit"
	hdrRetryAfter  = "Retry-After"
	hdrContentType = "Content-Type"
)

// problemJSON is the Content-Type of every body the Middleware writes.
// Each response gets a slice of its own to hold it: the handler owns the
// header map, and may write to the slices in it.
const problemJSON = "application/problem+json"

// maxSFInt is the largest Integer of RFC 9651: 15 decimal digits.
const maxSFInt = 999_999_999_999_999

const quotaExceeded = "https://iana.org/assignments/http-problem-types#quota-exceeded"

// NewMiddleware returns a Middleware that limits requests with limit. It
// panics if limit is nil (a nil pointer included) or if its MaxRate or
// Period panics, as those of a zero value that its constructor did not
// make may, and on options that contradict each other (two ways to make
// the key, or an option about keys with a [Global] limit), naming them.
// It takes a Limit of any rate, which may change at run time anyway: a
// MaxRate below one unit, or not a number, is advertised as q=0.
func NewMiddleware(limit Limit, opts ...MiddlewareOption) *Middleware {
	if limit == nil {
		panic("throttle: NewMiddleware: nil Limit")
	}
	// The rate is not checked: the Middleware answers whatever rate a
	// Limit reports (TestHTTPAttackWeirdLimit), which may change.
	usable.Check("throttle: NewMiddleware", limit, false)
	m := &Middleware{limit: limit, name: "default", maxKeyLen: 256, ipOpts: ipKeys{v6Bits: 64}}
	for _, opt := range opts {
		if opt != nil {
			opt(m)
		}
	}
	if m.optPanic != "" {
		panic("throttle: NewMiddleware: " + m.optPanic)
	}
	_, isGlobal := limit.(global)
	switch {
	case isGlobal && m.keyOpt != "":
		panic("throttle: NewMiddleware: " + m.keyOpt + " has no effect with a Global limit")
	case isGlobal && m.v6Set:
		panic("throttle: NewMiddleware: WithIPv6Prefix has no effect with a Global limit")
	case isGlobal && m.lenSet:
		panic("throttle: NewMiddleware: WithMaxKeyLength has no effect with a Global limit")
	case m.v6Set && m.keyOpt != "" && m.keyOpt != "KeyByIP":
		panic("throttle: NewMiddleware: WithIPv6Prefix applies only to keys by IP, not with " + m.keyOpt)
	case isGlobal:
	case m.keyOpt == "" || m.keyOpt == "KeyByIP":
		ip := m.ipOpts
		m.keyOf = ip.key
	}
	if m.onKeyError == nil {
		m.onKeyError = defaultKeyError
	}
	if m.onLimitError == nil {
		m.onLimitError = defaultLimitError
	}
	m.sfName = sfString(m.name)
	m.rlPrefix = m.sfName + ";r="
	m.refusedBody = problem(http.StatusTooManyRequests, quotaExceeded, "Quota Exceeded",
		"The request exceeds the quota of the "+strconv.Quote(m.name)+
			" policy now; it can be sent again after the seconds that Retry-After says.", m.name)
	m.currentPolicy()
	return m
}

// setKey records the option that chooses how keys are made, and a
// conflict if another one already did.
func (m *Middleware) setKey(opt string, keyOf func(*http.Request) (string, error)) {
	if m.keyOpt != "" && m.keyOpt != opt && m.optPanic == "" {
		m.optPanic = "both " + m.keyOpt + " and " + opt + " choose the key"
	}
	m.keyOpt = opt
	m.keyOf = keyOf
}

// WithMaxKeyLength refuses keys longer than n bytes as invalid, with 400
// or the handler of [WithKeyErrorHandler], before they reach the Limit:
// a Keyed keeps no key, only its hash, but a Redis-backed Limit stores
// each key as it is. The default is 256 bytes. It panics if n < 1.
func WithMaxKeyLength(n int) MiddlewareOption {
	if n < 1 {
		panic(fmt.Sprintf("throttle: WithMaxKeyLength: n %d must be >= 1", n))
	}
	return func(m *Middleware) { m.maxKeyLen, m.lenSet = n, true }
}

// WithRequestCost makes each request cost cost(r) units instead of 1, for
// endpoints of different weights: cost is called once per request, before
// the Limit. A cost of 0 is always admitted; a negative, NaN or infinite
// cost is an error of the server's (see [WithLimitErrorHandler]); a cost
// above MaxRate is answered 413. A nil cost means 1 per request.
func WithRequestCost(cost func(r *http.Request) float64) MiddlewareOption {
	return func(m *Middleware) { m.cost = cost }
}

// WithMaxWait lets a request that does not fit now wait up to d for its
// turn, in FIFO order with the others waiting on its key, before it is
// refused: smoothing for clients that send in bursts, at the price of a
// goroutine and a connection held while they wait.
//
// A request whose wait, as Allow reported it, is d or longer is refused at
// once, not after waiting d. The others call Limit.Acquire with a context
// that ends d from then (or before, with the request's); if the wait
// turns out longer by then, Acquire fails at once with a
// [ratelimit.DeadlineError], and the request is refused with a Retry-After
// of the wait it reports. A client that goes away while it waits takes
// nothing, if the server notices (see below), and those behind it move up
// as if it had never come; the Middleware then writes no response. Once
// admitted, the request calls Allow once more with a cost of 0, which
// takes nothing, to read the state that the RateLimit header reports: a
// request that waited makes three calls to the Limit (three round trips
// with Redis), one that did not wait makes one.
//
// A request leaves its place only if the server notices that its client
// went away. net/http notices it at once over HTTP/2, and for a request
// without a body. Over HTTP/1.x, it notices it only once the request's
// body has been read to its end, since it does not read the connection
// before. So the Middleware reads the body of an HTTP/1.x request into
// memory before the request waits, if it declares a Content-Length of at
// most 64 KiB and has no Expect: 100-continue (whose client waits to be
// told to send the body). The request takes its place in the queue once
// its client has sent the body, and the wait of d starts then. The handler
// reads the same bytes from the body of a shallow copy of the request.
// Over HTTP/1.x, a request with a longer body, a body of unknown length
// (chunked), or Expect: 100-continue keeps its place when its client hangs
// up: it takes its cost when its turn comes and goes on to the handler,
// and the requests behind it wait that much longer.
//
// A d of 0, the default, refuses at once whatever does not fit. It panics
// if d < 0.
func WithMaxWait(d time.Duration) MiddlewareOption {
	if d < 0 {
		panic(fmt.Sprintf("throttle: WithMaxWait: d %v must be >= 0", d))
	}
	return func(m *Middleware) { m.maxWait = d }
}

// WithPolicyName names the policy in the RateLimit-Policy and RateLimit
// headers, and in the problem+json body of a refusal, instead of
// "default". It panics if name is empty or has other than printable ASCII
// characters, which a Structured Fields String cannot hold.
func WithPolicyName(name string) MiddlewareOption {
	if !printableASCII(name) {
		panic(fmt.Sprintf("throttle: WithPolicyName: name %q must be 1 or more printable ASCII characters", name))
	}
	return func(m *Middleware) { m.name = name }
}

// WithQuotaUnit adds the draft's qu parameter to RateLimit-Policy, for
// costs that are not one unit per request: "content-bytes" when the cost
// of a request is its size ([WithRequestCost]). Without it, clients take q
// to count requests. It panics if unit is empty or has other than
// printable ASCII characters.
func WithQuotaUnit(unit string) MiddlewareOption {
	if !printableASCII(unit) {
		panic(fmt.Sprintf("throttle: WithQuotaUnit: unit %q must be 1 or more printable ASCII characters", unit))
	}
	return func(m *Middleware) { m.unit = unit }
}

// WithKeyErrorHandler makes the Middleware call f, instead of answering
// 400 Bad Request with a problem+json body, for a request it has no valid
// key for: err says why (an error of the function given to [KeyBy] comes
// as it is). The request takes nothing from any bucket, and does not reach
// the next handler unless f calls it. A nil f means the default.
func WithKeyErrorHandler(f func(w http.ResponseWriter, r *http.Request, err error)) MiddlewareOption {
	return func(m *Middleware) { m.onKeyError = f }
}

// WithLimitErrorHandler makes the Middleware call f when the Limit fails
// with an error that is not a refusal: a Redis-backed Limit that cannot
// reach Redis, or a cost from [WithRequestCost] that is negative, NaN or
// infinite ([ratelimit.ErrInvalidAmount]). The default logs err through
// the log package's standard logger and answers 503 Service Unavailable
// (500 Internal Server Error for an invalid cost) with a problem+json body
// that does not show err. The request does not reach the next handler
// unless f calls it. An error that comes once the request's context has
// ended, when its client went away, is dropped: no one is left to answer.
// A nil f means the default.
func WithLimitErrorHandler(f func(w http.ResponseWriter, r *http.Request, err error)) MiddlewareOption {
	return func(m *Middleware) { m.onLimitError = f }
}

// WithRefusedHandler makes the Middleware call h to write a refused
// request's response, instead of its 429 with a problem+json body. The
// Retry-After, RateLimit-Policy and RateLimit headers are already set when
// h is called; h writes the status and the body. A nil h means the
// default.
func WithRefusedHandler(h http.Handler) MiddlewareOption {
	return func(m *Middleware) { m.onRefused = h }
}

// Handler returns next limited by m: the func(http.Handler) http.Handler
// shape that routers take as middleware. It panics if next is nil.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	if next == nil {
		panic("throttle: Middleware.Handler: nil http.Handler")
	}
	return &limited{m: m, next: next}
}

type limited struct {
	m    *Middleware
	next http.Handler
}

func (l *limited) ServeHTTP(w http.ResponseWriter, r *http.Request) { l.m.serve(w, r, l.next) }

// serve is one request through m, on to next if admitted.
func (m *Middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	var key string
	if m.keyOf != nil {
		k, err := m.keyOf(r)
		if err == nil && len(k) > m.maxKeyLen {
			err = fmt.Errorf("throttle: a key of %d bytes is longer than the %d bytes allowed", len(k), m.maxKeyLen)
		}
		if err != nil {
			m.onKeyError(w, r, err)
			return
		}
		key = k
	}
	cost := 1.0
	if m.cost != nil {
		cost = m.cost(r)
	}
	ctx := r.Context()
	d := m.limit.Allow(ctx, key, cost)
	if !d.OK && d.Err == nil && d.RetryAfter < m.maxWait {
		r = holdBody(r)
		var stay bool
		if d, stay = m.wait(ctx, key, cost, d); !stay {
			return
		}
	}
	switch {
	case d.OK:
		var rl string
		if d.Err == nil {
			rl = m.rateLimit(d.Remaining, ceilSeconds(d.Reset))
		}
		m.putFields(w.Header(), new([2]string), m.currentPolicy().value, rl)
		next.ServeHTTP(w, r)
	case d.Err == nil || errors.Is(d.Err, ratelimit.ErrTooManyKeys):
		m.refuse(w, r, d)
	case errors.Is(d.Err, ratelimit.ErrExceedsCapacity):
		m.tooLarge(w, cost)
	case ctx.Err() != nil:
		// The client went away (and a Redis call with it): no one is
		// left to answer, and nothing failed but the request.
	default:
		m.onLimitError(w, r, d.Err)
	}
}

// wait is WithMaxWait's wait for a request that Allow refused with d. It
// returns the decision to answer with, or false if the client went away.
// The decision of a request admitted by Acquire has OK set, and the state
// that Allow(0) read after it, unless that failed: then its Err is set,
// and no RateLimit header is sent.
func (m *Middleware) wait(ctx context.Context, key string, cost float64, d ratelimit.Decision) (ratelimit.Decision, bool) {
	wctx, cancel := context.WithTimeout(ctx, m.maxWait)
	err := m.limit.Acquire(wctx, key, cost)
	cancel()
	var de *ratelimit.DeadlineError
	switch {
	case err == nil:
		st := m.limit.Allow(ctx, key, 0)
		st.OK = true // Acquire took the units
		return st, true
	case errors.As(err, &de):
		return ratelimit.Decision{Remaining: d.Remaining, RetryAfter: de.Wait}, true
	case ctx.Err() != nil:
		return d, false
	case errors.Is(err, context.DeadlineExceeded):
		// The turn moved later while the request waited (SetRate, Pause),
		// past MaxWait: one last look, which refuses with the wait now.
		return m.limit.Allow(ctx, key, cost), true
	default:
		return ratelimit.Decision{RetryAfter: m.limit.Period(), Err: err}, true
	}
}

// maxHeldBody is the longest request body, in bytes, that the Middleware
// reads into memory before the request waits (see WithMaxWait).
const maxHeldBody = 64 << 10

// holdBody returns r, or a shallow copy of it whose body has been read into
// memory, for a request about to wait: net/http notices that an HTTP/1.x
// client has hung up only once the request's body has been read to its end
// (it does not read the connection before that), and a request must
// notice it while it waits, to give up its place. It reads the body of an
// HTTP/1.x request that declares a Content-Length from 1 to maxHeldBody
// bytes and has no Expect header. (Expect can only be 100-continue, since
// net/http answers any other 417: its client waits to be told to send the
// body, and reading the body would tell it to, for a request that may yet
// be refused.) It returns any other request as it is; over HTTP/2, net/http
// notices a client's leaving without reading the body.
//
// The copy's body gives the handler the same bytes, then what the first
// body returned after them: io.EOF, a read error (the client hung up half
// way, a deadline passed, an http.MaxBytesReader of an earlier handler said
// no), or, for a body that an earlier handler replaced with one longer than
// Content-Length, the rest of it. Closing it closes the first body.
func holdBody(r *http.Request) *http.Request {
	if r.ProtoMajor != 1 || r.ContentLength <= 0 || r.ContentLength > maxHeldBody ||
		r.Body == nil || r.Body == http.NoBody || len(r.Header["Expect"]) > 0 {
		return r
	}
	// One byte more than declared, so that a body that returns its last
	// bytes without io.EOF can return io.EOF on the next Read.
	buf := make([]byte, 0, r.ContentLength+1)
	var err error
	for err == nil && len(buf) < cap(buf) {
		var n int
		n, err = r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
	}
	// With err nil, buf is full and the end was not seen: the rest stays
	// in r.Body, for the handler to read after buf.
	held := &heldBody{data: buf, err: err, body: r.Body}
	r2 := new(http.Request)
	*r2 = *r
	r2.Body = held
	return r2
}

// heldBody is a request body read into memory by holdBody: data, then err,
// or, if err is nil, the rest of body.
type heldBody struct {
	data []byte
	err  error
	body io.ReadCloser
}

func (b *heldBody) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.body.Read(p)
}

func (b *heldBody) Close() error { return b.body.Close() }

// refuse answers 429 with the headers of d.
func (m *Middleware) refuse(w http.ResponseWriter, r *http.Request, d ratelimit.Decision) {
	secs := max(ceilSeconds(d.RetryAfter), 1)
	h := w.Header()
	f := new([4]string) // one allocation for the four fields' slices
	m.putFields(h, (*[2]string)(f[:2]), m.currentPolicy().value, m.rateLimit(d.Remaining, secs))
	f[2] = strconv.FormatInt(secs, 10)
	h[hdrRetryAfter] = f[2:3:3]
	if m.onRefused != nil {
		m.onRefused.ServeHTTP(w, r)
		return
	}
	f[3] = problemJSON
	h[hdrContentType] = f[3:4:4]
	w.WriteHeader(http.StatusTooManyRequests)
	w.Write(m.refusedBody)
}

// tooLarge answers 413 for a cost that can never fit.
func (m *Middleware) tooLarge(w http.ResponseWriter, cost float64) {
	p := m.currentPolicy()
	h := w.Header()
	f := new([3]string)
	m.putFields(h, (*[2]string)(f[:2]), p.value, "")
	f[2] = problemJSON
	h[hdrContentType] = f[2:3:3]
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	w.Write(problem(http.StatusRequestEntityTooLarge, quotaExceeded, "Quota Exceeded",
		"The request costs "+strconv.FormatFloat(cost, 'g', -1, 64)+" units, more than the "+
			strconv.Quote(m.name)+" policy's quota of "+strconv.FormatFloat(p.maxRate, 'g', -1, 64)+
			": it can never be admitted.", m.name))
}

// putFields sets this Middleware's items in the RateLimit-Policy and
// RateLimit fields of h: policy, and rl unless it is "". f holds the
// values, made for this response: each field gets a slice of its own, of
// capacity one, so that a handler that writes to it, or appends to it,
// changes no other response, and the two cost one allocation.
//
// If a Middleware that the request went through before this one set
// either field, putFields adds the items to those fields instead, in one
// line, in place of any item of the same policy name (see withItem): the
// draft lists every policy that applies in one field, and a client heeds
// the one with the least remaining. A header map without either field,
// the common case, costs a look at its length, or two lookups.
func (m *Middleware) putFields(h http.Header, f *[2]string, policy, rl string) {
	if len(h) > 0 && len(h[hdrPolicy])+len(h[hdrRateLimit]) > 0 {
		policy = withItem(h[hdrPolicy], m.sfName, policy)
		rl = withItem(h[hdrRateLimit], m.sfName, rl)
		if rl == "" {
			delete(h, hdrRateLimit)
		}
	}
	f[0] = policy
	h[hdrPolicy] = f[0:1:1]
	if rl != "" {
		f[1] = rl
		h[hdrRateLimit] = f[1:2:2]
	}
}

// withItem returns the List that the field lines hold, with item added
// last (unless it is "") and every member whose value is the String name
// (an sfString) taken out, as one line: members joined by ", ". It never
// writes to lines. A member is found by its bytes, since a String has one
// serialisation. A comma within a String does not end a member (an Inner
// List has no comma outside its Strings), and a member that is not valid
// is kept as it is.
func withItem(lines []string, name, item string) string {
	var b []byte
	for _, line := range lines {
		for line != "" {
			var member string
			member, line = nextMember(line)
			member = trimOWS(member)
			if member == "" || isItemOf(member, name) {
				continue
			}
			if len(b) > 0 {
				b = append(b, ", "...)
			}
			b = append(b, member...)
		}
	}
	if item != "" {
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = append(b, item...)
	}
	return string(b)
}

// nextMember splits s at the first comma outside a String, which ends a
// List member. It returns s and "" if there is none.
func nextMember(s string) (member, rest string) {
	inString := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inString && c == '\\':
			i++ // an escaped character, which ends no String
		case c == '"':
			inString = !inString
		case c == ',' && !inString:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

// isItemOf reports whether the List member m is an Item whose value is the
// String name, given as an sfString: name, then parameters or nothing.
func isItemOf(m, name string) bool {
	return strings.HasPrefix(m, name) && (len(m) == len(name) || m[len(name)] == ';')
}

// rateLimit returns the RateLimit value for remaining units and t seconds.
func (m *Middleware) rateLimit(remaining float64, t int64) string {
	var buf [64]byte
	b := append(buf[:0], m.rlPrefix...)
	b = strconv.AppendInt(b, sfInt(remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, min(t, maxSFInt), 10)
	return string(b)
}

// currentPolicy returns the RateLimit-Policy value for the Limit's rate
// now, building it again if SetRate changed the rate.
func (m *Middleware) currentPolicy() *policyField {
	q, w := m.limit.MaxRate(), m.limit.Period()
	if p := m.policy.Load(); p != nil && p.maxRate == q && p.period == w {
		return p
	}
	b := append([]byte(sfString(m.name)), ";q="...)
	b = strconv.AppendInt(b, sfInt(q), 10)
	if m.unit != "" {
		b = append(b, ";qu="...)
		b = append(b, sfString(m.unit)...)
	}
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, min(max(ceilSeconds(w), 1), maxSFInt), 10)
	p := &policyField{maxRate: q, period: w, value: string(b)}
	m.policy.Store(p)
	return p
}

// sfInt returns x rounded down to an RFC 9651 Integer: 0 for NaN or
// negative x, and at most maxSFInt.
func sfInt(x float64) int64 {
	if !(x >= 0) {
		return 0
	}
	if x >= maxSFInt {
		return maxSFInt
	}
	return int64(x)
}

// ceilSeconds returns d in whole seconds, rounded up; 0 for d <= 0.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// sfString returns s, printable ASCII, as an RFC 9651 String.
func sfString(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(append(b, '"'))
}

// printableASCII reports whether s is non-empty and all its bytes are
// printable ASCII (0x20 to 0x7e), the characters of an RFC 9651 String.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}

// problem returns an RFC 9457 problem details object, with the draft's
// violated-policies member if policy is not empty.
func problem(status int, typ, title, detail, policy string) []byte {
	p := struct {
		Type     string   `json:"type"`
		Title    string   `json:"title"`
		Status   int      `json:"status"`
		Detail   string   `json:"detail,omitempty"`
		Violated []string `json:"violated-policies,omitempty"`
	}{Type: typ, Title: title, Status: status, Detail: detail}
	if policy != "" {
		p.Violated = []string{policy}
	}
	b, err := json.Marshal(p)
	if err != nil {
		panic("throttle: problem details: " + err.Error()) // strings and an int always marshal
	}
	return b
}

var (
	badRequestBody = problem(http.StatusBadRequest, "about:blank", "Bad Request",
		"The request does not identify its client for rate limiting.", "")
	unavailableBody = problem(http.StatusServiceUnavailable, "about:blank", "Service Unavailable",
		"Rate limiting is unavailable; try again later.", "")
	internalBody = problem(http.StatusInternalServerError, "about:blank", "Internal Server Error",
		"The cost of the request could not be counted.", "")
)

// defaultKeyError is the key error handler unless WithKeyErrorHandler.
func defaultKeyError(w http.ResponseWriter, _ *http.Request, _ error) {
	w.Header()[hdrContentType] = []string{problemJSON}
	w.WriteHeader(http.StatusBadRequest)
	w.Write(badRequestBody)
}

// defaultLimitError is the limit error handler unless
// WithLimitErrorHandler.
func defaultLimitError(w http.ResponseWriter, r *http.Request, err error) {
	log.Printf("throttle: Middleware: %s %q: %v", r.Method, r.URL.Path, err)
	w.Header()[hdrContentType] = []string{problemJSON}
	if errors.Is(err, ratelimit.ErrInvalidAmount) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write(internalBody)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	w.Write(unavailableBody)
}
