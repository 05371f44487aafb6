package throttle

import (
	"context"
	"fmt"
	"log"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
)

// A Transport is an [http.RoundTripper] that acquires each request's cost
// from a [Throttled] before sending it, and that makes every caller of the
// limiter back off together when a server says it is overloaded, or that
// its quota is spent.
//
// # Backing off
//
// The Transport reads what every response says of the server's limits,
// before RoundTrip returns it, and pauses the limiter (see below for which
// limiters it can pause):
//
//   - On a 429 (Too Many Requests) or 503 (Service Unavailable) response
//     with a valid Retry-After header, it pauses for as long as that asks,
//     and reads no quota field: Retry-After takes precedence, as the
//     RateLimit draft says.
//   - On any other response, or one without a valid Retry-After, it
//     pauses until the quota resets if a quota field says that none
//     remains, so that the next request is not sent into a certain 429.
//     It reads the RateLimit field of draft-ietf-httpapi-ratelimit-headers
//     (-08 to -11): if any of its items has r=0, it pauses for the largest
//     t, in seconds, among those items. It reads the older drafts'
//     RateLimit-Remaining and RateLimit-Reset, and the X-RateLimit-Remaining
//     and X-RateLimit-Reset that GitHub and many others send: if Remaining
//     is 0, it pauses until Reset. And it reads the
//     X-RateLimit-Remaining-Requests and X-RateLimit-Reset-Requests of model
//     APIs, whose reset is a duration such as "6m0s" or "20ms". When
//     several say that nothing remains, the longest pause wins.
//
// A reset in RateLimit-Reset or X-RateLimit-Reset is a number of seconds,
// whole or decimal. Below 10^9 it counts seconds from now (10^9 seconds
// are 31 years); from 10^9 it is a Unix time in seconds, as GitHub sends
// (10^9 was September 2001); from 10^12 it is a Unix time in
// milliseconds, since as seconds it would lie over 30,000 years away. A
// Unix time is measured from the server's time now: from the response's
// Date header, which tells it to the second, refined with the Transport's
// clock (see [WithClock]) when that clock reads within the same second,
// and from the Transport's clock alone without a Date. So when the
// server's clock is minutes off ours, the pause is still right to within a
// second; when the two agree, it is exact.
//
// No quota field can pause the limiter longer than the cap set by
// [WithMaxPause], an hour unless set otherwise: a reset years away pauses
// it an hour. A malformed quota field changes nothing: a count or a reset
// that is negative or not a number, a RateLimit field that is not a valid
// Structured Field List or is longer than 4 KB, a count or a reset given
// in two fields. Nor does a count above 0, nor a response that came from a
// cache (an Age header above 0), whose counts tell of the past.
// Retry-After is not held to the cap: the server that sends it refuses
// what comes sooner.
//
// With [AdoptPolicy], the Transport also sets the limiter's rate to the
// policy the server advertises in RateLimit-Policy.
//
// # Which limiters
//
// The Transport can pause a limiter with either of two Pause methods:
//
//   - Pause(time.Duration), a [Pauser], as [ratelimit.Limiter] and
//     [ratelimit.Window] have;
//   - Pause(context.Context, time.Duration) error, a [ContextPauser], as
//     the Redis-backed [github.com/dripgo/drip/ratelimit/redisbucket.Limiter]
//     has, which pauses every process that shares its bucket. The
//     Transport calls it with the request's context, so RoundTrip waits
//     for the pause no longer than the request may take (redisbucket
//     bounds its round trip by its own timeout too). If Pause returns an
//     error (Redis unreachable, or the request's context ended), the
//     limiter may not be paused: the response still goes back to the
//     caller unchanged, and the error goes to the handler given with
//     [WithPauseErrorHandler], or else is logged through the log package's
//     standard logger, as [http.Server] logs its errors.
//
// A limiter with neither method, or one hidden behind a type that does not
// have it, is not paused: the Transport then still acquires each request's
// cost, but a Retry-After or a quota field changes nothing.
// [Transport.CanPause] reports which is the case.
//
// With [PerHost], each request also waits in its host's own bucket of a
// [ratelimit.Keyed], and a pause stops that host's bucket alone: the other
// hosts, and the Throttled's limiter, go on. [AdoptPolicy] cannot be
// used with PerHost: one host's policy would set the rate of every host.
//
// # After a pause
//
// Once paused, the limiter admits nothing until the pause ends: the
// requests already waiting, and those that come later from any goroutine
// sharing the limiter, are sent no sooner than the server asked. A
// [ratelimit.Limiter] then admits the next request as soon as the pause
// ends, unless its own rate holds it back longer, and the others at its
// steady rate, with no burst. On ratelimit.New(10, time.Second), a
// Retry-After of 5 seconds sends the requests waiting 5.0, 5.1, 5.2
// seconds (and so on) after the response came. Pausing never lowers the
// limiter's level, and the request that drew the 429 took its cost: on
// ratelimit.New(1, time.Minute), a Retry-After of 90 seconds sends the next
// request 90 seconds after the first and the one after a minute later, but
// one of 2 seconds changes nothing, since the limiter waits a minute anyway.
//
// Retry-After is read as delay-seconds ("120") or as an HTTP date; a date
// is measured from the response's Date header when it has one, since both
// then come from the server's clock and any skew between the server's
// clock and ours cancels out, and otherwise from the time now on the
// Transport's clock.
//
// The Transport never retries (a request may not be safe to send twice)
// and never reads the body of a response or changes it: the caller gets
// exactly what the base RoundTripper returned, and decides whether to try
// again; the next attempt waits out the pause in the limiter.
//
// If the limiter refuses a request (its context ended, its deadline cannot
// be met, or its cost is invalid), RoundTrip closes the request's body,
// does not send it, and returns the limiter's error; [http.Client] wraps it
// in a *url.Error, through which errors.Is still finds
// [context.DeadlineExceeded] and the rest.
//
// # Cost
//
// Reading the headers adds about 60 ns to a response that has none of
// them (four map lookups), and about 130 ns to one with a RateLimit field,
// on a 2-core machine; neither allocates. A response that says nothing
// remains costs up to a microsecond more, to parse its reset and Date and
// to pause the limiter. A Transport is safe for concurrent use if its base
// RoundTripper is.
type Transport struct {
	th       *Throttled[*http.Request] // nil with PerHost alone
	hosts    *ratelimit.Keyed[string]  // the buckets by host, or nil
	base     http.RoundTripper
	pause    func(req *http.Request, d time.Duration) error // nil if nothing can pause
	onError  func(req *http.Request, d time.Duration, err error)
	clock    clock.Clock
	maxPause time.Duration  // the longest pause a quota field asks; 0: they are not read
	policy   *policyAdopter // nil without AdoptPolicy
}

