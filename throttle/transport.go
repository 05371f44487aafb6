package throttle

import (
	"context"
	"log"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
)

// A Transport is an [http.RoundTripper] that acquires each request's cost
// from a [Throttled] before sending it, and that makes every caller of the
// limiter back off together when a server says it is overloaded.
//
// On a 429 (Too Many Requests) or 503 (Service Unavailable) response with a
// valid Retry-After header, the Transport pauses the limiter for that long,
// before RoundTrip returns the response. It can pause a limiter with either
// of two Pause methods:
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
// cost, but a Retry-After changes nothing. [Transport.CanPause] reports
// which is the case.
//
// With [PerHost], each request also waits in its host's own bucket of a
// [ratelimit.Keyed], and a Retry-After pauses that host's bucket alone: the
// other hosts, and the Throttled's limiter, go on.
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
// Transport's clock (see [WithClock]).
//
// The Transport never retries (a request may not be safe to send twice)
// and never reads or changes a response: the caller gets exactly what the
// base RoundTripper returned, and decides whether to try again; the next
// attempt waits out the pause in the limiter.
//
// If the limiter refuses a request (its context ended, its deadline cannot
// be met, or its cost is invalid), RoundTrip closes the request's body,
// does not send it, and returns the limiter's error; [http.Client] wraps it
// in a *url.Error, through which errors.Is still finds
// [context.DeadlineExceeded] and the rest.
//
// A Transport is safe for concurrent use if its base RoundTripper is.
type Transport struct {
	th      *Throttled[*http.Request] // nil with PerHost alone
	hosts   *ratelimit.Keyed[string]  // the buckets by host, or nil
	base    http.RoundTripper
	pause   func(req *http.Request, d time.Duration) error // nil if nothing can pause
	onError func(req *http.Request, d time.Duration, err error)
	clock   clock.Clock
}

// A Pauser is a limiter that can admit nothing for a while, as
// [ratelimit.Limiter] can: a [Transport] pauses one when a server answers
// with Retry-After.
type Pauser interface {
	// Pause admits nothing for d. Pause with d <= 0 does nothing.
	Pause(d time.Duration)
}

// A ContextPauser is a limiter whose Pause can fail, because it reaches
// another system, as the Redis-backed
// [github.com/dripgo/drip/ratelimit/redisbucket.Limiter] does: a
// [Transport] pauses one when a server answers with Retry-After.
type ContextPauser interface {
	// Pause admits nothing for d, or returns why it could not pause. It
	// should return soon after ctx ends, if not before. Pause with d <= 0
	// does nothing.
	Pause(ctx context.Context, d time.Duration) error
}

var (
	_ Pauser = (*ratelimit.Limiter)(nil)
	_ Pauser = (*ratelimit.Window)(nil)
	_ Pauser = (*ratelimit.KeyLimiter[string])(nil)
)

// A TransportOption configures a [Transport] in [NewTransport].
type TransportOption func(*Transport)

// WithClock makes the Transport read the time now through c when it turns a
// Retry-After date into a pause, for a response that has no Date header.
// Give it the clock the limiter runs on (the one passed to
// [ratelimit.WithClock]), so that the pause is measured on the same clock as
// the wait. A nil c means the real clock, which is also the default.
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

// PerHost gives each host its own bucket in hosts: before it is sent, a
// request also takes its cost from the bucket of its host (the URL's host,
// with its port if it has one, in lower case), first, then from the
// Throttled's limiter, if there is one. A 429 or 503 response with
// Retry-After pauses that host's bucket, and nothing else: requests to the
// other hosts go on at their own rate. So a crawler can hold every host to
// a rate of its own, and all of them to a rate in total:
//
//	hosts := ratelimit.NewKeyed[string](2, time.Second) // 2 a second per host
//	total := ratelimit.New(50, time.Second)              // 50 a second in all
//	tr := throttle.NewTransport(throttle.New[*http.Request](total), nil, throttle.PerHost(hosts))
//
// With PerHost, NewTransport takes a nil Throttled: each request then costs
// one unit of its host's bucket, and nothing more. A request that its host's
// bucket admits but the Throttled's limiter refuses has taken its units
// from the host's bucket. A nil hosts means no buckets by host.
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

// NewTransport returns a Transport that admits requests through th, at the
// cost th gives each (one unit each unless th was made with [WithCost]),
// and sends them with base; a nil base means [http.DefaultTransport]. It
// panics if th is nil, unless the requests have buckets by host
// ([PerHost]).
func NewTransport(th *Throttled[*http.Request], base http.RoundTripper, opts ...TransportOption) *Transport {
	if base == nil {
		base = http.DefaultTransport
	}
	t := &Transport{th: th, base: base}
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
	if t.clock == nil {
		t.clock = clock.New()
	}
	if t.onError == nil {
		t.onError = logPauseError
	}
	return t
}

// CanPause reports whether the Transport pauses its limiter on Retry-After:
// whether the limiter is a [Pauser] or a [ContextPauser], or the requests
// have buckets by host ([PerHost]). When it reports false, the Transport
// still acquires each request's cost, but leaves the limiter alone
// whatever the server answers.
func (t *Transport) CanPause() bool { return t.pause != nil }

// RoundTrip waits until the limiter admits req, then sends it with the base
// RoundTripper and returns its response and error unchanged, pausing the
// limiter first if the response asks clients to back off.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.wait(req); err != nil {
		// The RoundTripper contract: the body is closed even on errors.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(req)
	if err == nil && t.pause != nil && resp != nil &&
		(resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := retryAfter(resp.Header, t.clock); ok && d > 0 {
			if perr := t.pause(req, d); perr != nil {
				t.onError(req, d, perr)
			}
		}
	}
	return resp, err
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
