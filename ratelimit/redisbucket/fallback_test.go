package redisbucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
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
// server that refuses connections does, and while slow waits for the
// call's context to end, as a client of a server that does not answer
// does. It runs after once a call returns.
type hooked struct {
	redis.Scripter
	down  atomic.Bool
	slow  atomic.Bool
	calls atomic.Int64
	after func()
}

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

func (h *hooked) do(ctx context.Context, f func() *redis.Cmd) *redis.Cmd {
	h.calls.Add(1)
	var err error
	switch {
	case h.down.Load():
		err = errRefused
	case h.slow.Load():
		<-ctx.Done()
		err = ctx.Err()
	default:
		cmd := f()
		if h.after != nil {
			h.after()
		}
		return cmd
	}
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
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

// TestFallback follows one limiter to its fallback and back: the local
// bucket starts full, probes take nothing from Redis, the limiter switches
// back at the third probe in a row that Redis answers, and that probe
// carries to Redis a pause taken on the fallback that is still in
// progress.
func TestFallback(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		h := &hooked{Scripter: rdb}
		var events []switchEvent
		notify := func(local bool, cause error) { events = append(events, switchEvent{local, cause}) }
		key := testKey(t, rdb)
		// 10 units per 10s in Redis; 5 on the fallback, one every 2s.
		lim := onMockTime(New(h, key, 10, 10*time.Second, WithClock(c),
			WithFallback(0.5, notify), WithProbeInterval(time.Second)), c)
		direct := onMockTime(New(rdb, key, 10, 10*time.Second, WithClock(c)), c)
		try := func(want bool) {
			t.Helper()
			if ok, err := lim.TryAcquire(ctx, 1); ok != want || err != nil {
				t.Fatalf("TryAcquire at %v = %v, %v; want %v", c.Elapsed(), ok, err, want)
			}
		}
		calls := h.calls.Load()
		roundTrips := func(want int64, what string) {
			t.Helper()
			if got := h.calls.Load() - calls; got != want {
				t.Errorf("%s: %d round trips; want %d", what, got, want)
			}
			calls = h.calls.Load()
		}

		try(true)
		try(true) // two units in Redis
		h.down.Store(true)
		calls = h.calls.Load()
		try(false) // the call that switches: the local bucket starts full
		try(false)
		roundTrips(1, "on the fallback, no probe due")
		if len(events) != 1 || !events[0].local || !errors.Is(events[0].cause, syscall.ECONNREFUSED) {
			t.Fatalf("switches = %v; want one to local, caused by ECONNREFUSED", events)
		}
		if lv, err := lim.Level(ctx); lv != 5 || err != nil {
			t.Errorf("Level on the fallback = %v, %v; want the local level 5", lv, err)
		}

		c.Advance(2 * time.Second) // one local unit has drained
		if ok, err := lim.HasCapacity(ctx, 1); !ok || err != nil {
			t.Errorf("HasCapacity on the fallback = %v, %v; want true, a unit has drained", ok, err)
		}
		roundTrips(1, "a probe due, Redis still down")
		try(true)
		try(false)
		if err := lim.Pause(ctx, time.Minute); err != nil {
			t.Errorf("Pause on the fallback: %v", err)
		}
		roundTrips(0, "no probe due")

		// Redis answers again: the probes at 3s and 4s find it, and the
		// one at 5s switches back. Until then the local limiter, paused,
		// admits nothing, and the probes take nothing from Redis.
		h.down.Store(false)
		for _, at := range []time.Duration{3 * time.Second, 4 * time.Second} {
			c.AdvanceTo(t, at)
			try(false)
			try(false)
			roundTrips(1, fmt.Sprintf("the probe at %v", at))
			if len(events) != 1 {
				t.Fatalf("switches at %v = %v; want none back before the third probe", at, events)
			}
		}
		if lv, err := direct.Level(ctx); lv != 0 || err != nil {
			t.Errorf("Redis level after two probes = %v, %v; want 0, probes take nothing", lv, err)
		}
		// The probe at 5s switches back, and carries to Redis the rest of
		// the local pause, which ends at 62s: Redis admits nothing before,
		// then one unit, then the steady rate.
		c.AdvanceTo(t, 5*time.Second)
		try(false)
		roundTrips(2, "the probe that switches back, then the call on Redis")
		if len(events) != 2 || events[1].local || events[1].cause != nil {
			t.Errorf("switches = %v; want a second one, back to Redis", events)
		}
		c.AdvanceTo(t, 62*time.Second-time.Millisecond)
		try(false)
		c.AdvanceTo(t, 62*time.Second)
		try(true)
		try(false)
		c.AdvanceTo(t, 63*time.Second)
		try(true)
		try(false)
	})
}

