package throttle_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// quotaNow is the time on the Transport's clock in the tests of this file.
var quotaNow = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// unix returns the Unix time, in seconds, d after quotaNow.
func unix(d time.Duration) string { return strconv.FormatInt(quotaNow.Add(d).Unix(), 10) }

// pausesFor sends one request through a Transport on a pausingAcquirer
// whose clock reads quotaNow+offset, with a base that answers status and
// header, and returns the pauses asked of the limiter. It fails the test if
// the response is not the one the base returned.
func pausesFor(t *testing.T, status int, header http.Header, offset time.Duration, opts ...throttle.TransportOption) []time.Duration {
	t.Helper()
	clk := clock.NewMock()
	clk.Set(quotaNow.Add(offset))
	acq := &pausingAcquirer{}
	base := &canned{status: status, header: header}
	tr := throttle.NewTransport(throttle.New[*http.Request](acq), base, append([]throttle.TransportOption{throttle.WithClock(clk)}, opts...)...)
	resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp != base.last {
		t.Error("the response is not the one the base returned")
	}
	return acq.pauses
}

// h builds a header from pairs of a name and a value; a name given twice
// makes a field of two lines.
func h(kv ...string) http.Header {
	hd := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		hd.Add(kv[i], kv[i+1])
	}
	return hd
}