// A Pauser is a limiter that can admit nothing for a while, as
// [ratelimit.Limiter] can: a [Transport] pauses one when a server asks it
// to back off.
type Pauser interface {
	// Pause admits nothing for d. Pause with d <= 0 does nothing.
	Pause(d time.Duration)
}

// A ContextPauser is a limiter whose Pause can fail, because it reaches
// another system, as the Redis-backed
// [github.com/dripgo/drip/ratelimit/redisbucket.Limiter] does: a
// [Transport] pauses one when a server asks it to back off.
type ContextPauser interface {
	// Pause admits nothing for d, or returns why it could not pause. It
	// should return soon after ctx ends, if not before. Pause with d <= 0
	// does nothing.
	Pause(ctx context.Context, d time.Duration) error
}

// A RateSetter is a limiter whose rate can change, as those of
// [ratelimit.Limiter] and [ratelimit.Window] can: a [Transport] made with
// [AdoptPolicy] sets it to the policy a server advertises.
type RateSetter interface {
	// SetRate makes the limiter admit maxRate units per period from now
	// on, in bursts of up to maxRate.
	SetRate(maxRate float64, period time.Duration)
}

var (
	_ Pauser     = (*ratelimit.Limiter)(nil)
	_ Pauser     = (*ratelimit.Window)(nil)
	_ Pauser     = (*ratelimit.KeyLimiter[string])(nil)
	_ RateSetter = (*ratelimit.Limiter)(nil)
	_ RateSetter = (*ratelimit.Window)(nil)
)

// A TransportOption configures a [Transport] in [NewTransport].
type TransportOption func(*Transport)

// WithClock makes the Transport read the time now through c when it turns a
// date into a pause: a Retry-After date, for a response that has no Date
// header, and a reset given as a Unix time (see [Transport]). Give it the
// clock the limiter runs on (the one passed to [ratelimit.WithClock]), so
// that the pause is measured on the same clock as the wait. A nil c means
// the real clock, which is also the default.
func WithClock(c clock.Clock) TransportOption {
	return func(t *Transport) { t.clock = c }
}

