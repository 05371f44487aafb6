package throttle_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// pipeListener is a net.Listener whose connections are in-memory pipes
// (net.Pipe), for servers inside a synctest bubble: a goroutine blocked on
// a pipe is durably blocked, where one blocked on a socket is not.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial connects to the listener, as an http.Transport's DialContext.
func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		err := net.ErrClosed
		client.Close()
		server.Close()
		return nil, err
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "127.0.0.1:80" } // what the server's URL is made of

// pipeServer starts an httptest.Server of h on a pipeListener, and returns
// it with an http.Transport that dials it. stop closes both, so that no
// goroutine of theirs is left in the bubble; call it before the bubble's
// function returns.
func pipeServer(h http.Handler) (srv *httptest.Server, tr *http.Transport, stop func()) {
	l := newPipeListener()
	srv = httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	tr = &http.Transport{DialContext: l.dial}
	return srv, tr, func() {
		tr.CloseIdleConnections()
		srv.Close()
	}
}

// TestTransportQuotaServer checks each family of quota fields against a
// real server: it answers the first request with a 200 that says nothing
// remains, and the others with a plain 200. The requests made next, from
// several goroutines, all wait until the reset on the limiter's clock: the
// first is sent at the reset, the others at the limiter's steady rate.
func TestTransportQuotaServer(t *testing.T) {
	tests := []struct {
		name   string
		header func(h http.Header, c *clocktest.Clock)
		want   time.Duration // when the second request is sent
	}{
		{"RateLimit", func(h http.Header, _ *clocktest.Clock) {
			h.Set("RateLimit", `"default";r=0;t=3, "daily";r=900;t=80000`)
		}, 3 * time.Second},
		{"RateLimit-Reset", func(h http.Header, _ *clocktest.Clock) {
			h.Set("RateLimit-Remaining", "0")
			h.Set("RateLimit-Reset", "3")
		}, 3 * time.Second},
		// The server's clock is the limiter's here, half a second into
		// a second: its Date says 0.5 s earlier, and the reset is read on
		// the Transport's clock, which lies within that second.
		{"X-RateLimit-Reset", func(h http.Header, c *clocktest.Clock) {
			h.Set("Date", c.Now().Format(http.TimeFormat))
			h.Set("X-RateLimit-Remaining", "0")
			h.Set("X-RateLimit-Reset", strconv.FormatInt(c.Now().Add(3*time.Second).Unix(), 10))
		}, 2500 * time.Millisecond},
		// A server clock a day ahead: the reset is read against its Date.
		{"X-RateLimit-Reset skewed", func(h http.Header, c *clocktest.Clock) {
			now := c.Now().Add(24 * time.Hour).Truncate(time.Second)
			h.Set("Date", now.Format(http.TimeFormat))
			h.Set("X-RateLimit-Remaining", "0")
			h.Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(3*time.Second).Unix(), 10))
		}, 3 * time.Second},
		{"X-RateLimit-Reset-Requests", func(h http.Header, _ *clocktest.Clock) {
			h.Set("X-RateLimit-Remaining-Requests", "0")
			h.Set("X-RateLimit-Reset-Requests", "2.5s")
		}, 2500 * time.Millisecond},
		{"remaining 1", func(h http.Header, _ *clocktest.Clock) {
			h.Set("RateLimit", `"default";r=1;t=3`)
			h.Set("X-RateLimit-Remaining", "1")
			h.Set("X-RateLimit-Reset", "3")
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				c.Add(500 * time.Millisecond) // half a second into a second
				start := c.Elapsed()
				var mu sync.Mutex
				var served []time.Duration
				_, base, stop := pipeServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					served = append(served, c.Elapsed()-start)
					first := len(served) == 1
					mu.Unlock()
					if first {
						tt.header(w.Header(), c)
					}
					io.WriteString(w, "ok")
				}))
				defer stop()
				// Ten a second with a burst of ten: without the pause,
				// every request below would be sent at once.
				lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
				client := &http.Client{Transport: throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.WithClock(c))}
				get := func() {
					resp, err := client.Get("http://127.0.0.1/")
					if err != nil {
						t.Errorf("GET: %v", err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				get()
				const n = 4
				var done atomic.Int64
				for range n {
					go func() {
						get()
						done.Add(1)
					}()
				}
				advanceUntil(t, c, &done, n, time.Minute)
				mu.Lock()
				defer mu.Unlock()
				want := []time.Duration{0}
				for i := range n {
					if tt.want == 0 {
						want = append(want, 0) // the burst of ten
					} else {
						want = append(want, tt.want+time.Duration(i)*100*ms)
					}
				}
				sameDurations(t, "request", served, want)
			})
		})
	}
}