// TestTransportQuotaHeaders checks, for each family of quota fields, that a
// response saying nothing remains pauses the limiter exactly until the
// reset it gives, cut to the cap, and that anything else (a count above 0,
// a malformed or ambiguous field, a reset in the past, a response from a
// cache) pauses nothing.
func TestTransportQuotaHeaders(t *testing.T) {
	const hour = time.Hour
	long := strings.Repeat(`"p";r=1;t=1, `, 400) + `"x";r=0;t=5` // 5 KB
	tests := []struct {
		name   string
		status int
		header http.Header
		offset time.Duration // of the Transport's clock from quotaNow
		want   time.Duration // the pause; 0 for none
	}{
		// The RateLimit field of the current draft.
		{"RateLimit r=0", 200, h("RateLimit", `"default";r=0;t=30`), 0, 30 * time.Second},
		{"RateLimit r=1", 200, h("RateLimit", `"default";r=1;t=30`), 0, 0},
		{"RateLimit r>0 huge", 200, h("RateLimit", `"default";r=999999999999999;t=30`), 0, 0},
		{"RateLimit largest exhausted t", 200, h("RateLimit", `"a";r=0;t=5, "b";r=0;t=50, "c";r=3;t=500`), 0, 50 * time.Second},
		{"RateLimit over two lines", 200, h("RateLimit", `"a";r=5;t=9`, "RateLimit", `"b";r=0;t=7`), 0, 7 * time.Second},
		{"RateLimit token and other parameters", 200, h("RateLimit", `default;pk=:cHsdsRa894==:;r=0;acme-x=?1;t=5;qu="requests"`), 0, 5 * time.Second},
		{"RateLimit last r wins", 200, h("RateLimit", `"d";r=5;r=0;t=3`), 0, 3 * time.Second},
		{"RateLimit spaces and tabs", 200, h("RateLimit", "  \"a\";r=1;t=1 ,\t\"b\";r=0; t=4  "), 0, 4 * time.Second},
		{"RateLimit r=0 without t", 200, h("RateLimit", `"default";r=0`), 0, 0},
		{"RateLimit r=0 t=0", 200, h("RateLimit", `"default";r=0;t=0`), 0, 0},
		{"RateLimit t years away", 200, h("RateLimit", `"default";r=0;t=999999999999999`), 0, hour},
		{"RateLimit on a 301", 301, h("RateLimit", `"problemPolicy";r=0;t=10`), 0, 10 * time.Second},
		{"RateLimit on a 429 without Retry-After", 429, h("RateLimit", `"default";r=0;t=10`), 0, 10 * time.Second},
		{"RateLimit on a 503 with a bad Retry-After", 503, h("RateLimit", `"default";r=0;t=10`, "Retry-After", "soon"), 0, 10 * time.Second},
		{"RateLimit empty", 200, h("RateLimit", ""), 0, 0},
		// Malformed: the whole field is ignored, even its exhausted items.
		{"RateLimit no r", 200, h("RateLimit", `"default";t=5`), 0, 0},
		{"RateLimit no r in one item", 200, h("RateLimit", `"a";r=0;t=5, "b";t=5`), 0, 0},
		{"RateLimit negative r", 200, h("RateLimit", `"default";r=-1;t=5`), 0, 0},
		{"RateLimit negative t", 200, h("RateLimit", `"default";r=0;t=-5`), 0, 0},
		{"RateLimit decimal r", 200, h("RateLimit", `"default";r=0.0;t=5`), 0, 0},
		{"RateLimit decimal t", 200, h("RateLimit", `"default";r=0;t=5.5`), 0, 0},
		{"RateLimit string t", 200, h("RateLimit", `"default";r=0;t="5"`), 0, 0},
		{"RateLimit boolean r", 200, h("RateLimit", `"default";r;t=5`), 0, 0},
		{"RateLimit exponent", 200, h("RateLimit", `"default";r=0;t=1e3`), 0, 0},
		{"RateLimit 16 digits", 200, h("RateLimit", `"default";r=0;t=9999999999999999`), 0, 0},
		{"RateLimit NaN", 200, h("RateLimit", `"default";r=0;t=NaN`), 0, 0},
		{"RateLimit upper-case keys", 200, h("RateLimit", `"default";R=0;T=5`), 0, 0},
		{"RateLimit trailing comma", 200, h("RateLimit", `"default";r=0;t=5,`), 0, 0},
		{"RateLimit trailing garbage", 200, h("RateLimit", `"default";r=0;t=5 x`), 0, 0},
		{"RateLimit unterminated string", 200, h("RateLimit", `"default;r=0;t=5`), 0, 0},
		{"RateLimit inner list", 200, h("RateLimit", `("a" "b");r=0;t=5`), 0, 0},
		{"RateLimit bad base64", 200, h("RateLimit", `"d";r=0;t=5;pk=:a:`), 0, 0},
		{"RateLimit space before parameter", 200, h("RateLimit", `"d" ;r=0;t=5`), 0, 0},
		{"RateLimit old syntax", 200, h("RateLimit", `limit=10, remaining=0, reset=5`), 0, 0},
		{"RateLimit 5 KB", 200, h("RateLimit", long), 0, 0},

		// The older drafts: delta seconds.
		{"RateLimit-Reset", 200, h("RateLimit-Remaining", "0", "RateLimit-Reset", "20"), 0, 20 * time.Second},
		{"RateLimit-Reset decimal", 200, h("RateLimit-Remaining", "0", "RateLimit-Reset", "1.5"), 0, 1500 * time.Millisecond},
		{"RateLimit-Remaining 3", 200, h("RateLimit-Remaining", "3", "RateLimit-Reset", "20"), 0, 0},
		{"RateLimit-Reset missing", 200, h("RateLimit-Remaining", "0"), 0, 0},
		{"RateLimit-Reset negative", 200, h("RateLimit-Remaining", "0", "RateLimit-Reset", "-5"), 0, 0},
		{"RateLimit-Reset garbage", 200, h("RateLimit-Remaining", "0", "RateLimit-Reset", "soon"), 0, 0},
		{"RateLimit-Remaining negative zero", 200, h("RateLimit-Remaining", "-0", "RateLimit-Reset", "20"), 0, 0},
		{"RateLimit-Remaining decimal zero", 200, h("RateLimit-Remaining", "0.0", "RateLimit-Reset", "20"), 0, 0},

		// X-RateLimit: Unix times, or delta seconds.
		{"X-RateLimit epoch, no Date", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", unix(90*time.Second)), 0, 90 * time.Second},
		{"X-RateLimit epoch, clock within Date's second", 200, h("X-RateLimit-Remaining", "0",
			"X-RateLimit-Reset", unix(90*time.Second), "Date", quotaNow.Format(http.TimeFormat)), 400 * time.Millisecond, 89600 * time.Millisecond},
		{"X-RateLimit epoch, server 3 h ahead", 200, h("X-RateLimit-Remaining", "0",
			"X-RateLimit-Reset", unix(3*hour+90*time.Second), "Date", quotaNow.Add(3*hour).Format(http.TimeFormat)), 0, 90 * time.Second},
		{"X-RateLimit epoch, server 2 s behind", 200, h("X-RateLimit-Remaining", "0",
			"X-RateLimit-Reset", unix(-2*time.Second+90*time.Second), "Date", quotaNow.Add(-2*time.Second).Format(http.TimeFormat)), 0, 90 * time.Second},
		{"X-RateLimit epoch, bad Date", 200, h("X-RateLimit-Remaining", "0",
			"X-RateLimit-Reset", unix(90*time.Second), "Date", "yesterday"), 0, 90 * time.Second},
		{"X-RateLimit epoch with fraction", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", unix(90*time.Second)+".250"), 0, 90250 * time.Millisecond},
		{"X-RateLimit epoch milliseconds", 200, h("X-RateLimit-Remaining", "0",
			"X-RateLimit-Reset", strconv.FormatInt(quotaNow.Add(1500*time.Millisecond).UnixMilli(), 10)), 0, 1500 * time.Millisecond},
		{"X-RateLimit delta seconds", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30"), 0, 30 * time.Second},
		{"X-RateLimit largest delta", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "999999999"), 0, hour},
		{"X-RateLimit epoch in the past", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", unix(-time.Minute)), 0, 0},
		{"X-RateLimit epoch years away", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", unix(10*365*24*hour)), 0, hour},
		{"X-RateLimit huge integer", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "99999999999999999999999999999"), 0, hour},
		{"X-RateLimit remaining 5", 200, h("X-RateLimit-Remaining", "5", "X-RateLimit-Reset", unix(90*time.Second)), 0, 0},
		{"X-RateLimit remaining huge", 200, h("X-RateLimit-Remaining", "99999999999999999999999", "X-RateLimit-Reset", "30"), 0, 0},
		{"X-RateLimit remaining twice", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30"), 0, 0},
		{"X-RateLimit reset twice", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30", "X-RateLimit-Reset", "30"), 0, 0},
		{"X-RateLimit reset with sign", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "+30"), 0, 0},
		{"X-RateLimit reset trailing dot", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30."), 0, 0},
		{"X-RateLimit reset NaN", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "NaN"), 0, 0},
		{"X-RateLimit reset 10 KB", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", strings.Repeat("9", 10<<10)), 0, hour},
		{"X-RateLimit remaining 10 KB of zeros", 200, h("X-RateLimit-Remaining", strings.Repeat("0", 10<<10), "X-RateLimit-Reset", "30"), 0, 30 * time.Second},
		{"X-RateLimit from a cache", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30", "Age", "12"), 0, 0},
		{"X-RateLimit Age 0", 200, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30", "Age", "0"), 0, 30 * time.Second},
		{"X-RateLimit on a 403", 403, h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", unix(time.Minute)), 0, time.Minute},

		// The pair of model APIs: durations.
		{"requests 6m0s", 200, h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", "6m0s"), 0, 6 * time.Minute},
		{"requests 1s", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "1s"), 0, time.Second},
		{"requests 20ms", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "20ms"), 0, 20 * time.Millisecond},
		{"requests 1m30.5s", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "1m30.5s"), 0, 90500 * time.Millisecond},
		{"requests remaining 7", 200, h("x-ratelimit-remaining-requests", "7", "x-ratelimit-reset-requests", "1s"), 0, 0},
		{"requests negative", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "-1s"), 0, 0},
		{"requests signed", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "+1s"), 0, 0},
		{"requests no unit", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "1.5"), 0, 0},
		{"requests garbage", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "soon"), 0, 0},
		{"requests too long for a Duration", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "99999999999h"), 0, hour},
		{"requests too long and malformed", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "99999999999hx"), 0, 0},
		{"requests long", 200, h("x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "2000000h"), 0, hour},
		{"tokens alone", 200, h("x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "1s"), 0, 0},

		// Together: the longest wins; Retry-After takes precedence.
		{"longest of two families", 200, h("RateLimit", `"d";r=0;t=5`, "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", unix(20*time.Second)), 0, 20 * time.Second},
		{"one family exhausted", 200, h("RateLimit", `"d";r=9;t=5`, "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", unix(20*time.Second)), 0, 20 * time.Second},
		{"Retry-After shorter", 429, h("Retry-After", "2", "RateLimit", `"d";r=0;t=50`), 0, 2 * time.Second},
		{"Retry-After longer", 503, h("Retry-After", "80", "RateLimit", `"d";r=0;t=50`), 0, 80 * time.Second},
		{"Retry-After 0", 429, h("Retry-After", "0", "RateLimit", `"d";r=0;t=50`), 0, 0},
		{"Retry-After not capped", 429, h("Retry-After", "7200", "RateLimit", `"d";r=0;t=50`), 0, 2 * hour},
		{"Retry-After on a 200 ignored", 200, h("Retry-After", "2", "RateLimit", `"d";r=0;t=50`), 0, 50 * time.Second},
		{"nothing", 200, nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pausesFor(t, tt.status, tt.header, tt.offset)
			var want []time.Duration
			if tt.want > 0 {
				want = []time.Duration{tt.want}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("pauses %v, want %v", got, want)
			}
		})
	}
}

// TestTransportMaxPause checks WithMaxPause: it caps the quota fields'
// pauses, not Retry-After's, and 0 turns the quota fields off.
func TestTransportMaxPause(t *testing.T) {
	exhausted := h("RateLimit", `"d";r=0;t=50`, "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "40")
	for _, tt := range []struct {
		name   string
		max    time.Duration
		status int
		header http.Header
		want   []time.Duration
	}{
		{"capped", 10 * time.Second, 200, exhausted, []time.Duration{10 * time.Second}},
		{"under the cap", 2 * time.Minute, 200, exhausted, []time.Duration{50 * time.Second}},
		{"off", 0, 200, exhausted, nil},
		{"off, Retry-After still read", 0, 429, h("Retry-After", "3", "RateLimit", `"d";r=0;t=50`), []time.Duration{3 * time.Second}},
		{"Retry-After above the cap", time.Second, 503, h("Retry-After", "30"), []time.Duration{30 * time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := pausesFor(t, tt.status, tt.header, 0, throttle.WithMaxPause(tt.max))
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("pauses %v, want %v", got, tt.want)
			}
		})
	}
	defer func() {
		const want = "throttle: WithMaxPause(-1s): the cap must be >= 0 (0 turns the quota fields off)"
		if r := recover(); r != want {
			t.Errorf("WithMaxPause(-1s) panicked with %v, want %q", r, want)
		}
	}()
	throttle.WithMaxPause(-time.Second)
}

// The quota fields pause a limiter with Pause(ctx, d) error too, with the
// request's context, and its errors go to the handler.
func TestTransportQuotaContextPauser(t *testing.T) {
	type ctxKey struct{}
	acq := &ctxPausingAcquirer{}
	base := &canned{status: 200, header: h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30")}
	tr := throttle.NewTransport(throttle.New[*http.Request](acq), base)
	req := httptest.NewRequest("GET", "http://example.com/", nil)
	req = req.WithContext(context.WithValue(req.Context(), ctxKey{}, "request"))
	if _, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if len(acq.pauses) != 1 || acq.pauses[0] != 30*time.Second || acq.ctxs[0].Value(ctxKey{}) != "request" {
		t.Errorf("pauses %v, want 30s with the request's context", acq.pauses)
	}

	var gotErr error
	var gotD time.Duration
	bad := &ctxPausingAcquirer{err: fmt.Errorf("store unreachable")}
	tr = throttle.NewTransport(throttle.New[*http.Request](bad), base,
		throttle.WithPauseErrorHandler(func(_ *http.Request, d time.Duration, err error) { gotD, gotErr = d, err }))
	if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
		t.Fatal(err)
	}
	if gotErr != bad.err || gotD != 30*time.Second {
		t.Errorf("handler got %v, %v; want 30s and the limiter's error", gotD, gotErr)
	}
}

// A limiter that cannot pause is left alone by the quota fields too.
func TestTransportQuotaWithoutPause(t *testing.T) {
	acq := &plainAcquirer{}
	base := &canned{status: 200, header: h("RateLimit", `"d";r=0;t=50`)}
	tr := throttle.NewTransport(throttle.New[*http.Request](acq), base)
	if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil || acq.n != 1 {
		t.Errorf("RoundTrip: %v after %d acquisitions", err, acq.n)
	}
}

// With PerHost, a quota field pauses the bucket of the host that sent it,
// and nothing else.
func TestTransportQuotaPerHost(t *testing.T) {
	clk := clock.NewMock()
	clk.Set(quotaNow)
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: req}
		if req.URL.Host == "a.example" {
			resp.Header.Set("X-RateLimit-Remaining", "0")
			resp.Header.Set("X-RateLimit-Reset", unix(30*time.Second))
		}
		return resp, nil
	})
	hosts := ratelimit.NewKeyed[string](10, time.Second, ratelimit.WithClock(clk))
	total := ratelimit.New(100, time.Second, ratelimit.WithClock(clk))
	tr := throttle.NewTransport(throttle.New[*http.Request](total), base, throttle.WithClock(clk), throttle.PerHost(hosts))
	for _, url := range []string{"http://a.example/", "http://b.example/"} {
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", url, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if hosts.HasCapacity("a.example", 1) || !hosts.HasCapacity("b.example", 1) || !total.HasCapacity(1) {
		t.Fatalf("capacity: a %v, b %v, total %v; want only a paused",
			hosts.HasCapacity("a.example", 1), hosts.HasCapacity("b.example", 1), total.HasCapacity(1))
	}
	clk.Add(30*time.Second - time.Nanosecond)
	if hosts.HasCapacity("a.example", 1) {
		t.Fatal("a.example admits before its reset")
	}
	clk.Add(time.Nanosecond)
	if !hosts.HasCapacity("a.example", 1) {
		t.Fatal("a.example does not admit at its reset")
	}
}