// WithPauseErrorHandler makes the Transport call f when its limiter, a
// [ContextPauser], fails to pause: req is the request whose response asked
// for the pause, d the pause asked for, and err what Pause returned. f is
// called before RoundTrip returns the response, on its goroutine. A nil f
// means the default: log the error through the log package's standard
// logger.
func WithPauseErrorHandler(f func(req *http.Request, d time.Duration, err error)) TransportOption {
	return func(t *Transport) { t.onError = f }
}

// WithMaxPause caps the pause that the quota fields of a response can ask
// for (RateLimit, RateLimit-Reset, X-RateLimit-Reset and
// X-RateLimit-Reset-Requests; see [Transport]) at d, one hour by default: a
// server that says its quota resets in a year pauses the limiter for d,
// after which the next request finds out whether it has. A Retry-After on a
// 429 or 503 response is not capped. WithMaxPause(0) turns the quota fields
// off: the Transport then reads Retry-After alone. It panics if d is
// negative.
func WithMaxPause(d time.Duration) TransportOption {
	if d < 0 {
		panic(fmt.Sprintf("throttle: WithMaxPause(%v): the cap must be >= 0 (0 turns the quota fields off)", d))
	}
	return func(t *Transport) { t.maxPause = d }
}

// AdoptPolicy makes the Transport set its limiter's rate to the quota
// policy a server advertises in its RateLimit-Policy field
// (draft-ietf-httpapi-ratelimit-headers), held to at most maxRate units
// per period. The field lists policies, each a quota q per window of w
// seconds, such as
//
//	RateLimit-Policy: "default";q=50;w=1
//
// on which the Transport calls SetRate(50, time.Second). The limiter must
// be a [RateSetter], as [ratelimit.Limiter] and [ratelimit.Window] are; a
// Window then admits exactly q in any w seconds, and a Limiter q in bursts
// and q per w on average. A Limiter suits a server that limits with a
// leaky bucket, as drip's [Middleware] does; against a server that counts
// requests in windows, give the Transport a Window, since a Limiter may
// send up to 2q in some w seconds (a burst of q, then q more as it
// drains).
//
// With several policies, or one above the cap, the Transport takes the
// smallest quota and the lowest rate among them and the cap, which keeps
// within each policy's burst and each one's average: with
// AdoptPolicy(1000, time.Second),
//
//	RateLimit-Policy: "burst";q=100;w=60,"hourly";q=1000;w=3600
//
// sets SetRate(100, 6*time.Minute): bursts of at most 100, and 1000 an hour
// on average. The period is rounded up to the nanosecond: the rate set is
// never above the cap's or any policy's.
//
// The Transport adopts a policy only if its quota is at least 1, it counts
// requests (no qu, or qu="requests"), and its window is at most a year and
// a day. A field that is malformed, or holds no such policy, changes
// nothing; so does a response without the field. The rate set stays until
// a response brings another policy. The Transport calls SetRate only when
// the field differs from the one it last saw, so it leaves alone a rate
// that other code set meanwhile. The cap keeps a server, or whatever sits
// between it and the client, from making the client send as fast as it
// says: a policy of many times the cap's rate sets the cap's rate.
// Nothing bounds the rate from below: a server can advertise a policy as
// slow as q=1;w=31622400, one request a year, and the Transport follows
// it, so that requests wait a year or more for the limiter, or fail when
// their contexts end. Use AdoptPolicy only with servers you trust, reached
// through proxies you trust.
//
// NewTransport panics if the limiter is not a RateSetter, and with
// [PerHost]: one host's policy would set the rate of every host's bucket.
// AdoptPolicy panics unless maxRate per period is a rate
// [ratelimit.New] takes, with period at most a year and a day and a unit
// taking at least a nanosecond.
func AdoptPolicy(maxRate float64, period time.Duration) TransportOption {
	if !(maxRate > 0) || math.IsInf(maxRate, 1) {
		panic(fmt.Sprintf("throttle: AdoptPolicy: maxRate %v must be a finite number > 0", maxRate))
	}
	if period <= 0 || period > maxPolicyWindow {
		panic(fmt.Sprintf("throttle: AdoptPolicy: period %v must be > 0 and at most %v", period, maxPolicyWindow))
	}
	if float64(period)/maxRate < 1 {
		panic(fmt.Sprintf("throttle: AdoptPolicy: maxRate %v per %v is more than one a nanosecond", maxRate, period))
	}
	checkRate(maxRate, period)
	return func(t *Transport) { t.policy = &policyAdopter{rate: maxRate, period: period} }
}

