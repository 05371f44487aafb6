package throttle_test

// Adversarial tests of the Transport's reading of quota headers: what a
// malicious or broken server can make it do. TestHTTPAttack* tests are
// attacks that the code withstands; the other tests here failed on the
// first version of the Transport (each says how) and pin the fix.

import (
	"fmt"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// TestTransportResetRequestsTooLongSaturates: an
// X-RateLimit-Reset-Requests too long for a time.Duration (292 years and
// more) pauses for the cap, as a reset years away does in every other
// quota field. The first version read it with time.ParseDuration alone,
// which refuses it as it refuses a malformed value: a response saying that
// no request remains, for centuries, paused nothing, and the next request
// went straight into a 429. A malformed duration, however long, still
// pauses nothing.
func TestTransportResetRequestsTooLongSaturates(t *testing.T) {
	for _, reset := range []string{
		"2562048h", "100000000000s", "99999999999999h", "99999999999999999999999999999.5m",
		"9223372036854775808ns", "2562047h47m16.854775808s", // MaxInt64 ns + 1
		"2000000h2000000h",                                         // each fits, not their sum
		"9999999999999999999\u00b5s", "9999999999999999999\u03bcs", // micro sign, Greek mu
	} {
		got := pausesFor(t, 200, h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", reset), 0)
		if len(got) != 1 || got[0] != time.Hour {
			t.Errorf("X-RateLimit-Reset-Requests %q with none remaining: pauses %v, want [1h] (the cap)", reset, got)
		}
	}
	for _, reset := range []string{
		"99999999999999999999", "99999999999999999999x", "99999999999999999999H", "99999999999999999999 h",
		"99999999999999999999hours", "99999999999999999999h5", "99999999999999999999h.", ".h99999999999999999999h",
		"-99999999999999999999h", "+99999999999999999999h", "99999999999999999999h-1s", "1e99h",
	} {
		if got := pausesFor(t, 200, h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", reset), 0); len(got) != 0 {
			t.Errorf("X-RateLimit-Reset-Requests %q (malformed) with none remaining: pauses %v, want none", reset, got)
		}
	}
}

// TestTransportResetBeyondUint64Saturates: a reset in X-RateLimit-Reset or
// RateLimit-Reset has its whole part saturated at 2^62, so that a reset
// any number of years away pauses for the cap. The first version checked
// the saturation before each digit but computed whole*10 unchecked, which
// from 1.8447e18 on overflowed uint64 and wrapped around: a reset of 2^64
// seconds became 0 and paused nothing, 2^64+1 paused a second, 2^64+1000
// a thousand seconds. Now every reset from 2^45 (as Unix milliseconds, a
// thousand years away) to 2^80 pauses for the cap, with a Date or without,
// and so does one of 20 digits.
func TestTransportResetBeyondUint64Saturates(t *testing.T) {
	resets := []string{"18446744073709551616", "18446744073709551617", "18446744073709552616", "20000000000000000000",
		"18446744073709551616.5", "4611686018427387904", "4611686018427387905", "99999999999999999999"}
	// Around 2^64, where whole*10 wrapped, and powers of 2 below and above.
	for _, k := range []uint{45, 50, 55, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 70, 75, 80} {
		for _, d := range []int64{-1, 0, 1, 1000} {
			resets = append(resets, new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), k), big.NewInt(d)).String())
		}
	}
	for _, field := range []string{"X-RateLimit", "RateLimit"} {
		for _, date := range []string{"", "Thu, 01 Jan 1970 00:00:00 GMT"} {
			for _, reset := range resets {
				hd := h(field+"-Remaining", "0", field+"-Reset", reset)
				if date != "" {
					hd.Set("Date", date)
				}
				got := pausesFor(t, 200, hd, 0)
				if len(got) != 1 || got[0] != time.Hour {
					t.Errorf("%s-Reset %s (centuries away), Date %q, none remaining: pauses %v, want [1h] (the cap)", field, reset, date, got)
				}
			}
		}
	}
}