// policySetter admits everything and records the rates it is set to,
// after checking that a Limiter takes them: ratelimit.New panics on the
// rates SetRate refuses.
type policySetter struct {
	pausingAcquirer
	rates   []string        // each as maxRate/period
	periods []time.Duration // and each period
}

func (s *policySetter) SetRate(maxRate float64, period time.Duration) {
	ratelimit.New(maxRate, period)
	s.rates = append(s.rates, fmt.Sprintf("%v/%v", maxRate, period))
	s.periods = append(s.periods, period)
}

// TestTransportAdoptPolicy checks which RateLimit-Policy fields set which
// rate, under the cap AdoptPolicy(1000, time.Second).
func TestTransportAdoptPolicy(t *testing.T) {
	for _, tt := range []struct {
		name   string
		header http.Header
		want   string // the rate set, or "" for none
	}{
		{"one", h("RateLimit-Policy", `"default";q=50;w=1`), "50/1s"},
		{"per minute", h("RateLimit-Policy", `"default";q=100;w=60`), "100/1m0s"},
		{"token name", h("RateLimit-Policy", `default;q=100;w=60`), ""},
		{"two: smallest quota, lowest rate", h("RateLimit-Policy", `"burst";q=100;w=60,"hourly";q=1000;w=3600`), "100/6m0s"},
		{"two lines", h("RateLimit-Policy", `"burst";q=100;w=60`, "RateLimit-Policy", `"hourly";q=1000;w=3600`), "100/6m0s"},
		{"lowest rate has the smallest quota", h("RateLimit-Policy", `"a";q=10;w=60,"b";q=100;w=1`), "10/1m0s"},
		{"above the cap's rate", h("RateLimit-Policy", `"default";q=5000;w=1`), "1000/1s"},
		{"above the cap's burst", h("RateLimit-Policy", `"default";q=999999999999999;w=86400`), "1000/1s"},
		{"huge window", h("RateLimit-Policy", `"default";q=1;w=31622400`), "1/8784h0m0s"},
		{"window over a year and a day", h("RateLimit-Policy", `"default";q=1;w=31622401`), ""},
		{"requests", h("RateLimit-Policy", `"default";q=50;w=1;qu="requests"`), "50/1s"},
		{"bytes ignored", h("RateLimit-Policy", `"bytes";q=65535;qu="content-bytes";w=10`), ""},
		{"bytes beside requests", h("RateLimit-Policy", `"bytes";q=65535;qu="content-bytes";w=10, "r";q=20;w=1`), "20/1s"},
		{"q=0 ignored", h("RateLimit-Policy", `"default";q=0;w=1`), ""},
		{"no window", h("RateLimit-Policy", `"default";q=50`), ""},
		{"partition key", h("RateLimit-Policy", `"peruser";q=100;w=60;pk=:cHsdsRa894==:`), "100/1m0s"},
		{"no q", h("RateLimit-Policy", `"default";w=1`), ""},
		{"w=0", h("RateLimit-Policy", `"default";q=50;w=0`), ""},
		{"negative q", h("RateLimit-Policy", `"default";q=-50;w=1`), ""},
		{"decimal w", h("RateLimit-Policy", `"default";q=50;w=1.5`), ""},
		{"qu a token", h("RateLimit-Policy", `"default";q=50;w=1;qu=requests`), ""},
		{"one malformed item spoils the field", h("RateLimit-Policy", `"a";q=50;w=1, "b";q=x;w=1`), ""},
		{"garbage", h("RateLimit-Policy", `50 per second`), ""},
		{"empty", h("RateLimit-Policy", ``), ""},
		{"5 KB", h("RateLimit-Policy", strings.Repeat(`"p";q=100;w=1, `, 400)+`"x";q=5;w=1`), ""},
		{"none", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lim := &policySetter{}
			base := &canned{status: 200, header: tt.header}
			tr := throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.AdoptPolicy(1000, time.Second))
			for range 3 {
				if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
					t.Fatal(err)
				}
			}
			// The same field three times: SetRate once.
			var want []string
			if tt.want != "" {
				want = []string{tt.want}
			}
			if fmt.Sprint(lim.rates) != fmt.Sprint(want) {
				t.Errorf("rates set %v, want %v", lim.rates, want)
			}
		})
	}
}