// checkRate panics, naming AdoptPolicy, if ratelimit.New refuses maxRate
// per period.
func checkRate(maxRate float64, period time.Duration) {
	defer func() {
		if r := recover(); r != nil {
			panic(fmt.Sprintf("throttle: AdoptPolicy(%v, %v): %v", maxRate, period, r))
		}
	}()
	ratelimit.New(maxRate, period)
}

// A policyAdopter sets a limiter's rate to the RateLimit-Policy of the
// responses, for AdoptPolicy.
type policyAdopter struct {
	rate   float64       // the cap: at most rate units
	period time.Duration // per period
	lim    RateSetter
	// last is the field last adopted, its lines joined with ", ", so that
	// a response that repeats it, as most do, costs a comparison and no
	// lock: BenchmarkTransportHeaders/AdoptPolicy_same_policy_parallel
	// takes about 60 ns a response with it on 2 cores, 250 ns with the
	// lock taken every time.
	last atomic.Pointer[string]
	// mu serialises adoptions, so that the rate set last is that of the
	// field stored last: without it, two responses with different policies
	// could leave the limiter at one and last at the other, which would
	// then never be set (TestTransportAdoptPolicyConcurrent).
	mu sync.Mutex
}

// adopt sets the limiter's rate to the policy in h, if h has one other
// than the one adopted last.
func (p *policyAdopter) adopt(h http.Header) {
	v := h[hRateLimitPolicy]
	if len(v) == 0 {
		return
	}
	if last := p.last.Load(); last != nil && equalJoined(*last, v) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if last := p.last.Load(); last != nil && equalJoined(*last, v) {
		return
	}
	raw := strings.Join(v, ", ")
	if maxRate, period, ok := policyRate(v, p.rate, p.period); ok {
		p.lim.SetRate(maxRate, period)
	}
	p.last.Store(&raw)
}

// equalJoined reports whether s is the lines v joined with ", ", without
// joining them.
func equalJoined(s string, v []string) bool {
	for i, line := range v {
		if i > 0 {
			if !strings.HasPrefix(s, ", ") {
				return false
			}
			s = s[2:]
		}
		if !strings.HasPrefix(s, line) {
			return false
		}
		s = s[len(line):]
	}
	return s == ""
}

// PerHost gives each host its own bucket in hosts: before it is sent, a
// request also takes its cost from the bucket of its host (the URL's host,
// with its port if it has one, in lower case), first, then from the
// Throttled's limiter, if there is one. A response that asks the client to
// back off (see [Transport]) pauses that host's bucket, and nothing else:
// requests to the other hosts go on at their own rate. So a crawler can
// hold every host to a rate of its own, and all of them to a rate in total:
//
//	hosts := ratelimit.NewKeyed[string](2, time.Second) // 2 a second per host
//	total := ratelimit.New(50, time.Second)              // 50 a second in all
//	tr := throttle.NewTransport(throttle.New[*http.Request](total), nil, throttle.PerHost(hosts))
//
// With PerHost, NewTransport takes a nil Throttled: each request then costs
// one unit of its host's bucket, and nothing more. A request that its host's
// bucket admits but the Throttled's limiter refuses has taken its units
// from the host's bucket. A nil hosts means no buckets by host. PerHost
// and [AdoptPolicy] exclude each other.
func PerHost(hosts *ratelimit.Keyed[string]) TransportOption {
	return func(t *Transport) { t.hosts = hosts }
}