// TestAdoptPolicyNeverAboveLowestRate: AdoptPolicy promises a rate "held
// to at most maxRate units per period", the lowest of the cap's and the
// policies'. When the smallest quota is below the lowest rate's, the
// period is scaled down to it. The first version rounded that period to
// the nearest nanosecond, in float64, and chose the lowest rate by
// comparing float64 quotients, and each could set a rate above the cap or
// a policy: with AdoptPolicy(3, 2s) and a policy of 2 a second, 2 per
// 1.333333333 s, faster than the cap's 3 per 2 s by 2.5e-10 of it; with
// AdoptPolicy(1, 2ns) and a policy of 800,000,001 per 2 s, 1 per 2 ns,
// 25% faster than the policy. Rounding up in float64 would not be enough:
// at quotas near 10^15 and periods of months, the product is off by
// nanoseconds either way, and the comparison of two near rates can pick
// the faster. Now the rates are compared exactly and the period is
// rounded up exactly, so the rate set is never above any of them.
func TestAdoptPolicyNeverAboveLowestRate(t *testing.T) {
	for _, tt := range []struct {
		capRate   float64
		capPeriod time.Duration
		policies  [][2]int64 // the quota and window, in seconds, of each
	}{
		{3, 2 * time.Second, [][2]int64{{2, 1}}},
		{1000, time.Second, [][2]int64{{2, 1}, {3, 2}}},
		{1, 2 * time.Nanosecond, [][2]int64{{800000001, 2}}},
		{7.25, 4 * time.Second, [][2]int64{{2, 1}}},
		// The product in float64, rounded up, is 2 ns short; with a
		// whole cap, and with a fractional one.
		{277365077928590, 2842*time.Hour + 41*time.Minute + 1090691145*time.Nanosecond, [][2]int64{{605163701392593, 31416308}}},
		{643446821825782.5, 25870037943419028, [][2]int64{{468170155611164, 1}}},
		// The second policy is the lower rate, but not in float64; its
		// period is 2 ns longer than the first's.
		{1e15, 1e15, [][2]int64{{894429200929122, 17368225}, {901498591644497, 17505500}}},
	} {
		var items []string
		burst := new(big.Rat).SetFloat64(tt.capRate)
		bounds := []*big.Rat{new(big.Rat).Quo(new(big.Rat).SetFloat64(tt.capRate), new(big.Rat).SetInt64(int64(tt.capPeriod)))}
		for i, p := range tt.policies {
			items = append(items, fmt.Sprintf(`"p%d";q=%d;w=%d`, i, p[0], p[1]))
			if q := big.NewRat(p[0], 1); q.Cmp(burst) < 0 {
				burst = q
			}
			bounds = append(bounds, big.NewRat(p[0], p[1]*int64(time.Second)))
		}
		policy := strings.Join(items, ", ")
		lim := &policySetter{}
		base := &canned{status: 200, header: h("RateLimit-Policy", policy)}
		tr := throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.AdoptPolicy(tt.capRate, tt.capPeriod))
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
			t.Fatal(err)
		}
		if len(lim.periods) != 1 {
			t.Fatalf("%s: rates set %v, want one", policy, lim.rates)
		}
		q, _ := strconv.ParseFloat(strings.Split(lim.rates[0], "/")[0], 64)
		if new(big.Rat).SetFloat64(q).Cmp(burst) != 0 {
			t.Errorf("AdoptPolicy(%v, %v), RateLimit-Policy %s: SetRate(%s), want a burst of %v", tt.capRate, tt.capPeriod, policy, lim.rates[0], burst)
		}
		set := new(big.Rat).Quo(new(big.Rat).SetFloat64(q), new(big.Rat).SetInt64(int64(lim.periods[0])))
		for _, b := range bounds {
			if set.Cmp(b) > 0 {
				t.Errorf("AdoptPolicy(%v, %v), RateLimit-Policy %s: SetRate(%v, %dns), faster than %s units a nanosecond",
					tt.capRate, tt.capPeriod, policy, q, lim.periods[0], b.RatString())
			}
		}
	}
}