// The Transport sets the rate again when the policy changes, and only
// then; a malformed field in between changes nothing.
func TestTransportAdoptPolicyChanges(t *testing.T) {
	lim := &policySetter{}
	base := &canned{status: 200}
	tr := throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.AdoptPolicy(1000, time.Second))
	for _, p := range []string{`"a";q=50;w=1`, `"a";q=50;w=1`, `"a";q=20;w=1`, `bad`, ``, `"a";q=20;w=1`, `"a";q=50;w=1`} {
		base.header = h("RateLimit-Policy", p)
		if p == "" {
			base.header = nil
		}
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if want := "[50/1s 20/1s 20/1s 50/1s]"; fmt.Sprint(lim.rates) != want {
		t.Errorf("rates set %v, want %v", lim.rates, want)
	}
}

// blockingSetter admits everything and records the rates it is set to;
// its first SetRate, once it has recorded its rate, waits until release is
// closed.
type blockingSetter struct {
	mu      sync.Mutex
	rates   []string
	entered chan struct{} // closed when the first SetRate has recorded
	release chan struct{}
}

func (s *blockingSetter) Acquire(context.Context, float64) error { return nil }

func (s *blockingSetter) SetRate(maxRate float64, period time.Duration) {
	s.mu.Lock()
	s.rates = append(s.rates, fmt.Sprintf("%v/%v", maxRate, period))
	first := len(s.rates) == 1
	s.mu.Unlock()
	if first {
		close(s.entered)
		<-s.release
	}
}

