package throttle_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// recordingLimit is a Limit that records the keys and costs it is asked
// for, and answers Allow with decide (OK with 10 remaining, if nil) and
// Acquire with acquire (nil, if nil).
type recordingLimit struct {
	mu      sync.Mutex
	keys    []string
	costs   []float64
	decide  func(key string, cost float64) ratelimit.Decision
	acquire func(ctx context.Context, key string, cost float64) error
}

func (l *recordingLimit) Allow(_ context.Context, key string, cost float64) ratelimit.Decision {
	l.mu.Lock()
	l.keys = append(l.keys, key)
	l.costs = append(l.costs, cost)
	l.mu.Unlock()
	if l.decide != nil {
		return l.decide(key, cost)
	}
	return ratelimit.Decision{OK: true, Remaining: 10}
}

func (l *recordingLimit) Acquire(ctx context.Context, key string, cost float64) error {
	if l.acquire != nil {
		return l.acquire(ctx, key, cost)
	}
	return nil
}

func (l *recordingLimit) MaxRate() float64      { return 10 }
func (l *recordingLimit) Period() time.Duration { return time.Minute }

func (l *recordingLimit) calls() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.keys...)
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

// keyOf runs one request from remote with the headers hdr (name, value,
// name, value...) through a Middleware made with opts, and returns the key
// the Limit was asked for, or the status of a request that never reached
// it.
func keyOf(t *testing.T, opts []throttle.MiddlewareOption, remote string, hdr ...string) (string, int) {
	t.Helper()
	lim := &recordingLimit{}
	h := throttle.NewMiddleware(lim, opts...).Handler(okHandler)
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	keys := lim.calls()
	switch {
	case rec.Code == http.StatusOK && len(keys) == 1:
		return keys[0], rec.Code
	case rec.Code != http.StatusOK && len(keys) == 0:
		return "", rec.Code
	}
	t.Fatalf("status %d after %d calls to the Limit %q", rec.Code, len(keys), keys)
	return "", 0
}

