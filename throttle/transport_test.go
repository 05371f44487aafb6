package throttle_test

import (
	"context"
	"errors"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// pausingAcquirer admits everything at once and records the amounts and
// the pauses it is asked for.
type pausingAcquirer struct {
	amounts []float64
	pauses  []time.Duration
}

func (a *pausingAcquirer) Acquire(_ context.Context, amount float64) error {
	a.amounts = append(a.amounts, amount)
	return nil
}

func (a *pausingAcquirer) Pause(d time.Duration) { a.pauses = append(a.pauses, d) }

// ctxPausingAcquirer admits everything at once and records the pauses it
// is asked for, with the context each came with, as a limiter whose Pause
// makes a round trip does. It returns err from Pause, and records nothing
// then.
type ctxPausingAcquirer struct {
	pauses []time.Duration
	ctxs   []context.Context
	err    error
}

func (a *ctxPausingAcquirer) Acquire(context.Context, float64) error { return nil }

func (a *ctxPausingAcquirer) Pause(ctx context.Context, d time.Duration) error {
	if a.err != nil {
		return a.err
	}
	a.pauses = append(a.pauses, d)
	a.ctxs = append(a.ctxs, ctx)
	return nil
}

// plainAcquirer admits everything and cannot pause.
type plainAcquirer struct{ n int }

func (a *plainAcquirer) Acquire(context.Context, float64) error { a.n++; return nil }

// canned is a RoundTripper that answers every request with a copy of one
// response, and counts the requests.
type canned struct {
	status int
	header http.Header
	n      int
	last   *http.Response
}

func (c *canned) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n++
	c.last = &http.Response{
		StatusCode: c.status,
		Header:     c.header.Clone(),
		Body:       io.NopCloser(strings.NewReader("body")),
		Request:    req,
	}
	return c.last, nil
}

func TestTransportRetryAfter(t *testing.T) {
	now := time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		name   string
		status int
		header map[string]string
		want   []time.Duration // the pauses asked of the limiter
	}{
		{"429 seconds", 429, map[string]string{"Retry-After": "2"}, []time.Duration{2 * time.Second}},
		{"503 seconds", 503, map[string]string{"Retry-After": "120"}, []time.Duration{2 * time.Minute}},
		{"spaces", 429, map[string]string{"Retry-After": " 7 "}, []time.Duration{7 * time.Second}},
		{"zero", 429, map[string]string{"Retry-After": "0"}, nil},
		{"huge", 429, map[string]string{"Retry-After": "99999999999999999999999"}, []time.Duration{math.MaxInt64}},
		{"just too long", 429, map[string]string{"Retry-After": "9223372037"}, []time.Duration{math.MaxInt64}},
		{"longest", 429, map[string]string{"Retry-After": "9223372036"}, []time.Duration{9223372036 * time.Second}},
		{"negative", 429, map[string]string{"Retry-After": "-1"}, nil},
		{"fraction", 429, map[string]string{"Retry-After": "1.5"}, nil},
		{"signed", 429, map[string]string{"Retry-After": "+3"}, nil},
		{"garbage", 503, map[string]string{"Retry-After": "soon"}, nil},
		{"no header", 429, nil, nil},
		{"date against Date", 429, map[string]string{
			"Retry-After": date(90 * time.Second), "Date": date(30 * time.Second)}, []time.Duration{time.Minute}},
		{"date against clock", 503, map[string]string{"Retry-After": date(90 * time.Second)}, []time.Duration{90 * time.Second}},
		{"bad Date falls back to clock", 503, map[string]string{
			"Retry-After": date(90 * time.Second), "Date": "yesterday"}, []time.Duration{90 * time.Second}},
		{"RFC 850 date", 429, map[string]string{
			"Retry-After": now.Add(time.Hour).Format(time.RFC850)}, []time.Duration{time.Hour}},
		{"asctime date", 429, map[string]string{
			"Retry-After": now.Add(time.Hour).Format(time.ANSIC)}, []time.Duration{time.Hour}},
		{"date in the past", 429, map[string]string{"Retry-After": date(-time.Minute)}, nil},
		{"200 ignored", 200, map[string]string{"Retry-After": "5"}, nil},
		{"500 ignored", 500, map[string]string{"Retry-After": "5"}, nil},
		{"301 ignored", 301, map[string]string{"Retry-After": "5"}, nil},
	}
	// Both kinds of limiter the Transport can pause: Pause(d), and
	// Pause(ctx, d) error, which gets the request's context.
	type ctxKey struct{}
	for _, kind := range []string{"Pause(d)", "Pause(ctx, d)"} {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				clk := clock.NewMock()
				clk.Set(now)
				var acq ratelimit.Acquirer
				var pauses func() []time.Duration
				if kind == "Pause(d)" {
					a := &pausingAcquirer{}
					acq, pauses = a, func() []time.Duration { return a.pauses }
				} else {
					a := &ctxPausingAcquirer{}
					acq, pauses = a, func() []time.Duration { return a.pauses }
					defer func() {
						for _, ctx := range a.ctxs {
							if ctx.Value(ctxKey{}) != "request" {
								t.Error("Pause did not get the request's context")
							}
						}
					}()
				}
				h := http.Header{}
				for k, v := range tt.header {
					h.Set(k, v)
				}
				base := &canned{status: tt.status, header: h}
				tr := throttle.NewTransport(throttle.New[*http.Request](acq), base, throttle.WithClock(clk))
				req := httptest.NewRequest("GET", "http://example.com/", nil)
				req = req.WithContext(context.WithValue(req.Context(), ctxKey{}, "request"))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				if resp != base.last {
					t.Error("the response is not the one the base returned")
				}
				got := pauses()
				if len(got) != len(tt.want) {
					t.Fatalf("pauses %v, want %v", got, tt.want)
				}
				for i := range tt.want {
					if got[i] != tt.want[i] {
						t.Errorf("pause %v, want %v", got[i], tt.want[i])
					}
				}
			})
		}
	}
}