// TestTransportAdoptPolicyConcurrent checks what the lock of AdoptPolicy
// is for. Two responses with different policies come at once: x's SetRate
// is under way when y's response comes. Whichever order they end in, the
// limiter must be left at the policy the Transport remembers, so that when
// the server says x again the limiter is set to x. Without the lock, y
// would set its rate and remember it while x's SetRate is under way, then
// x would remember x over it: the limiter at y, the Transport believing it
// at x, and a later x changing nothing.
func TestTransportAdoptPolicyConcurrent(t *testing.T) {
	lim := &blockingSetter{entered: make(chan struct{}), release: make(chan struct{})}
	policies := map[string]string{"x.example": `"x";q=10;w=1`, "y.example": `"y";q=20;w=1`}
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: h("RateLimit-Policy", policies[req.URL.Host]), Body: http.NoBody, Request: req}, nil
	})
	tr := throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.AdoptPolicy(1000, time.Second))
	get := func(host string) {
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://"+host+"/", nil)); err != nil {
			t.Error(err)
		}
	}
	xDone, yDone := make(chan struct{}), make(chan struct{})
	go func() { get("x.example"); close(xDone) }()
	<-lim.entered // x's SetRate(10, 1s) is under way
	go func() { get("y.example"); close(yDone) }()
	// y either waits for x's adoption to end, or ends first.
	for !closed(yDone) && !waitsInAdopt() {
		runtime.Gosched()
	}
	close(lim.release)
	<-xDone
	<-yDone
	get("x.example")
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if last := lim.rates[len(lim.rates)-1]; last != "10/1s" {
		t.Errorf("rates set %v: the limiter is left at %s, but the server's policy is x, 10/1s", lim.rates, last)
	}
}