var (
	trustTen   = throttle.KeyByIP(netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"))
	xff        = "X-Forwarded-For"
	xRealIP    = "X-Real-IP"
	noOptions  []throttle.MiddlewareOption
	withTrust  = []throttle.MiddlewareOption{trustTen}
	bad        = "" // the key of a request answered 400
	badRequest = http.StatusBadRequest
)

// TestKeyByIP checks the key a request gets from its address and, with
// trusted proxies, its headers, in each form they come in.
func TestKeyByIP(t *testing.T) {
	tests := []struct {
		name   string
		opts   []throttle.MiddlewareOption
		remote string
		hdr    []string
		want   string
	}{
		{"IPv4 with port", noOptions, "192.0.2.1:1234", nil, "192.0.2.1"},
		{"IPv4 without port", noOptions, "192.0.2.1", nil, "192.0.2.1"},
		{"IPv6 with port", noOptions, "[2001:db8:1:2:3:4:5:6]:443", nil, "2001:db8:1:2::/64"},
		{"IPv6 without port", noOptions, "2001:db8:1:2::7", nil, "2001:db8:1:2::/64"},
		{"IPv6 in brackets without port", noOptions, "[2001:db8:1:2::7]", nil, "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6", noOptions, "[::ffff:192.0.2.9]:80", nil, "192.0.2.9"},
		{"IPv4-mapped IPv6 without port", noOptions, "::ffff:192.0.2.9", nil, "192.0.2.9"},
		{"zone", noOptions, "[fe80::1%eth0]:80", nil, "fe80::/64"},
		{"IPv6 /128", []throttle.MiddlewareOption{throttle.WithIPv6Prefix(128)}, "[2001:db8::1%eth0]:1", nil, "2001:db8::1"},
		{"IPv6 /48", []throttle.MiddlewareOption{throttle.WithIPv6Prefix(48)}, "[2001:db8:1:2::1]:1", nil, "2001:db8:1::/48"},
		{"IPv6 /64 with KeyByIP", []throttle.MiddlewareOption{throttle.WithIPv6Prefix(64), throttle.KeyByIP()}, "[2001:db8:1:2::1]:1", nil, "2001:db8:1:2::/64"},
		{"not an address", noOptions, "pipe", nil, bad},
		{"empty", noOptions, "", nil, bad},
		{"name port", noOptions, "192.0.2.1:http", nil, bad},
		{"empty port", noOptions, "192.0.2.1:", nil, bad},
		{"unclosed bracket", noOptions, "[2001:db8::1:80", nil, bad},
		{"junk after bracket", noOptions, "[2001:db8::1]x80", nil, bad},
		{"leading zero", noOptions, "192.0.2.01:80", nil, bad},
		{"host name", noOptions, "localhost:80", nil, bad},

		// Without trusted proxies, headers change nothing.
		{"XFF ignored", noOptions, "192.0.2.1:1", []string{xff, "203.0.113.5"}, "192.0.2.1"},
		{"X-Real-IP ignored", noOptions, "192.0.2.1:1", []string{xRealIP, "203.0.113.5"}, "192.0.2.1"},
		{"garbage ignored", noOptions, "192.0.2.1:1", []string{xff, "garbage", xRealIP, "[["}, "192.0.2.1"},
		// Nor from a peer that is not trusted.
		{"untrusted peer", withTrust, "192.0.2.1:1", []string{xff, "203.0.113.5"}, "192.0.2.1"},
		{"untrusted peer, garbage", withTrust, "192.0.2.1:1", []string{xff, "garbage"}, "192.0.2.1"},

		{"trusted peer alone", withTrust, "10.0.0.1:1", nil, "10.0.0.1"},
		{"one hop", withTrust, "10.0.0.1:1", []string{xff, "203.0.113.5"}, "203.0.113.5"},
		{"rightmost untrusted", withTrust, "10.0.0.1:1", []string{xff, "198.51.100.1, 203.0.113.5, 10.0.0.2"}, "203.0.113.5"},
		{"spoofed left part", withTrust, "10.0.0.1:1", []string{xff, "10.9.9.9, 1.1.1.1,203.0.113.5"}, "203.0.113.5"},
		{"garbage left of the client", withTrust, "10.0.0.1:1", []string{xff, "garbage, 203.0.113.5"}, "203.0.113.5"},
		{"fields in order", withTrust, "10.0.0.1:1", []string{xff, "1.1.1.1", xff, "203.0.113.5, 10.0.0.3"}, "203.0.113.5"},
		{"all trusted", withTrust, "10.0.0.1:1", []string{xff, "10.0.0.5, 10.0.0.6"}, "10.0.0.5"},
		{"empty elements", withTrust, "10.0.0.1:1", []string{xff, " ,203.0.113.5,,\t, "}, "203.0.113.5"},
		{"hop with port", withTrust, "10.0.0.1:1", []string{xff, "203.0.113.5:8080"}, "203.0.113.5"},
		{"IPv6 hop with port", withTrust, "10.0.0.1:1", []string{xff, "[2001:db8:5:6::9]:5000"}, "2001:db8:5:6::/64"},
		{"IPv6 hop", withTrust, "[fd00::1]:1", []string{xff, "2001:db8:5:6::9, fd00::2"}, "2001:db8:5:6::/64"},
		{"mapped hop", withTrust, "10.0.0.1:1", []string{xff, "::ffff:203.0.113.5"}, "203.0.113.5"},
		{"mapped trusted peer", withTrust, "[::ffff:10.0.0.1]:1", []string{xff, "203.0.113.5"}, "203.0.113.5"},
		{"mapped trusted hop", withTrust, "10.0.0.1:1", []string{xff, "203.0.113.5, ::ffff:10.1.1.1"}, "203.0.113.5"},
		{"garbage hop", withTrust, "10.0.0.1:1", []string{xff, "unknown"}, bad},
		{"garbage right of the client", withTrust, "10.0.0.1:1", []string{xff, "203.0.113.5, _hidden"}, bad},
		{"X-Real-IP", withTrust, "10.0.0.1:1", []string{xRealIP, "203.0.113.8"}, "203.0.113.8"},
		{"X-Real-IP last field", withTrust, "10.0.0.1:1", []string{xRealIP, "1.1.1.1", xRealIP, " 203.0.113.8 "}, "203.0.113.8"},
		{"XFF before X-Real-IP", withTrust, "10.0.0.1:1", []string{xRealIP, "1.1.1.1", xff, "203.0.113.5"}, "203.0.113.5"},
		{"garbage X-Real-IP", withTrust, "10.0.0.1:1", []string{xRealIP, "me"}, bad},
		{"mapped prefix", []throttle.MiddlewareOption{throttle.KeyByIP(netip.MustParsePrefix("::ffff:10.0.0.0/104"))},
			"10.0.0.1:1", []string{xff, "203.0.113.5"}, "203.0.113.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, status := keyOf(t, tt.opts, tt.remote, tt.hdr...)
			if tt.want == bad {
				if status != badRequest {
					t.Errorf("key %q, status %d; want a key error (400)", got, status)
				}
				return
			}
			if got != tt.want {
				t.Errorf("key %q (status %d), want %q", got, status, tt.want)
			}
		})
	}
}

