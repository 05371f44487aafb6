package throttle

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/benbjohnson/clock"
)

// A Transport is an [http.RoundTripper] that acquires each request's cost
// from a [Throttled] before sending it, and that makes every caller of the
// limiter back off together when a server says it is overloaded.
//
// On a 429 (Too Many Requests) or 503 (Service Unavailable) response with a
// valid Retry-After header, the Transport pauses the limiter for that long,
// if the limiter has a Pause(time.Duration) method, as [ratelimit.Limiter]
// does: the requests already waiting, and those that come later from any
// goroutine, are admitted no sooner than the server asked. A limiter
// without Pause is left alone. Retry-After is read as delay-seconds
// ("120") or as an HTTP date; a date is measured from the response's Date
// header when it has one, since both then come from the server's clock and
// any skew between the server's clock and ours cancels out, and otherwise
// from the time now on the Transport's clock (see [WithClock]).
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
	th     *Throttled[*http.Request]
	base   http.RoundTripper
	pauser pauser // nil if th's limiter cannot pause
	clock  clock.Clock
}

// pauser is the part of [ratelimit.Limiter] that makes everyone wait.
type pauser interface {
	Pause(d time.Duration)
}

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

// NewTransport returns a Transport that admits requests through th, at the
// cost th gives each (one unit each unless th was made with [WithCost]),
// and sends them with base; a nil base means [http.DefaultTransport]. It
// panics if th is nil.
func NewTransport(th *Throttled[*http.Request], base http.RoundTripper, opts ...TransportOption) *Transport {
	if th == nil {
		panic("throttle: NewTransport: nil Throttled")
	}
	if base == nil {
		base = http.DefaultTransport
	}
	t := &Transport{th: th, base: base}
	t.pauser, _ = th.lim.(pauser)
	for _, opt := range opts {
		if opt != nil {
			opt(t)
		}
	}
	if t.clock == nil {
		t.clock = clock.New()
	}
	return t
}

// RoundTrip waits until the limiter admits req, then sends it with the base
// RoundTripper and returns its response and error unchanged, pausing the
// limiter first if the response asks clients to back off.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.th.Wait(req.Context(), req); err != nil {
		// The RoundTripper contract: the body is closed even on errors.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(req)
	if err == nil && t.pauser != nil && resp != nil &&
		(resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := retryAfter(resp.Header, t.clock); ok && d > 0 {
			t.pauser.Pause(d)
		}
	}
	return resp, err
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