// A load test's outcome: how many requests were answered 200, how many 429
// after the first response had come, and when the last 200 was served.
type loadResult struct {
	ok, late429 int
	last        time.Duration
}

// runLoad sends n GET requests through client from g goroutines, advancing
// c until all are answered, and counts what came back. served reports the
// time at which the server admitted its last request.
func runLoad(t *testing.T, c *clocktest.Clock, client *http.Client, n, g int, served func() time.Duration) loadResult {
	t.Helper()
	var mu sync.Mutex
	var res loadResult
	var next, done atomic.Int64
	var answered atomic.Bool // a response has come
	for range g {
		go func() {
			defer done.Add(1)
			for next.Add(1) <= int64(n) {
				after := answered.Load()
				resp, err := client.Get("http://127.0.0.1/")
				if err != nil {
					t.Errorf("GET: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answered.Store(true)
				mu.Lock()
				switch {
				case resp.StatusCode == http.StatusOK:
					res.ok++
				case resp.StatusCode == http.StatusTooManyRequests && after:
					res.late429++
				case resp.StatusCode != http.StatusTooManyRequests:
					t.Errorf("GET: %s", resp.Status)
				}
				mu.Unlock()
			}
		}()
	}
	advanceUntil(t, c, &done, int64(g), 5*time.Minute)
	res.last = served()
	return res
}

// checkLoad fails the test unless res has n 200s, no 429 after the first
// response, and a throughput of at least 95% of limit a second. The
// throughput is (n-1)/last: a server that serves exactly limit a second
// from 0 serves the nth request at (n-1)/limit.
func checkLoad(t *testing.T, res loadResult, n int, limit float64) {
	t.Helper()
	tput := float64(n-1) / res.last.Seconds()
	t.Logf("%d requests served in %v: %.2f a second, %.1f%% of the limit of %v; %d 429s after the first response",
		res.ok, res.last, tput, 100*tput/limit, limit, res.late429)
	if res.ok != n || res.late429 != 0 {
		t.Errorf("%d of %d answered 200, %d 429s after the first response; want all 200", res.ok, n, res.late429)
	}
	if tput < 0.95*limit {
		t.Errorf("throughput %.2f a second, below 95%% of the limit of %v", tput, limit)
	}
}

// TestTransportAgainstMiddleware is issue 12's end-to-end test: drip's
// client Transport against drip's Middleware, which holds each key to 50 a
// second (in bursts of 50) and says so in RateLimit-Policy and RateLimit.
// 8 goroutines send 1,000 requests: after the first response, none is
// answered 429, and the server serves them at 95% of its limit or more.
//
// The client's own limiter is not what keeps it under the limit:
//
//   - "headers": it allows 100 a second, twice the server's rate, one at a
//     time (bursts of 1, so that at most one request is in flight at each
//     moment of the mock clock). What keeps it from 429s is the RateLimit
//     field: when the server's bucket is full (r=0), the Transport pauses
//     until it has drained (t=1).
//   - "AdoptPolicy": it allows 1,000 a second, in bursts of 1,000. The
//     first response's RateLimit-Policy sets it to the server's 50 a second;
//     its bucket then fills as the server's does, and never admits a
//     request the server would refuse, whatever the concurrency.
func TestTransportAgainstMiddleware(t *testing.T) {
	const n, g, limit = 1000, 8, 50
	for _, tt := range []struct {
		name string
		lim  func(c *clocktest.Clock) *ratelimit.Limiter
		opts []throttle.TransportOption
	}{
		{"headers", func(c *clocktest.Clock) *ratelimit.Limiter {
			return ratelimit.New(1, 10*time.Millisecond, ratelimit.WithClock(c))
		}, nil},
		{"AdoptPolicy", func(c *clocktest.Clock) *ratelimit.Limiter {
			return ratelimit.New(1000, time.Second, ratelimit.WithClock(c))
		}, []throttle.TransportOption{throttle.AdoptPolicy(1000, time.Second)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				keyed := ratelimit.NewKeyed[string](limit, time.Second, ratelimit.WithClock(c))
				var last atomic.Int64
				mw := throttle.NewMiddleware(throttle.PerKey(keyed),
					// Pipes have no addresses: one client, one key.
					throttle.KeyBy(func(*http.Request) (string, error) { return "client", nil }))
				_, base, stop := pipeServer(mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					last.Store(int64(c.Elapsed()))
					io.WriteString(w, "ok")
				})))
				defer stop()
				lim := tt.lim(c)
				opts := append([]throttle.TransportOption{throttle.WithClock(c)}, tt.opts...)
				client := &http.Client{Transport: throttle.NewTransport(throttle.New[*http.Request](lim), base, opts...)}
				res := runLoad(t, c, client, n, g, func() time.Duration { return time.Duration(last.Load()) })
				checkLoad(t, res, n, limit)
				if tt.opts != nil && (lim.MaxRate() != limit || lim.Period() != time.Second) {
					t.Errorf("client limiter at %v per %v, want the server's %v per second", lim.MaxRate(), lim.Period(), limit)
				}
			})
		})
	}
}