// hostKey returns the key of req's host in the buckets of PerHost: the
// host of its URL, or the Host it is sent with if the URL has none, in
// lower case, as host names are compared.
func hostKey(req *http.Request) string {
	h := req.URL.Host
	if h == "" {
		h = req.Host
	}
	for i := 0; i < len(h); i++ {
		if 'A' <= h[i] && h[i] <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// defaultMaxPause is the cap on the pauses that quota fields ask for,
// unless WithMaxPause sets another.
const defaultMaxPause = time.Hour

// NewTransport returns a Transport that admits requests through th, at the
// cost th gives each (one unit each unless th was made with [WithCost]),
// and sends them with base; a nil base means [http.DefaultTransport]. It
// panics if th is nil, unless the requests have buckets by host
// ([PerHost]), and as [AdoptPolicy] says.
func NewTransport(th *Throttled[*http.Request], base http.RoundTripper, opts ...TransportOption) *Transport {
	if base == nil {
		base = http.DefaultTransport
	}
	t := &Transport{th: th, base: base, maxPause: defaultMaxPause}
	for _, opt := range opts {
		if opt != nil {
			opt(t)
		}
	}
	switch {
	case t.hosts != nil:
		t.pause = func(req *http.Request, d time.Duration) error { t.hosts.Pause(hostKey(req), d); return nil }
	case th == nil:
		panic("throttle: NewTransport: nil Throttled")
	default:
		switch p := th.lim.(type) {
		case Pauser:
			t.pause = func(_ *http.Request, d time.Duration) error { p.Pause(d); return nil }
		case ContextPauser:
			t.pause = func(req *http.Request, d time.Duration) error { return p.Pause(req.Context(), d) }
		}
	}
	if t.policy != nil {
		if t.hosts != nil {
			panic("throttle: NewTransport: AdoptPolicy with PerHost: one host's policy would set the rate of every host")
		}
		s, ok := th.lim.(RateSetter)
		if !ok {
			panic(fmt.Sprintf("throttle: NewTransport: AdoptPolicy: the limiter, a %T, has no SetRate(float64, time.Duration)", th.lim))
		}
		t.policy.lim = s
	}
	if t.clock == nil {
		t.clock = clock.New()
	}
	if t.onError == nil {
		t.onError = logPauseError
	}
	return t
}

// CanPause reports whether the Transport pauses its limiter when a server
// asks it to back off: whether the limiter is a [Pauser] or a
// [ContextPauser], or the requests have buckets by host ([PerHost]). When
// it reports false, the Transport still acquires each request's cost, and
// adopts the server's policy if made with [AdoptPolicy], but never pauses
// the limiter, whatever the server answers.
func (t *Transport) CanPause() bool { return t.pause != nil }

// RoundTrip waits until the limiter admits req, then sends it with the base
// RoundTripper and returns its response and error unchanged, having first
// adopted the server's policy (with [AdoptPolicy]) and paused the limiter
// if the response asks clients to back off (see [Transport]).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.wait(req); err != nil {
		// The RoundTripper contract: the body is closed even on errors.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp != nil {
		t.learn(req, resp)
	}
	return resp, err
}

// learn adopts the policy that resp advertises, if the Transport adopts
// policies, and pauses the limiter for as long as resp asks, if it can.
func (t *Transport) learn(req *http.Request, resp *http.Response) {
	if t.policy != nil {
		t.policy.adopt(resp.Header)
	}
	if t.pause == nil {
		return
	}
	var d time.Duration
	if s := resp.StatusCode; s == http.StatusTooManyRequests || s == http.StatusServiceUnavailable {
		var ok bool
		if d, ok = retryAfter(resp.Header, t.clock); ok && d <= 0 {
			return // Retry-After says now, and takes precedence
		}
	}
	if d <= 0 && t.maxPause > 0 {
		d = quotaPause(resp.Header, t.clock, t.maxPause)
	}
	if d > 0 {
		if err := t.pause(req, d); err != nil {
			t.onError(req, d, err)
		}
	}
}

// wait takes req's cost from its host's bucket, if the requests have
// buckets by host, then from the Throttled's limiter, if there is one.
func (t *Transport) wait(req *http.Request) error {
	if t.hosts == nil {
		return t.th.Wait(req.Context(), req)
	}
	cost := 1.0
	if t.th != nil && t.th.cost != nil {
		cost = t.th.cost(req)
	}
	if err := t.hosts.Acquire(req.Context(), hostKey(req), cost); err != nil || t.th == nil {
		return err
	}
	return t.th.lim.Acquire(req.Context(), cost)
}

// logPauseError is the default handler of a failed pause.
func logPauseError(req *http.Request, d time.Duration, err error) {
	log.Printf("throttle: Transport: %s %s asked to back off for %v, but the limiter did not pause: %v",
		req.Method, req.URL.Redacted(), d, err)
}

// CloseIdleConnections closes the idle connections of the base RoundTripper,
// if it has such a method, so that [http.Client.CloseIdleConnections] works
// through the Transport.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// retryAfter returns how long the Retry-After header in h asks to wait, and
// false if there is none or it is malformed. A date is measured from h's
// Date header if valid, else from clk's now; a date in the past gives a
// negative duration.
func retryAfter(h http.Header, clk clock.Clock) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > math.MaxInt64/uint64(time.Second) {
			// Only overflow gets here: the server asks for longer than a
			// Duration holds, and the limiter cuts a pause to its maximum.
			return math.MaxInt64, true
		}
		return time.Duration(n) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	now, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		now = clk.Now()
	}
	return at.Sub(now), true
}

// isDigits reports whether s is one or more ASCII digits: the delay-seconds
// form of RFC 9110, which has no sign, fraction or exponent.
func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