// TestHTTPAttackTransportHostileQuotaFields sends what a hostile or broken
// server might: resets that overflow every type in the arithmetic (seconds,
// Unix seconds, Unix milliseconds, durations, Integers of 15 digits), Date
// headers decades off, contradictory and repeated fields, and counts that
// only look like 0. No pause may exceed the cap (the default hour, and a
// cap of 5 s), nothing may pause when no field says that nothing remains,
// and nothing may panic.
func TestHTTPAttackTransportHostileQuotaFields(t *testing.T) {
	past := "Mon, 02 Jan 2006 15:04:05 GMT"
	future := "Fri, 31 Dec 9999 23:59:59 GMT"
	exhausted := []http.Header{
		h("RateLimit", `"a";r=0;t=999999999999999`),
		h("RateLimit", `"a";r=5;t=1, "b";r=0;t=999999999999999`),
		h("RateLimit-Remaining", "0", "RateLimit-Reset", "999999999"),
		h("RateLimit-Remaining", "000", "RateLimit-Reset", "999999999999.999999999999"),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "4611686018427387904"),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "9223372036854775807.9"),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "253402300799", "Date", past),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "253402300799999", "Date", past),
		h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", "2562047h47m16.854775807s"),
		h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", "9223372036854775807ns"),
		h("RateLimit", `"a";r=0;t=999999999999999`, "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "99999999999999999999",
			"X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", "1000000h"),
	}
	notExhausted := []http.Header{
		h("RateLimit", `"a";r=1;t=999999`),
		h("RateLimit", `"a";r=0;t=5;r=3`), // the last r counts (RFC 9651)
		h("RateLimit", `"a";r=0`),
		h("RateLimit", `"a";r=0;t=5,`),
		h("RateLimit", `"a";r=0;t=-5`),
		h("RateLimit", `"a";r=0;t=5.0`),
		h("RateLimit", `"a";r=0;t=1000000000000000`),
		h("RateLimit", `"a";r=0;t=5`+strings.Repeat(`, "x";r=1;t=1`, 400)),
		h("RateLimit", `("a";r=0;t=5)`),
		h("RateLimit", `"a";r=0;t=5`, "Age", "1"),
		h("X-RateLimit-Remaining", "1", "X-RateLimit-Reset", "999999999"),
		h("X-RateLimit-Remaining", "0.0", "X-RateLimit-Reset", "60"),
		h("X-RateLimit-Remaining", "-0", "X-RateLimit-Reset", "60"),
		h("X-RateLimit-Remaining", "0, 5", "X-RateLimit-Reset", "60"),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "60"),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "60", "X-RateLimit-Reset", "60"),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1e3"),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "+60"),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "60."),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1000000000", "Date", future),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1000000000", "Date", past),
		h("X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1000000000000", "Date", future),
		h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", "-5s"),
		h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", "5"),
		h("X-RateLimit-Remaining-Requests", "1", "X-RateLimit-Reset-Requests", "5s"),
		h("RateLimit-Remaining", "0", "X-RateLimit-Reset", "60"), // the reset of another family
	}
	for _, max := range []time.Duration{time.Hour, 5 * time.Second} {
		opts := []throttle.TransportOption{}
		if max != time.Hour {
			opts = append(opts, throttle.WithMaxPause(max))
		}
		for _, status := range []int{200, 429, 503} {
			for i, hd := range exhausted {
				got := pausesFor(t, status, hd, 0, opts...)
				if len(got) != 1 || got[0] <= 0 || got[0] > max {
					t.Errorf("cap %v, status %d, exhausted %d %v: pauses %v, want one in (0, %v]", max, status, i, hd, got, max)
				}
			}
			for i, hd := range notExhausted {
				if got := pausesFor(t, status, hd, 0, opts...); len(got) != 0 {
					t.Errorf("cap %v, status %d, not exhausted %d %v: pauses %v, want none", max, status, i, hd, got)
				}
			}
		}
	}
	// Retry-After on a 429 or 503 is not capped, but the largest still
	// makes a pause a Duration holds, and one in the past none.
	for _, tt := range []struct {
		ra   string
		date string
		want time.Duration
	}{
		{"99999999999999999999", "", math.MaxInt64},
		{"9223372036", "", 9223372036 * time.Second},
		{"9223372037", "", math.MaxInt64},
		{future, past, math.MaxInt64},
		{past, future, 0},
		{"0", "", 0},
	} {
		hd := h("Retry-After", tt.ra, "RateLimit", `"a";r=0;t=9`)
		if tt.date != "" {
			hd.Set("Date", tt.date)
		}
		got := pausesFor(t, 429, hd, 0)
		want := []time.Duration{tt.want}
		if tt.want == 0 {
			want = nil // Retry-After says now, and takes precedence over RateLimit
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("429, Retry-After %q, Date %q: pauses %v, want %v", tt.ra, tt.date, got, want)
		}
	}
}