func TestTransportWithoutPause(t *testing.T) {
	acq := &plainAcquirer{}
	base := &canned{status: 429, header: http.Header{"Retry-After": {"3"}}}
	tr := throttle.NewTransport(throttle.New[*http.Request](acq), base)
	if tr.CanPause() {
		t.Error("CanPause() = true for a limiter without Pause")
	}
	resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil))
	if err != nil || resp.StatusCode != 429 || acq.n != 1 {
		t.Errorf("got %v, %v after %d acquisitions; want the 429, nil, 1", resp, err, acq.n)
	}
}

// acquirerOnly hides every method of a limiter but Acquire.
type acquirerOnly struct{ ratelimit.Acquirer }

func TestTransportCanPause(t *testing.T) {
	lim := ratelimit.New(1, time.Second)
	for _, tt := range []struct {
		name string
		lim  ratelimit.Acquirer
		want bool
	}{
		{"*ratelimit.Limiter", lim, true},
		{"Pause(d)", &pausingAcquirer{}, true},
		{"Pause(ctx, d) error", &ctxPausingAcquirer{}, true},
		{"no Pause", &plainAcquirer{}, false},
		{"Pause hidden", acquirerOnly{lim}, false},
	} {
		tr := throttle.NewTransport(throttle.New[*http.Request](tt.lim), &canned{})
		if got := tr.CanPause(); got != tt.want {
			t.Errorf("%s: CanPause() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestTransportPauseError checks what happens when a limiter's
// Pause(ctx, d) fails: the caller still gets the response, unchanged, and
// the error goes to the handler given with WithPauseErrorHandler, with the
// request and the pause asked for, or by default to the standard logger.
func TestTransportPauseError(t *testing.T) {
	bad := errors.New("store unreachable")
	header := http.Header{"Retry-After": {"30"}}

	t.Run("handler", func(t *testing.T) {
		base := &canned{status: 503, header: header}
		type call struct {
			req *http.Request
			d   time.Duration
			err error
		}
		var calls []call
		tr := throttle.NewTransport(throttle.New[*http.Request](&ctxPausingAcquirer{err: bad}), base,
			throttle.WithPauseErrorHandler(func(req *http.Request, d time.Duration, err error) {
				calls = append(calls, call{req, d, err})
			}))
		req := httptest.NewRequest("GET", "http://example.com/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil || resp != base.last {
			t.Errorf("RoundTrip = %v, %v; want the base's response, nil", resp, err)
		}
		if len(calls) != 1 || calls[0].req != req || calls[0].d != 30*time.Second || calls[0].err != bad {
			t.Errorf("handler called with %+v, want once with the request, 30s and the limiter's error", calls)
		}
	})

	t.Run("log", func(t *testing.T) {
		var buf strings.Builder
		out, flags := log.Writer(), log.Flags()
		log.SetOutput(&buf)
		log.SetFlags(0)
		defer func() { log.SetOutput(out); log.SetFlags(flags) }()
		base := &canned{status: 429, header: header}
		tr := throttle.NewTransport(throttle.New[*http.Request](&ctxPausingAcquirer{err: bad}), base)
		resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://user:secret@example.com/x", nil))
		if err != nil || resp != base.last {
			t.Errorf("RoundTrip = %v, %v; want the base's response, nil", resp, err)
		}
		const want = "throttle: Transport: GET http://user:xxxxx@example.com/x asked to back off for 30s, " +
			"but the limiter did not pause: store unreachable\n"
		if got := buf.String(); got != want {
			t.Errorf("logged %q, want %q", got, want)
		}
	})

	t.Run("no error", func(t *testing.T) {
		called := false
		acq := &ctxPausingAcquirer{}
		tr := throttle.NewTransport(throttle.New[*http.Request](acq), &canned{status: 429, header: header},
			throttle.WithPauseErrorHandler(func(*http.Request, time.Duration, error) { called = true }))
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
			t.Fatal(err)
		}
		if called || len(acq.pauses) != 1 {
			t.Errorf("handler called: %v, pauses %v; want not called, one pause", called, acq.pauses)
		}
	})
}

func TestTransportCost(t *testing.T) {
	acq := &pausingAcquirer{}
	th := throttle.New(acq, throttle.WithCost(func(r *http.Request) float64 {
		return float64(r.ContentLength)
	}))
	base := &canned{status: 200}
	tr := throttle.NewTransport(th, base)
	for _, body := range []string{"", "abc", "abcdefgh"} {
		if _, err := tr.RoundTrip(httptest.NewRequest("POST", "http://example.com/", strings.NewReader(body))); err != nil {
			t.Fatal(err)
		}
	}
	want := []float64{0, 3, 8}
	for i := range want {
		if acq.amounts[i] != want[i] {
			t.Errorf("request %d cost %v, want %v", i, acq.amounts[i], want[i])
		}
	}
}

// trackedBody is a request body that notes whether it was closed.
type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error { b.closed = true; return nil }

func TestTransportRefused(t *testing.T) {
	lim := ratelimit.New(1, time.Hour)
	lim.Pause(time.Hour)
	base := &canned{status: 200}
	client := &http.Client{Transport: throttle.NewTransport(throttle.New[*http.Request](lim), base)}
	for _, tt := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		// The limiter is paused for an hour: a minute's deadline fails at once.
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Minute)
		}, context.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			body := &trackedBody{Reader: strings.NewReader("payload")}
			req, err := http.NewRequestWithContext(ctx, "POST", "http://example.com/", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if resp != nil || !errors.Is(err, tt.want) {
				t.Errorf("got %v, %v; want nil, %v", resp, err, tt.want)
			}
			if !body.closed {
				t.Error("the request body was not closed")
			}
			if base.n != 0 {
				t.Errorf("%d requests sent, want none", base.n)
			}
		})
	}
}

