package redisbucket

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/redis/go-redis/v9"
)

// hooked is a Scripter that fails every call while down, as a client of a
// server that refuses connections does, and runs after once a call
// returns.
type hooked struct {
	redis.Scripter
	down  atomic.Bool
	calls atomic.Int64
	after func()
}

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

func (h *hooked) do(ctx context.Context, f func() *redis.Cmd) *redis.Cmd {
	h.calls.Add(1)
	if h.down.Load() {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errRefused)
		return cmd
	}
	cmd := f()
	if h.after != nil {
		h.after()
	}
	return cmd
}

func (h *hooked) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	return h.do(ctx, func() *redis.Cmd { return h.Scripter.EvalSha(ctx, sha, keys, args...) })
}

func (h *hooked) Eval(ctx context.Context, src string, keys []string, args ...any) *redis.Cmd {
	return h.do(ctx, func() *redis.Cmd { return h.Scripter.Eval(ctx, src, keys, args...) })
}

type switchEvent struct {
	local bool
	cause error
}

func TestFallback(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		h := &hooked{Scripter: rdb}
		var events []switchEvent
		notify := func(local bool, cause error) { events = append(events, switchEvent{local, cause}) }
		lim := onMockTime(New(h, testKey(t, rdb), 10, time.Hour, WithClock(c),
			WithFallback(0.5, notify), WithProbeInterval(time.Second)), c)
		try := func(want bool) {
			t.Helper()
			if ok, err := lim.TryAcquire(ctx, 1); ok != want || err != nil {
				t.Fatalf("TryAcquire at %v = %v, %v; want %v", c.Elapsed(), ok, err, want)
			}
		}

		try(true)
		try(true) // two units in Redis
		h.down.Store(true)
		calls := h.calls.Load()
		for range 5 {
			try(true) // the local limiter's 5 units
		}
		try(false)
		if got := h.calls.Load() - calls; got != 1 {
			t.Errorf("%d calls reached Redis while it was down and no probe was due; want 1 (the one that failed)", got)
		}
		if len(events) != 1 || !events[0].local || !errors.Is(events[0].cause, syscall.ECONNREFUSED) {
			t.Fatalf("switches = %v; want one to local, caused by ECONNREFUSED", events)
		}
		if lv, err := lim.Level(ctx); lv != 5 || err != nil {
			t.Errorf("Level on the fallback = %v, %v; want the local level 5", lv, err)
		}
		if err := lim.Pause(ctx, time.Minute); err != nil {
			t.Errorf("Pause on the fallback: %v", err)
		}

		c.Advance(time.Second)
		calls = h.calls.Load()
		if ok, err := lim.HasCapacity(ctx, 1); ok || err != nil { // the probe, still down
			t.Errorf("HasCapacity on the fallback = %v, %v; want false, the local limiter is paused", ok, err)
		}
		if got := h.calls.Load() - calls; got != 1 {
			t.Errorf("%d calls reached Redis when a probe was due; want 1", got)
		}

		h.down.Store(false)
		calls = h.calls.Load()
		try(false) // no probe due yet: local
		if got := h.calls.Load() - calls; got != 0 {
			t.Errorf("%d calls reached Redis before the next probe; want 0", got)
		}
		c.Advance(time.Second)
		for range 8 {
			try(true) // Redis again, with its 8 units left
		}
		try(false)
		if len(events) != 2 || events[1].local || events[1].cause != nil {
			t.Errorf("switches = %v; want a second one, back to Redis", events)
		}
	})
}

// TestFallbackAcquire checks that Acquire waits on the local limiter while
// Redis is down, and that without a fallback it fails with ErrUnavailable
// wrapping the cause.
func TestFallbackAcquire(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		h := &hooked{Scripter: rdb}
		h.down.Store(true)
		key := testKey(t, rdb)
		with := onMockTime(New(h, key, 4, 4*time.Second, WithClock(c), WithFallback(0.5, nil)), c)
		without := onMockTime(New(h, key, 4, 4*time.Second, WithClock(c)), c)

		err := without.Acquire(ctx, 1)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("Acquire with Redis down = %v; want ErrUnavailable and ECONNREFUSED", err)
		}
		t.Log(err)
		if _, err := without.Level(ctx); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Level with Redis down = %v; want ErrUnavailable", err)
		}
		if err := without.Pause(ctx, time.Second); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Pause with Redis down = %v; want ErrUnavailable", err)
		}
		if err := without.SetRate(ctx, 4, 4*time.Second); !errors.Is(err, ErrUnavailable) {
			t.Errorf("SetRate with Redis down = %v; want ErrUnavailable", err)
		}

		// The local limiter holds 2 units, one drains every 2s.
		var got []time.Duration
		for range 4 {
			got = append(got, waitFor(t, c, acquireAt(ctx, c, with, 1), time.Minute).at)
		}
		want := []time.Duration{0, 0, 2 * time.Second, 4 * time.Second}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("admissions on the fallback at %v; want %v", got, want)
				break
			}
		}
		if err := with.Acquire(ctx, 3); !errors.Is(err, ratelimit.ErrExceedsCapacity) {
			t.Errorf("Acquire(3) on a fallback of capacity 2 = %v; want ErrExceedsCapacity", err)
		}
	})
}