// TestHTTPAttackTransportOddResponses hands the Transport responses that
// a broken base RoundTripper may return: no header map, no body, a body
// that must not be read, a 429 with header names not in canonical form.
// None may panic, pause or be changed.
func TestHTTPAttackTransportOddResponses(t *testing.T) {
	acq := &policySetter{}
	var resp *http.Response
	tr := throttle.NewTransport(throttle.New[*http.Request](acq), roundTripFunc(func(*http.Request) (*http.Response, error) {
		return resp, nil
	}), throttle.AdoptPolicy(10, time.Second))
	for _, r := range []*http.Response{
		{StatusCode: 429},
		{StatusCode: 503, Header: http.Header{"retry-after": {"5"}, "ratelimit": {`"a";r=0;t=5`}}},
		{StatusCode: 200, Body: atkUnreadable{t}},
		nil,
	} {
		resp = r
		var before http.Header
		if r != nil {
			before = r.Header.Clone()
		}
		got, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil))
		if err != nil || got != r {
			t.Errorf("RoundTrip returned %v, %v; want the base's response", got, err)
		}
		if r != nil && !reflect.DeepEqual(r.Header, before) {
			t.Errorf("header changed from %v to %v", before, r.Header)
		}
	}
	if len(acq.pauses) != 0 || len(acq.rates) != 0 {
		t.Errorf("pauses %v, rates %v; want none", acq.pauses, acq.rates)
	}
}

// atkUnreadable is a response body that fails the test if read or closed.
type atkUnreadable struct{ t *testing.T }

func (b atkUnreadable) Read([]byte) (int, error) { b.t.Error("the body was read"); return 0, io.EOF }
func (b atkUnreadable) Close() error             { b.t.Error("the body was closed"); return nil }

// atkBody is a response body that counts its reads.
type atkBody struct{ reads *atomic.Int64 }

func (b atkBody) Read([]byte) (int, error) { b.reads.Add(1); return 0, io.EOF }
func (b atkBody) Close() error             { return nil }

// TestHTTPAttackTransportConcurrentResponses runs 8 goroutines of 25
// requests each through one Transport on a ratelimit.Limiter, with
// AdoptPolicy and a cap on pauses, against a server whose responses
// change policy, say the quota is spent, or answer 429, in turn, under the
// race detector: every response comes back as the base made it (the same
// value, its header unchanged, its body unread), and every request is
// sent.
func TestHTTPAttackTransportConcurrentResponses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		headers := []http.Header{
			h("RateLimit-Policy", `"a";q=50;w=1`, "RateLimit", `"a";r=10;t=1`),
			h("RateLimit-Policy", `"a";q=20;w=1`, "RateLimit", `"a";r=0;t=1`),
			h("RateLimit-Policy", `"b";q=100;w=60, "c";q=5;w=1`),
			h("RateLimit-Policy", `garbage`, "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1"),
			h("X-RateLimit-Remaining-Requests", "0", "X-RateLimit-Reset-Requests", "300ms"),
			h("Retry-After", "1"),
			nil,
		}
		var reads, sent atomic.Int64
		var mu sync.Mutex
		made := map[*http.Response]http.Header{}
		base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
			i := sent.Add(1)
			hd := headers[i%int64(len(headers))].Clone()
			status := 200
			if hd.Get("Retry-After") != "" {
				status = 429
			}
			resp := &http.Response{StatusCode: status, Header: hd, Body: atkBody{&reads}, Request: req}
			mu.Lock()
			made[resp] = hd.Clone()
			mu.Unlock()
			return resp, nil
		})
		lim := ratelimit.New(50, time.Second)
		start := time.Now()
		tr := throttle.NewTransport(throttle.New[*http.Request](lim), base,
			throttle.AdoptPolicy(100, time.Second), throttle.WithMaxPause(2*time.Second))
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 25 {
					resp, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					want, ok := made[resp]
					mu.Unlock()
					if !ok || !reflect.DeepEqual(resp.Header, want) {
						t.Errorf("response %p: header %v, want the base's %v", resp, resp.Header, want)
					}
				}
			})
		}
		wg.Wait()
		if n := sent.Load(); n != 200 {
			t.Errorf("%d requests sent, want 200", n)
		}
		if n := reads.Load(); n != 0 {
			t.Errorf("the bodies were read %d times", n)
		}
		// 28 responses of 429 with Retry-After: 1 paused the limiter.
		if d := time.Since(start); d < time.Second {
			t.Errorf("the requests took %v: the responses paused nothing", d)
		}
	})
}