// TestKeyByHeaderAndKeyBy checks keys from a header and from a function,
// and the cap on a key's length.
func TestKeyByHeaderAndKeyBy(t *testing.T) {
	byHeader := []throttle.MiddlewareOption{throttle.KeyByHeader("x-api-key")}
	long := strings.Repeat("k", 10<<10)
	tests := []struct {
		name string
		opts []throttle.MiddlewareOption
		hdr  []string
		want string
	}{
		{"header", byHeader, []string{"X-Api-Key", "abc"}, "abc"},
		{"first value", byHeader, []string{"X-Api-Key", "abc", "X-Api-Key", "def"}, "abc"},
		{"missing", byHeader, nil, bad},
		{"empty", byHeader, []string{"X-Api-Key", ""}, bad},
		{"10 KB", byHeader, []string{"X-Api-Key", long}, bad},
		{"at the length cap", append(byHeader, throttle.WithMaxKeyLength(4)), []string{"X-Api-Key", "abcd"}, "abcd"},
		{"over the length cap", append(byHeader, throttle.WithMaxKeyLength(4)), []string{"X-Api-Key", "abcde"}, bad},
		{"func", []throttle.MiddlewareOption{throttle.KeyBy(func(r *http.Request) (string, error) {
			return "user:" + r.Header.Get("X-User"), nil
		})}, []string{"X-User", "ann"}, "user:ann"},
		{"func, long", []throttle.MiddlewareOption{throttle.KeyBy(func(r *http.Request) (string, error) {
			return long, nil
		})}, nil, bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, status := keyOf(t, tt.opts, "192.0.2.1:1", tt.hdr...)
			if tt.want == bad {
				if status != badRequest {
					t.Errorf("key %q, status %d; want a key error (400)", got, status)
				}
				return
			}
			if got != tt.want {
				t.Errorf("key %q (status %d), want %q", got, status, tt.want)
			}
		})
	}
}

// TestKeyErrorHandler checks that a key error reaches the handler given,
// with KeyBy's own error, that nothing is taken from the Limit, and that
// the default answers 400 with a problem+json body that does not echo the
// request.
func TestKeyErrorHandler(t *testing.T) {
	errNoUser := errors.New("no user")
	lim := &recordingLimit{}
	var got error
	m := throttle.NewMiddleware(lim,
		throttle.KeyBy(func(*http.Request) (string, error) { return "", errNoUser }),
		throttle.WithKeyErrorHandler(func(w http.ResponseWriter, _ *http.Request, err error) {
			got = err
			w.WriteHeader(http.StatusUnauthorized)
		}))
	rec := httptest.NewRecorder()
	m.Handler(okHandler).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusUnauthorized || got != errNoUser || len(lim.calls()) != 0 {
		t.Errorf("status %d, error %v, %d calls; want 401, %v, none", rec.Code, got, len(lim.calls()), errNoUser)
	}

	m = throttle.NewMiddleware(lim, throttle.KeyByHeader("X-Api-Key"))
	rec = httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Api-Key", strings.Repeat("<script>", 100))
	m.Handler(okHandler).ServeHTTP(rec, req)
	p := readProblem(t, rec.Result())
	if rec.Code != http.StatusBadRequest || p.Status != 400 || p.Type != "about:blank" || strings.Contains(rec.Body.String(), "script") {
		t.Errorf("status %d, body %s; want 400 with a problem that does not echo the key", rec.Code, rec.Body)
	}
	if len(lim.calls()) != 0 {
		t.Errorf("the Limit was called for %q", lim.calls())
	}
}

