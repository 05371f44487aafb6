package throttle_test

import (
	"context"
	"errors"
	"io"
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
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewMock()
			clk.Set(now)
			acq := &pausingAcquirer{}
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			base := &canned{status: tt.status, header: h}
			tr := throttle.NewTransport(throttle.New[*http.Request](acq), base, throttle.WithClock(clk))
			req := httptest.NewRequest("GET", "http://example.com/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp != base.last {
				t.Error("the response is not the one the base returned")
			}
			if len(acq.pauses) != len(tt.want) {
				t.Fatalf("pauses %v, want %v", acq.pauses, tt.want)
			}
			for i := range tt.want {
				if acq.pauses[i] != tt.want[i] {
					t.Errorf("pause %v, want %v", acq.pauses[i], tt.want[i])
				}
			}
		})
	}
}

func TestTransportWithoutPause(t *testing.T) {
	acq := &plainAcquirer{}
	base := &canned{status: 429, header: http.Header{"Retry-After": {"3"}}}
	tr := throttle.NewTransport(throttle.New[*http.Request](acq), base)
	resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil))
	if err != nil || resp.StatusCode != 429 || acq.n != 1 {
		t.Errorf("got %v, %v after %d acquisitions; want the 429, nil, 1", resp, err, acq.n)
	}
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
// the limiter's clock.
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
			testServerBackOff(t, tt.status, tt.header)
		})
	}
}

func testServerBackOff(t *testing.T, status int, header func(http.Header)) {
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
		client := &http.Client{Transport: throttle.NewTransport(
			throttle.New[*http.Request](lim),
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
		c.AdvanceTo(t, 2*time.Second)
		if s := servedCount(); s != 1 {
			t.Fatalf("%d requests served by %v, want only the first", s, c.Elapsed())
		}
		advanceUntil(t, c, &done, n, time.Minute)
		// Pause leaves the bucket full at 2 s, and the limiter resumes at
		// its steady rate, with no burst: one request every 100 ms, the
		// first once one unit has drained.
		sameDurations(t, "request", got, []time.Duration{2100 * ms, 2200 * ms, 2300 * ms, 2400 * ms, 2500 * ms})
		if s := servedCount(); s != n+1 {
			t.Errorf("%d requests served, want %d", s, n+1)
		}
	})
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