// TestFill checks that fill makes a local bucket full, whatever its level,
// and never lowers it.
func TestFill(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		l := ratelimit.New(5, 10*time.Second, ratelimit.WithClock(c)) // one unit every 2s
		fill(l)
		if lv := l.Level(); lv != 5 {
			t.Errorf("Level of an empty bucket after fill = %v; want exactly 5", lv)
		}
		c.Advance(3 * time.Second)
		fill(l)
		if lv := l.Level(); lv < 5-1e-9 || l.HasCapacity(1) {
			t.Errorf("Level of a bucket at 3.5 after fill = %v (room for 1: %v); want 5 and no room", lv, l.HasCapacity(1))
		}
		c.Advance(2 * time.Second)
		if !l.TryAcquire(1) {
			t.Error("no unit admitted 2s after fill; want one")
		}
		l.Pause(time.Minute)
		before := l.Level()
		fill(l)
		if lv := l.Level(); lv != before {
			t.Errorf("Level of a paused bucket after fill = %v; want it unchanged at %v", lv, before)
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

		// The local limiter holds 2 units and starts full; one drains
		// every 2s.
		var got []time.Duration
		for range 4 {
			got = append(got, waitFor(t, c, acquireAt(ctx, c, with, 1), time.Minute).at)
		}
		want := []time.Duration{2 * time.Second, 4 * time.Second, 6 * time.Second, 8 * time.Second}
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
		_, err := short.TryAcquire(ctx, 1)
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("TryAcquire past the limiter's timeout = %v; want ErrUnavailable, not context.DeadlineExceeded", err)
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
		if ok, err := fb.TryAcquire(ctx, 1); ok || err != nil {
			t.Errorf("TryAcquire with a fallback = %v, %v; want false from the local limiter, which starts full", ok, err)
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

// TestLimiterTimeout checks that a round trip cut short by the limiter's
// timeout gives ErrUnavailable, which is not the caller's
// context.DeadlineExceeded, and says why; and that the caller's deadline
// gives context.DeadlineExceeded, not ErrUnavailable.
func TestLimiterTimeout(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, _ *clocktest.Clock) {
		h := &hooked{} // answers nothing, so it needs no server
		h.slow.Store(true)
		lim := New(h, "k", 1, time.Second, WithTimeout(50*time.Millisecond))
		ctx := context.Background()

		_, err := lim.TryAcquire(ctx, 1)
		var timeout interface{ Timeout() bool }
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
			!errors.As(err, &timeout) || !timeout.Timeout() || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("TryAcquire past the limiter's timeout = %v; want ErrUnavailable, a cause whose Timeout is true, and not context.DeadlineExceeded", err)
		}
		t.Log(err)

		dctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		defer cancel()
		if err := lim.Acquire(dctx, 1); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable) {
			t.Errorf("Acquire past the caller's deadline = %v; want context.DeadlineExceeded, not ErrUnavailable", err)
		}

		var cause error
		fb := New(h, "k", 1, time.Second, WithTimeout(50*time.Millisecond),
			WithFallback(1, func(_ bool, err error) { cause = err }))
		if _, err := fb.TryAcquire(ctx, 1); err != nil {
			t.Errorf("TryAcquire with a fallback: %v", err)
		}
		if cause == nil || errors.Is(cause, context.DeadlineExceeded) || !errors.As(cause, &timeout) {
			t.Errorf("cause of the switch = %v; want the limiter's timeout, not context.DeadlineExceeded", cause)
		}
	})
}