// TestKeyByIPv6Network checks, with a real bucket, that the addresses of
// one /64 share it and those of another do not.
func TestKeyByIPv6Network(t *testing.T) {
	keyed := ratelimit.NewKeyed[string](1, time.Minute, ratelimit.WithClock(clock.NewMock()))
	h := throttle.NewMiddleware(throttle.PerKey(keyed)).Handler(okHandler)
	for _, tt := range []struct {
		remote string
		want   int
	}{
		{"[2001:db8:1:2::1]:1000", http.StatusOK},
		{"[2001:db8:1:2:ffff:ffff:ffff:ffff]:1001", http.StatusTooManyRequests},
		{"[2001:db8:1:2:0:0:0:2%eth1]:1002", http.StatusTooManyRequests},
		{"[2001:db8:1:3::1]:1003", http.StatusOK},
		{"[::ffff:192.0.2.1]:1", http.StatusOK},
		{"192.0.2.1:2", http.StatusTooManyRequests},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = tt.remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("%s: status %d, want %d", tt.remote, rec.Code, tt.want)
		}
	}
}

// TestSpoofing runs a real server, reached from 127.0.0.1, and checks that
// headers a client sends do not change its key unless 127.0.0.1 is a
// trusted proxy, and then only through the hop that the proxy appended.
func TestSpoofing(t *testing.T) {
	do := func(t *testing.T, c *http.Client, url string, fwd string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if fwd != "" {
			req.Header.Set("X-Forwarded-For", fwd)
			req.Header.Set("X-Real-IP", strings.Split(fwd, ",")[0])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	t.Run("no trusted proxy", func(t *testing.T) {
		keyed := ratelimit.NewKeyed[string](2, time.Minute, ratelimit.WithClock(clock.NewMock()))
		srv := httptest.NewServer(throttle.NewMiddleware(throttle.PerKey(keyed)).Handler(okHandler))
		defer srv.Close()
		got := []int{
			do(t, srv.Client(), srv.URL, "203.0.113.1"),
			do(t, srv.Client(), srv.URL, "203.0.113.2"),
			do(t, srv.Client(), srv.URL, "203.0.113.3, 198.51.100.7"),
			do(t, srv.Client(), srv.URL, ""),
		}
		want := []int{200, 200, 429, 429}
		if !equal(got, want) {
			t.Errorf("statuses %v, want %v: the headers changed the key", got, want)
		}
		if n := keyed.Len(); n != 1 {
			t.Errorf("%d keys held, want 1 (127.0.0.1)", n)
		}
	})

	t.Run("trusted proxy", func(t *testing.T) {
		keyed := ratelimit.NewKeyed[string](2, time.Minute, ratelimit.WithClock(clock.NewMock()))
		m := throttle.NewMiddleware(throttle.PerKey(keyed), throttle.KeyByIP(netip.MustParsePrefix("127.0.0.0/8")))
		srv := httptest.NewServer(m.Handler(okHandler))
		defer srv.Close()
		got := []int{
			// The proxy appended 203.0.113.1 each time; the client
			// made up what comes before it.
			do(t, srv.Client(), srv.URL, "203.0.113.1"),
			do(t, srv.Client(), srv.URL, "198.51.100.9, 203.0.113.1"),
			do(t, srv.Client(), srv.URL, "203.0.113.2, 203.0.113.1"),
			do(t, srv.Client(), srv.URL, "203.0.113.2"),
			do(t, srv.Client(), srv.URL, "203.0.113.1, 203.0.113.2, 127.0.0.5"),
			do(t, srv.Client(), srv.URL, "203.0.113.2"),
		}
		want := []int{200, 200, 429, 200, 200, 429}
		if !equal(got, want) {
			t.Errorf("statuses %v, want %v", got, want)
		}
		if n := keyed.Len(); n != 2 {
			t.Errorf("%d keys held, want 2", n)
		}
	})
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzKeyByIP checks that no address or header makes the Middleware panic
// or answer other than 200 or 400, that a key is an address or an IPv6
// network, and that the headers change the key only when the peer is
// trusted.
func FuzzKeyByIP(f *testing.F) {
	seeds := [][3]string{
		{"10.0.0.1:1", "203.0.113.5, 10.0.0.2", ""},
		{"192.0.2.1:1", "203.0.113.5", "198.51.100.1"},
		{"[fd00::1]:1", "[2001:db8::1]:80,,", ""},
		{"[::ffff:10.0.0.1]:1", "", "::ffff:203.0.113.5"},
		{"10.0.0.1", "1.1.1.1, [", "x"},
		{"[fe80::1%eth0]:1", "\t,\t", ""},
		{"", "", ""},
		{"[", "]", ":"},
		{"10.0.0.1:1", strings.Repeat("10.0.0.9,", 1000), ""},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2])
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	f.Fuzz(func(t *testing.T, remote, fwd, real string) {
		withHeaders, s1 := keyOf(t, []throttle.MiddlewareOption{throttle.KeyByIP(trusted...)}, remote, xff, fwd, xRealIP, real)
		alone, s2 := keyOf(t, noOptions, remote)
		for _, s := range []int{s1, s2} {
			if s != http.StatusOK && s != http.StatusBadRequest {
				t.Fatalf("status %d", s)
			}
		}
		for _, k := range []string{withHeaders, alone} {
			if k == "" {
				continue
			}
			if _, err := netip.ParseAddr(k); err != nil {
				if _, err := netip.ParsePrefix(k); err != nil {
					t.Fatalf("key %q is neither an address nor a prefix", k)
				}
			}
		}
		// The peer's own key says whether it is trusted: an IPv4 address,
		// or an IPv6 network that lies in fd00::/8 whole or not at all.
		var peer netip.Addr
		if a, err := netip.ParseAddr(alone); err == nil {
			peer = a
		} else if p, err := netip.ParsePrefix(alone); err == nil {
			peer = p.Addr()
		}
		if !trustedAddr(trusted, peer) && (s1 != s2 || withHeaders != alone) {
			t.Fatalf("untrusted peer %q: key %q (%d) with headers, %q (%d) without", remote, withHeaders, s1, alone, s2)
		}
	})
}

func trustedAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// FuzzRemoteAddr checks the keys of RemoteAddr against net/netip: an
// address with a port (IPv4 as it is, IPv6 in brackets) has a key exactly
// when netip parses it, and the key is the address, unmapped, or its /64.
func FuzzRemoteAddr(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "0.0.0.0", "255.255.255.255", "256.0.0.1", "01.2.3.4",
		"1.2.3", "1.2.3.4.5", "1..2.3", "1.2.3.", "1.2.3.4%eth0", "::ffff:1.2.3.4", "2001:db8::1",
		"fe80::1%eth0", "::", "1.2.3.4]", "", "١.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		want := ""
		a, err := netip.ParseAddr(host)
		switch {
		case err != nil:
		case a.Unmap().Is4():
			want = a.Unmap().String()
		default:
			p, _ := a.WithZone("").Prefix(64)
			want = p.String()
		}
		remote := host + ":80"
		if strings.Contains(host, ":") {
			remote = "[" + host + "]:80"
		}
		got, status := keyOf(t, noOptions, remote)
		if got != want || (want == "") != (status == http.StatusBadRequest) {
			t.Errorf("RemoteAddr %q: key %q (%d), want %q", remote, got, status, want)
		}
	})
}