// closed reports whether ch is closed.
func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitsInAdopt reports whether a goroutine waits for a lock in the
// Transport's adoption of a policy.
func waitsInAdopt() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "throttle.(*policyAdopter).adopt") && strings.Contains(g, "sync.(*Mutex).Lock") {
			return true
		}
	}
	return false
}

// AdoptPolicy on drip's own limiters: SetRate takes, and the Window then
// admits exactly the quota in its window.
func TestTransportAdoptPolicyLimiters(t *testing.T) {
	clk := clock.NewMock()
	base := &canned{status: 200, header: h("RateLimit-Policy", `"default";q=3;w=10`)}
	lim := ratelimit.New(100, time.Second, ratelimit.WithClock(clk))
	win := ratelimit.NewWindow(100, time.Second, ratelimit.WithClock(clk))
	for _, l := range []interface {
		ratelimit.Acquirer
		MaxRate() float64
		Period() time.Duration
		TryAcquire(float64) bool
	}{lim, win} {
		tr := throttle.NewTransport(throttle.New[*http.Request](l), base, throttle.AdoptPolicy(100, time.Second))
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
			t.Fatal(err)
		}
		if l.MaxRate() != 3 || l.Period() != 10*time.Second {
			t.Errorf("%T: rate %v per %v, want 3 per 10s", l, l.MaxRate(), l.Period())
		}
	}
	// The request took one unit: two more fit in the window, then none
	// until 10 s after the first.
	admitted := 0
	for range 3 {
		if win.TryAcquire(1) {
			admitted++
		}
	}
	if admitted != 2 {
		t.Errorf("the window admits %d more after the request, want 2: 3 in 10 s", admitted)
	}
	clk.Add(10 * time.Second)
	if !win.TryAcquire(1) {
		t.Error("the window does not admit again after 10 s")
	}
}