func TestNewTransportNilPanics(t *testing.T) {
	defer func() {
		if r := recover(); r != "throttle: NewTransport: nil Throttled" {
			t.Errorf("recovered %v, want the nil Throttled panic", r)
		}
	}()
	throttle.NewTransport(nil, nil)
}

// TestTransportServer429 runs a real server that answers the first request
// with 429 or 503 and a Retry-After of 2 s, in each of its forms, and checks
// that the requests made next, from several goroutines, all wait the 2 s on
// the limiter's clock, the first sent at 2 s and the others at the
// limiter's steady rate: with a limiter that has Pause(d), and with one
// that has Pause(ctx, d) error.
//
// The server lives outside the synctest bubble, so that its goroutines,
// blocked in the network, do not keep the bubble from settling. The client
// is inside, with keep-alives off: a request in flight is not durably
// blocked, so each settling step waits for it to finish and for its
// connection goroutines to end, and the mock clock (which only the test
// moves) reads the same before and after. Requests are counted by the
// server, so the test checks what reached it, not what the client believes.
func TestTransportServer429(t *testing.T) {
	// A server clock three hours off the client's: a date is read against
	// the server's own Date header, so the skew does not matter.
	serverNow := clocktest.Start.Add(3 * time.Hour)
	tests := []struct {
		name   string
		status int
		header func(h http.Header)
	}{
		{"429 seconds", http.StatusTooManyRequests, func(h http.Header) {
			h.Set("Retry-After", "2")
		}},
		{"503 date", http.StatusServiceUnavailable, func(h http.Header) {
			h.Set("Date", serverNow.Format(http.TimeFormat))
			h.Set("Retry-After", serverNow.Add(2*time.Second).Format(http.TimeFormat))
		}},
		// Without a Date header, the date is read on the Transport's
		// clock: the mock the limiter runs on.
		{"429 date without Date", http.StatusTooManyRequests, func(h http.Header) {
			h["Date"] = nil
			h.Set("Retry-After", clocktest.Start.Add(2*time.Second).Format(http.TimeFormat))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Run("Pause(d)", func(t *testing.T) { testServerBackOff(t, tt.status, tt.header, false) })
			t.Run("Pause(ctx, d)", func(t *testing.T) { testServerBackOff(t, tt.status, tt.header, true) })
		})
	}
}