// TestHTTPAttackAdoptPolicyRandom adopts random RateLimit-Policy fields of
// one to three policies under random caps: the rate set is one
// ratelimit.New takes (policySetter checks), finite and above 0, its burst
// is the smallest quota or the cap's, and its rate is the lowest of the
// cap's and the policies', within a tolerance for float64 arithmetic
// (TestAdoptPolicyNeverAboveLowestRate checks exactly that the rounding of
// the period to a nanosecond never makes it higher).
func TestHTTPAttackAdoptPolicyRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 3000 {
		capRate := []float64{0.5, 1, 3, 10, 1000, 1e6, 7.25}[rng.IntN(7)]
		capPeriod := []time.Duration{time.Millisecond, time.Second, 2 * time.Second, time.Hour, 366 * 24 * time.Hour}[rng.IntN(5)]
		if float64(capPeriod)/capRate < 1 {
			continue
		}
		var items []string
		burst, low := capRate, capRate/float64(capPeriod)
		for range rng.IntN(3) + 1 {
			q := []int64{1, 2, 3, 7, 100, 1000, 999_999_999_999_999}[rng.IntN(7)]
			w := []int64{1, 2, 3, 60, 3600, 31_622_400}[rng.IntN(6)]
			items = append(items, fmt.Sprintf(`"p%d";q=%d;w=%d`, len(items), q, w))
			burst = min(burst, float64(q))
			low = min(low, float64(q)/float64(time.Duration(w)*time.Second))
		}
		policy := strings.Join(items, ", ")
		lim := &policySetter{}
		base := &canned{status: 200, header: h("RateLimit-Policy", policy)}
		tr := throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.AdoptPolicy(capRate, capPeriod))
		if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
			t.Fatal(err)
		}
		if len(lim.rates) != 1 {
			t.Fatalf("case %d: AdoptPolicy(%v, %v), %s: rates set %v, want one", i, capRate, capPeriod, policy, lim.rates)
		}
		q, _ := strconv.ParseFloat(strings.Split(lim.rates[0], "/")[0], 64)
		period := lim.periods[0]
		rate := q / (float64(period) + 0.5) // the period before it was rounded, at most
		if !(q > 0) || math.IsInf(q, 0) || period <= 0 || q != burst || rate > low*(1+1e-12) {
			t.Errorf("case %d: AdoptPolicy(%v, %v), %s: SetRate(%s); want a burst of %v and at most %v a second",
				i, capRate, capPeriod, policy, lim.rates[0], burst, low*1e9)
		}
	}
}

// TestHTTPAttackTransportPausesDoNotAdd: ten responses that come back
// together, each saying that the quota resets in the cap's hour or more,
// pause a ratelimit.Limiter, a Window and a host's bucket for an hour, not
// ten: a pause never adds to the one in progress, so no number of
// responses can pause longer than WithMaxPause.
func TestHTTPAttackTransportPausesDoNotAdd(t *testing.T) {
	clk := clock.NewMock()
	clk.Set(quotaNow)
	lim := ratelimit.New(100, time.Second, ratelimit.WithClock(clk))
	win := ratelimit.NewWindow(100, time.Second, ratelimit.WithClock(clk))
	hosts := ratelimit.NewKeyed[string](100, time.Second, ratelimit.WithClock(clk))
	hd := h("RateLimit", `"a";r=0;t=86400`, "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", unix(48*time.Hour))
	// The base answers once all ten requests are in flight: all have been
	// admitted before the first pause.
	var arrived sync.WaitGroup
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		arrived.Done()
		arrived.Wait()
		return &http.Response{StatusCode: 200, Header: hd.Clone(), Body: http.NoBody, Request: req}, nil
	})
	for _, tr := range []*throttle.Transport{
		throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.WithClock(clk)),
		throttle.NewTransport(throttle.New[*http.Request](win), base, throttle.WithClock(clk)),
		throttle.NewTransport(nil, base, throttle.WithClock(clk), throttle.PerHost(hosts)),
	} {
		arrived.Add(10)
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if _, err := tr.RoundTrip(httptest.NewRequest("GET", "http://example.com/", nil)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	clk.Add(time.Hour - time.Nanosecond)
	if lim.HasCapacity(1) || win.HasCapacity(1) || hosts.HasCapacity("example.com", 1) {
		t.Fatalf("a limiter admits before the hour: Limiter %v, Window %v, host %v",
			lim.HasCapacity(1), win.HasCapacity(1), hosts.HasCapacity("example.com", 1))
	}
	clk.Add(time.Nanosecond)
	if !lim.HasCapacity(1) || !win.HasCapacity(1) || !hosts.HasCapacity("example.com", 1) {
		t.Errorf("ten pauses of an hour at once: after an hour, Limiter %v, Window %v, host %v admit; want all",
			lim.HasCapacity(1), win.HasCapacity(1), hosts.HasCapacity("example.com", 1))
	}
}