// TestNotABucket checks that a key holding something else gives an error
// that is not ErrUnavailable, and no switch to the fallback.
func TestNotABucket(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	rdb := newClient(t, addr)
	for name, set := range map[string]func(key string) error{
		"string": func(key string) error { return rdb.Set(ctx, key, "hello", 0).Err() },
		"hash":   func(key string) error { return rdb.HSet(ctx, key, "t", 1).Err() },
	} {
		t.Run(name, func(t *testing.T) {
			key := testKey(t, rdb)
			if err := set(key); err != nil {
				t.Fatal(err)
			}
			switched := false
			lim := New(rdb, key, 1, time.Second, WithFallback(1, func(bool, error) { switched = true }))
			ok, err := lim.TryAcquire(ctx, 1)
			if ok || err == nil || errors.Is(err, ErrUnavailable) || switched {
				t.Errorf("TryAcquire = %v, %v (switched: %v); want a Redis error, no switch", ok, err, switched)
			}
			t.Log(err)
		})
	}
}

func TestUnavailable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{errRefused, true},
		{io.EOF, true},
		{context.DeadlineExceeded, true},
		{redis.ErrPoolTimeout, true},
		{redis.ErrClosed, false},
		{&replyError{42}, false},
	}
	for _, tt := range tests {
		if got := unavailable(tt.err); got != tt.want {
			t.Errorf("unavailable(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}

// TestUnavailableReplies checks the classification of real error replies.
func TestUnavailableReplies(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	rdb := newClient(t, addr)
	tests := []struct {
		script string
		want   bool
	}{
		{"return redis.error_reply('LOADING Redis is loading the dataset in memory')", true},
		{"return redis.error_reply('BUSY Redis is busy running a script')", true},
		{"return redis.error_reply('READONLY You can not write against a read only replica')", true},
		{"return redis.error_reply('ERR max number of clients reached')", true},
		{"return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')", false},
		{"return redis.error_reply('ERR redisbucket: key k does not hold a bucket')", false},
	}
	for _, tt := range tests {
		err := rdb.Eval(ctx, tt.script, nil).Err()
		if err == nil {
			t.Fatalf("%s gave no error", tt.script)
		}
		if got := unavailable(err); got != tt.want {
			t.Errorf("unavailable(%v) = %v; want %v", err, got, tt.want)
		}
	}
}

// stalled returns the address of a server that accepts connections and
// never answers, as a Redis that hangs does. It closes when the test ends.
func stalled(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(io.Discard, conn) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, conn := range conns {
			conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestSlowRedis checks that a Redis that does not answer gives
// ErrUnavailable after the limiter's timeout, or the context's error
// within the caller's deadline, and never hangs.
func TestSlowRedis(t *testing.T) {
	rdb := newClient(t, stalled(t))
	short := New(rdb, "k", 1, time.Second, WithTimeout(50*time.Millisecond))
	long := New(rdb, "k", 1, time.Second, WithTimeout(time.Hour))
	ctx := context.Background()
	returns(t, func() {
		if _, err := short.TryAcquire(ctx, 1); !errors.Is(err, ErrUnavailable) {
			t.Errorf("TryAcquire past the limiter's timeout = %v; want ErrUnavailable", err)
		}
	})
	returns(t, func() {
		dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		err := long.Acquire(dctx, 1)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) {
			t.Errorf("Acquire past the caller's deadline = %v; want context.DeadlineExceeded, not ErrUnavailable", err)
		}
		t.Log(err)
	})
	returns(t, func() {
		switched := make(chan error, 1)
		fb := New(rdb, "k", 1, time.Second, WithTimeout(50*time.Millisecond),
			WithFallback(1, func(local bool, cause error) { switched <- cause }))
		if ok, err := fb.TryAcquire(ctx, 1); !ok || err != nil {
			t.Errorf("TryAcquire with a fallback = %v, %v; want true from the local limiter", ok, err)
		}
		if cause := <-switched; cause == nil {
			t.Error("switch reported without a cause")
		}
	})
}

// returns fails the test if f has not returned within a minute: it detects
// hangs, it does not time anything.
func returns(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("call hung")
	}
}