// ctxLimiter is a *ratelimit.Limiter seen through a Pause that takes a
// context and returns an error, as a limiter whose Pause makes a round trip
// has.
type ctxLimiter struct{ *ratelimit.Limiter }

func (l ctxLimiter) Pause(_ context.Context, d time.Duration) error {
	l.Limiter.Pause(d)
	return nil
}

var _ throttle.ContextPauser = ctxLimiter{}

// testServerBackOff is TestTransportServer429 for one response, with the
// limiter seen through ctxLimiter if viaCtx.
func testServerBackOff(t *testing.T, status int, header func(http.Header), viaCtx bool) {
	var mu sync.Mutex
	var served int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served++
		first := served == 1
		mu.Unlock()
		if first {
			header(w.Header())
			w.WriteHeader(status)
			io.WriteString(w, "slow down")
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	servedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return served
	}

	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		// Ten a second with a burst of ten: without the pause, every
		// request below would pass at once.
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		var acq ratelimit.Acquirer = lim
		if viaCtx {
			acq = ctxLimiter{lim}
		}
		client := &http.Client{Transport: throttle.NewTransport(
			throttle.New[*http.Request](acq),
			&http.Transport{DisableKeepAlives: true},
			throttle.WithClock(c))}
		get := func() (int, string) {
			resp, err := client.Get(srv.URL)
			if err != nil {
				t.Errorf("GET: %v", err)
				return 0, ""
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Errorf("GET: %v", err)
			}
			return resp.StatusCode, string(b)
		}

		if code, body := get(); code != status || body != "slow down" {
			t.Fatalf("first request: %d %q, want the server's %d unchanged", code, body, status)
		}
		const n = 5
		got := make([]time.Duration, n)
		var done atomic.Int64
		for i := range n {
			go func() {
				if code, body := get(); code != 200 || body != "ok" {
					t.Errorf("request %d: %d %q", i, code, body)
				}
				got[i] = c.Elapsed()
				done.Add(1)
			}()
			c.Settle() // queue them in this order
		}
		if w := lim.Waiting(); w != n {
			t.Errorf("%d requests waiting in the limiter, want %d", w, n)
		}
		c.AdvanceTo(t, 2*time.Second-ms)
		if s := servedCount(); s != 1 {
			t.Fatalf("%d requests served by %v, want only the first", s, c.Elapsed())
		}
		advanceUntil(t, c, &done, n, time.Minute)
		// The pause ends at 2 s, when the first waiting request is sent;
		// the limiter then resumes at its steady rate, with no burst: one
		// request every 100 ms.
		sameDurations(t, "request", got, []time.Duration{2000 * ms, 2100 * ms, 2200 * ms, 2300 * ms, 2400 * ms})
		if s := servedCount(); s != n+1 {
			t.Errorf("%d requests served, want %d", s, n+1)
		}
	})
}