// githubStyle is a server that limits its one client as GitHub does, to
// limit requests in fixed windows (of a second here; an hour at GitHub)
// aligned on the Unix clock, and says so in X-RateLimit-Limit,
// X-RateLimit-Remaining, X-RateLimit-Used and X-RateLimit-Reset, the Unix
// time in seconds at which the window ends, and nothing else: no
// Retry-After on its 429s, no RateLimit fields. Its clock is c, which it
// also gives in its Date header.
//
// A fixed window is what makes X-RateLimit-Reset exact: its quota comes
// back whole at the reset. A leaky bucket has no such moment: if it sends
// the time it will be empty, rounded up to a whole second, each pause may
// last up to a second longer than needed.
type githubStyle struct {
	c      *clocktest.Clock
	limit  int
	mu     sync.Mutex
	window int64 // the Unix second of the current window
	used   int
	last   time.Duration // when the last request was admitted
}

func (s *githubStyle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := s.c.Now()
	s.mu.Lock()
	if sec := now.Unix(); sec != s.window {
		s.window, s.used = sec, 0
	}
	ok := s.used < s.limit
	if ok {
		s.used++
		s.last = s.c.Elapsed()
	}
	used, reset := s.used, s.window+1
	s.mu.Unlock()
	h := w.Header()
	h.Set("Date", now.Format(http.TimeFormat))
	h.Set("X-RateLimit-Limit", strconv.Itoa(s.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(s.limit-used))
	h.Set("X-RateLimit-Used", strconv.Itoa(used))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(reset, 10))
	if !ok {
		http.Error(w, "API rate limit exceeded", http.StatusTooManyRequests)
		return
	}
	io.WriteString(w, "ok")
}

// TestTransportAgainstGitHubStyle is issue 12's second end-to-end test:
// the same load against a server that says only what GitHub says, in
// X-RateLimit-* fields, with windows of 50 requests a second. The client
// allows 100 a second, one at a time: what keeps it from 429s is
// X-RateLimit-Remaining: 0, on which the Transport pauses until
// X-RateLimit-Reset.
func TestTransportAgainstGitHubStyle(t *testing.T) {
	const n, g, limit = 1000, 8, 50
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		c.Add(300 * time.Millisecond) // start within a window, not on its edge
		start := c.Elapsed()
		srv := &githubStyle{c: c, limit: limit}
		_, base, stop := pipeServer(srv)
		defer stop()
		lim := ratelimit.New(1, 10*time.Millisecond, ratelimit.WithClock(c))
		client := &http.Client{Transport: throttle.NewTransport(throttle.New[*http.Request](lim), base, throttle.WithClock(c))}
		res := runLoad(t, c, client, n, g, func() time.Duration {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			return srv.last - start
		})
		checkLoad(t, res, n, limit)
	})
}