func TestAdoptPolicyPanics(t *testing.T) {
	lim := ratelimit.New(1, time.Second)
	hosts := ratelimit.NewKeyed[string](1, time.Second)
	for _, tt := range []struct {
		name string
		f    func()
		want string
	}{
		{"PerHost", func() {
			throttle.NewTransport(throttle.New[*http.Request](lim), nil, throttle.AdoptPolicy(10, time.Second), throttle.PerHost(hosts))
		}, "throttle: NewTransport: AdoptPolicy with PerHost: one host's policy would set the rate of every host"},
		{"no SetRate", func() {
			throttle.NewTransport(throttle.New[*http.Request](&plainAcquirer{}), nil, throttle.AdoptPolicy(10, time.Second))
		}, "throttle: NewTransport: AdoptPolicy: the limiter, a *throttle_test.plainAcquirer, has no SetRate(float64, time.Duration)"},
		{"zero rate", func() { throttle.AdoptPolicy(0, time.Second) }, "throttle: AdoptPolicy: maxRate 0 must be a finite number > 0"},
		{"NaN rate", func() { throttle.AdoptPolicy(math.NaN(), time.Second) }, "throttle: AdoptPolicy: maxRate NaN must be a finite number > 0"},
		{"infinite rate", func() { throttle.AdoptPolicy(math.Inf(1), time.Second) }, "throttle: AdoptPolicy: maxRate +Inf must be a finite number > 0"},
		{"zero period", func() { throttle.AdoptPolicy(1, 0) }, "throttle: AdoptPolicy: period 0s must be > 0 and at most 8784h0m0s"},
		{"long period", func() { throttle.AdoptPolicy(1, 367*24*time.Hour) }, "throttle: AdoptPolicy: period 8808h0m0s must be > 0 and at most 8784h0m0s"},
		{"too fast", func() { throttle.AdoptPolicy(2e9, time.Second) }, "throttle: AdoptPolicy: maxRate 2e+09 per 1s is more than one a nanosecond"},
		{"too slow", func() { throttle.AdoptPolicy(1e-300, time.Second) }, "throttle: AdoptPolicy(1e-300, 1s): ratelimit: New: maxRate 1e-300 per 1s: " +
			"a unit would take longer than any time the limiter can count"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != tt.want {
					t.Errorf("panicked with %v, want %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
}

// FuzzTransportHeaders sends any value in each quota field, and in
// RateLimit-Policy, and checks that nothing panics, that a pause is never
// longer than the cap, and that the RateLimit field pauses exactly as a
// strict RFC 9651 parser (parseList, of sfv_test.go) reads it.
func FuzzTransportHeaders(f *testing.F) {
	for _, s := range []string{
		`"default";r=0;t=30`, `"a";r=0;t=5, "b";r=0;t=50`, `"d";r=0;t=5;pk=:cHsdsRa894==:`,
		`"d";r=0;t=5;pk=:a:`, `"d";r=0;t=5;pk=:YQ=:`, `"d";r=0;t=5;pk=:YQ:`, `%"f%c3%bc";r=0;t=3`,
		`%"f%c3";r=0;t=3`, `@1659578233;r=0;t=3`, `?1;r=0;t=3`, `1.5;r=0;t=3`, `("a");r=0;t=3`,
		`"default";q=50;w=1`, `"a";q=10;w=1,"b";q=100;w=3600`, `"a";q=7;w=3, "b";q=5;w=60;qu="requests"`, "0", "30", "1470173023.123", "6m0s", "", "-1", "99999999999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if strings.ContainsAny(v, "\r\n") {
			return // not a field value
		}
		const maxPause = 10 * time.Minute
		for _, hd := range []http.Header{
			h("RateLimit", v),
			h("RateLimit-Remaining", "0", "RateLimit-Reset", v),
			h("RateLimit-Remaining", v, "RateLimit-Reset", "30"),
			h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", v, "Date", quotaNow.Format(http.TimeFormat)),
			h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", v),
			h("RateLimit-Policy", v),
		} {
			lim := &policySetter{}
			tr := throttle.NewTransport(throttle.New[*http.Request](lim), &canned{status: 200, header: hd},
				throttle.WithMaxPause(maxPause), throttle.AdoptPolicy(1e6, time.Second))
			if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
				t.Fatal(err)
			}
			for _, d := range lim.pauses {
				if d <= 0 || d > maxPause {
					t.Fatalf("%v: pause %v", hd, d)
				}
			}
		}

		lim := &policySetter{}
		tr := throttle.NewTransport(throttle.New[*http.Request](lim), &canned{status: 200, header: h("RateLimit", v)}, throttle.WithMaxPause(maxPause))
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
			t.Fatal(err)
		}
		var want []time.Duration
		if d := strictRateLimitPause(v); d > 0 {
			want = []time.Duration{min(d, maxPause)}
		}
		if fmt.Sprint(lim.pauses) != fmt.Sprint(want) {
			t.Fatalf("RateLimit: %q paused %v, want %v", v, lim.pauses, want)
		}

		lim = &policySetter{}
		tr = throttle.NewTransport(throttle.New[*http.Request](lim), &canned{status: 200, header: h("RateLimit-Policy", v)},
			throttle.AdoptPolicy(1e6, time.Second))
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
			t.Fatal(err)
		}
		q, period, ok := strictPolicy(v, 1e6)
		switch {
		case !ok && len(lim.rates) != 0:
			t.Fatalf("RateLimit-Policy: %q set %v, want nothing", v, lim.rates)
		case ok && len(lim.rates) != 1:
			t.Fatalf("RateLimit-Policy: %q set %v, want %v per %vs", v, lim.rates, q, period)
		case ok && (!strings.HasPrefix(lim.rates[0], fmt.Sprint(q)+"/") ||
			math.Abs(lim.periods[0].Seconds()-period) > 1e-9*period+1e-9):
			t.Fatalf("RateLimit-Policy: %q set %v, want %v per %vs", v, lim.rates, q, period)
		}
	})
}

// strictRateLimitPause is what the RateLimit field v asks for, read with
// parseList: the largest t of the items whose r is 0, if the field is a
// List of Items of at most 4 KB with an Integer r >= 0 and, if any, an
// Integer t >= 0 each.
func strictRateLimitPause(v string) time.Duration {
	items, err := parseList(v)
	if err != nil || len(v) > 4096 {
		return 0
	}
	var d time.Duration
	for _, it := range items {
		if _, inner := it.Value.(sfInner); inner {
			return 0
		}
		r, ok := it.param("r")
		if n, isInt := r.(int64); !ok || !isInt || n < 0 {
			return 0
		}
		t, hasT := it.param("t")
		n, isInt := t.(int64)
		if hasT && (!isInt || n < 0) {
			return 0
		}
		if hasT && r.(int64) == 0 {
			d = max(d, time.Duration(min(n, math.MaxInt64/int64(time.Second)))*time.Second)
		}
	}
	return d
}

// strictPolicy is the rate that the RateLimit-Policy field v sets under a
// cap of maxRate a second, read with parseList: q units per period
// seconds, or ok false if it sets none. The field must be a List of at
// most 4 KB of Items, each a String with an Integer q >= 0 and, if any, an
// Integer w > 0 and a String qu. Of the policies with q >= 1, w <= 366
// days and qu absent or "requests", with the cap among them, the rate has
// the smallest quota and the lowest rate.
func strictPolicy(v string, maxRate float64) (q, period float64, ok bool) {
	items, err := parseList(v)
	if err != nil || len(v) > 4096 {
		return 0, 0, false
	}
	q, rate := maxRate, maxRate
	for _, it := range items {
		if _, isString := it.Value.(string); !isString {
			return 0, 0, false
		}
		qv, _ := it.param("q")
		n, isInt := qv.(int64)
		if !isInt || n < 0 {
			return 0, 0, false
		}
		wv, hasW := it.param("w")
		w, isInt := wv.(int64)
		if hasW && (!isInt || w <= 0) {
			return 0, 0, false
		}
		qu, hasQu := it.param("qu")
		if _, isString := qu.(string); hasQu && !isString {
			return 0, 0, false
		}
		if n >= 1 && hasW && w <= 366*24*3600 && (!hasQu || qu == "requests") {
			ok = true
			q = min(q, float64(n))
			rate = min(rate, float64(n)/float64(w))
		}
	}
	return q, q / rate, ok
}