// roundTripFunc is a RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestTransportResumesAtRetryAfter checks the schedule after a pause: one
// goroutine sends four requests in a row through a Transport on a
// ratelimit.Limiter, and the server answers the first 429 with
// Retry-After. Nothing is sent during the pause; the next request goes out
// when it ends, unless the limiter's own rate holds it back longer (the
// request that drew the 429 took its units, and a pause never lowers the
// level), and the others follow at the steady rate, with no burst.
func TestTransportResumesAtRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		name       string
		maxRate    float64
		period     time.Duration
		retryAfter string
		want       []time.Duration
	}{
		{"New(10, 1s) Retry-After 5", 10, time.Second, "5", []time.Duration{0, 5 * time.Second, 5100 * ms, 5200 * ms}},
		{"New(1, 1m) Retry-After 90", 1, time.Minute, "90", []time.Duration{0, 90 * time.Second, 150 * time.Second, 210 * time.Second}},
		// The unit the first request took drains at 60 s: a shorter pause
		// changes nothing.
		{"New(1, 1m) Retry-After 2", 1, time.Minute, "2", []time.Duration{0, time.Minute, 2 * time.Minute, 3 * time.Minute}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				var sent []time.Duration
				base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
					resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}
					if sent = append(sent, c.Elapsed()); len(sent) == 1 {
						resp.StatusCode = http.StatusTooManyRequests
						resp.Header.Set("Retry-After", tt.retryAfter)
					}
					return resp, nil
				})
				lim := ratelimit.New(tt.maxRate, tt.period, ratelimit.WithClock(c))
				tr := throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.WithClock(c))
				var done atomic.Int64
				go func() {
					for range len(tt.want) {
						resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil))
						if err != nil {
							t.Errorf("RoundTrip: %v", err)
							return
						}
						resp.Body.Close()
						done.Add(1)
					}
				}()
				advanceUntil(t, c, &done, int64(len(tt.want)), 10*time.Minute)
				sameDurations(t, "request", sent, tt.want)
			})
		})
	}
}

// idler is a RoundTripper with idle connections to close.
type idler struct {
	canned
	closed int
}

func (i *idler) CloseIdleConnections() { i.closed++ }

func TestTransportCloseIdleConnections(t *testing.T) {
	th := throttle.New[*http.Request](&plainAcquirer{})
	base := &idler{}
	(&http.Client{Transport: throttle.NewTransport(th, base)}).CloseIdleConnections()
	if base.closed != 1 {
		t.Errorf("base closed its idle connections %d times, want once", base.closed)
	}
	// A base without the method is left alone.
	throttle.NewTransport(th, &canned{}).CloseIdleConnections()
}