// benchLimiter admits everything and ignores pauses and rates, at no cost.
type benchLimiter struct{}

func (benchLimiter) Acquire(context.Context, float64) error { return nil }
func (benchLimiter) Pause(time.Duration)                    {}
func (benchLimiter) SetRate(float64, time.Duration)         {}

// BenchmarkTransportHeaders measures what reading the quota fields adds to
// a RoundTrip: "off" is the Transport with WithMaxPause(0), which reads
// Retry-After on 429 and 503 alone, as it did before; the others read the
// responses of a server that sends no quota field, a RateLimit field, or
// GitHub's X-RateLimit fields, with quota left or none. The base returns
// the same response each time, and the limiter admits at no cost, so the
// differences are the reading.
func BenchmarkTransportHeaders(b *testing.B) {
	common := func(kv ...string) http.Header {
		return h(append([]string{"Content-Type", "application/json", "Content-Length", "123",
			"Date", quotaNow.Format(http.TimeFormat), "Server", "example", "Vary", "Accept-Encoding"}, kv...)...)
	}
	github := func(remaining string) http.Header {
		return common("X-RateLimit-Limit", "5000", "X-RateLimit-Remaining", remaining, "X-RateLimit-Used", "1",
			"X-RateLimit-Reset", unix(30*time.Minute), "X-RateLimit-Resource", "core")
	}
	for _, bb := range []struct {
		name   string
		header http.Header
		opts   []throttle.TransportOption
	}{
		{"off", common("RateLimit", `"default";r=42;t=35`), []throttle.TransportOption{throttle.WithMaxPause(0)}},
		{"none present", common(), nil},
		{"RateLimit", common("RateLimit-Policy", `"default";q=100;w=60`, "RateLimit", `"default";r=42;t=35`), nil},
		{"RateLimit two policies", common("RateLimit", `"burst";r=42;t=35, "daily";r=4000;t=80000`), nil},
		{"RateLimit exhausted", common("RateLimit", `"default";r=0;t=35`), nil},
		{"X-RateLimit", github("4999"), nil},
		{"X-RateLimit exhausted", github("0"), nil},
		{"requests exhausted", common("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", "6m0s"), nil},
		{"AdoptPolicy same policy", common("RateLimit-Policy", `"default";q=100;w=60`, "RateLimit", `"default";r=42;t=35`),
			[]throttle.TransportOption{throttle.AdoptPolicy(1000, time.Second)}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			clk := clock.NewMock()
			clk.Set(quotaNow)
			resp := &http.Response{StatusCode: 200, Header: bb.header, Body: http.NoBody}
			base := roundTripFunc(func(*http.Request) (*http.Response, error) { return resp, nil })
			tr := throttle.NewTransport(throttle.New[*http.Request](benchLimiter{}), base,
				append([]throttle.TransportOption{throttle.WithClock(clk)}, bb.opts...)...)
			req := httptest.NewRequest("GET", "http://example.com/", nil)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tr.RoundTrip(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// Responses that bring a policy other than the last, each time: each
	// is parsed and adopted (the limiter's SetRate costs nothing here).
	b.Run("AdoptPolicy changing policy", func(b *testing.B) {
		var resps [2]*http.Response
		for i, p := range []string{`"burst";q=100;w=60,"hourly";q=1000;w=3600`, `"default";q=50;w=1`} {
			resps[i] = &http.Response{StatusCode: 200, Header: common("RateLimit-Policy", p), Body: http.NoBody}
		}
		n := 0
		base := roundTripFunc(func(*http.Request) (*http.Response, error) { n++; return resps[n%2], nil })
		tr := throttle.NewTransport(throttle.New[*http.Request](benchLimiter{}), base, throttle.AdoptPolicy(1000, time.Second))
		req := httptest.NewRequest("GET", "http://example.com/", nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tr.RoundTrip(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Responses that repeat the policy adopted, from goroutines on every
	// core: the comparison they cost is lock-free.
	b.Run("AdoptPolicy same policy parallel", func(b *testing.B) {
		resp := &http.Response{StatusCode: 200, Header: common("RateLimit-Policy", `"default";q=100;w=60`), Body: http.NoBody}
		base := roundTripFunc(func(*http.Request) (*http.Response, error) { return resp, nil })
		tr := throttle.NewTransport(throttle.New[*http.Request](benchLimiter{}), base, throttle.AdoptPolicy(1000, time.Second))
		req := httptest.NewRequest("GET", "http://example.com/", nil)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := tr.RoundTrip(req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
