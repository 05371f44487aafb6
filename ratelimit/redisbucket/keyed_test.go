package redisbucket

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/redis/go-redis/v9"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// What Keyed.Key returns plugs into pool, the throttle wrappers and
// throttle.Transport.
var (
	_ ratelimit.Acquirer     = (*Limiter)(nil)
	_ throttle.ContextPauser = (*Limiter)(nil)
)

// testPrefix returns a prefix no other test, or run, uses, and deletes
// every key under it when the test ends.
func testPrefix(t testing.TB, rdb redis.Cmdable) string {
	t.Helper()
	prefix := fmt.Sprintf("drip:test:%s:%016x:", t.Name(), rand.Uint64())
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	return prefix
}

// onMockTimeKeyed makes the scripts of k's keys read the time from c, as
// onMockTime does for a Limiter.
func onMockTimeKeyed(k *Keyed, c clock.Clock) *Keyed {
	l := onMockTime(&k.proto, c)
	k.proto.script, k.proto.serverTime = l.script, l.serverTime
	return k
}

// acquireKeyAt starts k.Acquire(ctx, key, amount), and returns a channel
// that gets when it returned and its error.
func acquireKeyAt(ctx context.Context, c *clocktest.Clock, k *Keyed, key string, amount float64) <-chan result {
	ch := make(chan result, 1)
	go func() {
		err := k.Acquire(ctx, key, amount)
		ch <- result{c.Elapsed(), err}
	}()
	c.Settle()
	return ch
}

// TestKeyedDripTables checks the admission times of the aiolimiter docs'
// examples on two keys at once, callers arriving on both 10ms apart: each
// key goes by the table on its own, and a third key stays empty.
func TestKeyedDripTables(t *testing.T) {
	addr := redisAddr(t)
	for _, d := range clocktest.Drips {
		t.Run(d.Name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				k := onMockTimeKeyed(NewKeyed(rdb, testPrefix(t, rdb), d.MaxRate, d.Period, WithClock(c)), c)
				keys := []string{"10.0.0.1", "10.0.0.2"}
				chs := make([][]<-chan result, len(keys))
				for i := range d.Want {
					c.AdvanceTo(t, time.Duration(i)*d.Gap)
					for j, key := range keys {
						chs[j] = append(chs[j], acquireKeyAt(ctx, c, k, key, 1))
					}
				}
				for j, key := range keys {
					for i, ch := range chs[j] {
						r := waitFor(t, c, ch, 20*time.Second)
						if r.err != nil || r.at != d.Want[i] {
							t.Errorf("key %s: caller %d admitted at %v (%v), want %v", key, i, r.at, r.err, d.Want[i])
						}
					}
				}
				if lv, err := k.Level(ctx, "10.0.0.3"); lv != 0 || err != nil {
					t.Errorf("Level of a key never used = %v, %v; want 0", lv, err)
				}
			})
		})
	}
}

// TestKeyedKeysApart checks that each key is a bucket of its own, at the
// Redis key prefix+key, holding a bucket as a Limiter's key does, and that
// a key's view and the Keyed's methods share it.
func TestKeyedKeysApart(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		prefix := testPrefix(t, rdb)
		k := onMockTimeKeyed(NewKeyed(rdb, prefix, 3, time.Minute, WithClock(c)), c)
		if k.Prefix() != prefix || k.MaxRate() != 3 || k.Period() != time.Minute {
			t.Errorf("Prefix, MaxRate, Period = %q, %v, %v", k.Prefix(), k.MaxRate(), k.Period())
		}
		try := func(key string, amount float64, want bool) {
			t.Helper()
			if ok, err := k.TryAcquire(ctx, key, amount); ok != want || err != nil {
				t.Errorf("TryAcquire(%q, %v) = %v, %v; want %v", key, amount, ok, err, want)
			}
		}
		try("a", 3, true)
		try("a", 0.001, false)
		try("b", 1, true)
		try("", 2, true) // the empty key is a key too: the Redis key is the prefix
		if ok, err := k.HasCapacity(ctx, "b", 2); !ok || err != nil {
			t.Errorf("HasCapacity(b, 2) = %v, %v; want true", ok, err)
		}
		for key, want := range map[string]float64{"a": 3, "b": 1, "": 2, "c": 0} {
			if lv, err := k.Level(ctx, key); lv != want || err != nil {
				t.Errorf("Level(%q) = %v, %v; want %v", key, lv, err, want)
			}
		}
		for _, key := range []string{"a", "b", ""} {
			v, err := rdb.Get(ctx, prefix+key).Result()
			if err != nil || len(v) != 56 {
				t.Errorf("Redis key %q holds %d bytes (%v); want a bucket of 56", prefix+key, len(v), err)
			}
		}
		if n := rdb.Exists(ctx, prefix+"c").Val(); n != 0 {
			t.Errorf("Level on a key never used wrote its Redis key")
		}
		view := k.Key("b")
		if view.Key() != prefix+"b" || view.MaxRate() != 3 {
			t.Errorf("Key(b): Redis key %q, MaxRate %v", view.Key(), view.MaxRate())
		}
		if ok, err := view.TryAcquire(ctx, 2); !ok || err != nil {
			t.Errorf("Key(b).TryAcquire(2) = %v, %v; want true", ok, err)
		}
		try("b", 0.001, false)
		c.AdvanceTo(t, 20*time.Second) // a unit drains
		try("a", 1, true)
		try("a", 0.001, false)
	})
}

// TestKeyedAcrossProcesses checks that two Keyed values on one prefix, as
// two replicas would have, share each key's bucket, turns and give-backs:
// the package documentation's worked example on one key, while another
// key goes on by itself; and that another prefix shares nothing.
func TestKeyedAcrossProcesses(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdbA, rdbB := newClient(t, addr), newClient(t, addr)
		prefix := testPrefix(t, rdbA)
		a := onMockTimeKeyed(NewKeyed(rdbA, prefix, 4, 8*time.Second, WithClock(c)), c)
		b := onMockTimeKeyed(NewKeyed(rdbB, prefix, 4, 8*time.Second, WithClock(c)), c)
		other := onMockTimeKeyed(NewKeyed(rdbB, testPrefix(t, rdbB), 4, 8*time.Second, WithClock(c)), c)
		const x, y = "client-x", "client-y"

		if ok, err := a.TryAcquire(ctx, x, 3); !ok || err != nil {
			t.Fatalf("A TryAcquire(x, 3) at 0s = %v, %v; want true", ok, err)
		}
		if err := b.Acquire(ctx, x, 1); err != nil {
			t.Fatalf("B Acquire(x, 1) at 0s: %v", err)
		}
		if ok, err := other.TryAcquire(ctx, x, 4); !ok || err != nil {
			t.Errorf("TryAcquire(x, 4) under another prefix = %v, %v; want true", ok, err)
		}
		bTurn := acquireKeyAt(ctx, c, b, x, 1)
		c.AdvanceTo(t, 500*time.Millisecond)
		actx, cancel := context.WithCancel(ctx)
		aTurn := acquireKeyAt(actx, c, a, x, 1)
		if ok, err := b.TryAcquire(ctx, y, 4); !ok || err != nil {
			t.Errorf("B TryAcquire(y, 4) at 0.5s = %v, %v; want true: y is a bucket of its own", ok, err)
		}
		yTurn := acquireKeyAt(ctx, c, a, y, 1) // at 2.5s
		c.AdvanceTo(t, time.Second)
		if lv, err := a.Level(ctx, x); lv != 5.5 || err != nil {
			t.Errorf("Level(x) at 1s = %v, %v; want 5.5", lv, err)
		}
		cancel() // A's turn on x goes back: only y changed since it was reserved
		c.Settle()
		if r := <-aTurn; !errors.Is(r.err, context.Canceled) {
			t.Errorf("cancelled A returned %v; want context.Canceled", r.err)
		}
		if lv, err := b.Level(ctx, x); lv != 4.5 || err != nil {
			t.Errorf("Level(x) after the give-back = %v, %v; want 4.5", lv, err)
		}
		next := acquireKeyAt(ctx, c, b, x, 1)
		for _, w := range []struct {
			name string
			ch   <-chan result
			at   time.Duration
		}{{"B's second on x", bTurn, 2 * time.Second}, {"A's on y", yTurn, 2500 * time.Millisecond}, {"B's third on x, in A's turn", next, 4 * time.Second}} {
			if r := waitFor(t, c, w.ch, time.Minute); r.err != nil || r.at != w.at {
				t.Errorf("%s returned %v at %v; want nil at %v", w.name, r.err, r.at, w.at)
			}
		}
	})
}

// TestKeyedCancelGivesBack checks the give-backs of cancelled turns on a
// key, by nonce, while turns on another key come and go in between.
func TestKeyedCancelGivesBack(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		k := onMockTimeKeyed(NewKeyed(rdb, testPrefix(t, rdb), 1, time.Second, WithClock(c)), c)
		level := func(key string, want float64) {
			t.Helper()
			if lv, err := k.Level(ctx, key); lv != want || err != nil {
				t.Errorf("Level(%q) at %v = %v, %v; want %v", key, c.Elapsed(), lv, err, want)
			}
		}
		waiter := func(key string) (context.CancelFunc, <-chan result) {
			wctx, cancel := context.WithCancel(ctx)
			return cancel, acquireKeyAt(wctx, c, k, key, 1)
		}
		cancelled := func(cancel context.CancelFunc, ch <-chan result) {
			t.Helper()
			cancel()
			c.Settle()
			if r := <-ch; !errors.Is(r.err, context.Canceled) {
				t.Errorf("cancelled waiter returned %v", r.err)
			}
		}
		for _, key := range []string{"x", "y"} {
			if err := k.Acquire(ctx, key, 1); err != nil {
				t.Fatal(err)
			}
		}
		cx1, wx1 := waiter("x") // x: turn at 1s
		cx2, wx2 := waiter("x") // x: turn at 2s
		cy1, wy1 := waiter("y") // y: turn at 1s
		level("x", 3)
		cancelled(cx2, wx2) // the last on x: back, though y changed since
		level("x", 2)
		cancelled(cx1, wx1) // now the last on x: back
		level("x", 1)
		level("y", 2)
		cancelled(cy1, wy1)
		level("y", 1)
		next := acquireKeyAt(ctx, c, k, "x", 1)
		if r := waitFor(t, c, next, time.Minute); r.err != nil || r.at != time.Second {
			t.Errorf("the next waiter on x returned %v at %v; want nil at 1s", r.err, r.at)
		}
	})
}

// TestKeyedRestoresLostKey checks that a key that Redis lost while it
// should hold a bucket comes back full, behind the turns the Keyed knows
// of, as a Limiter's does.
func TestKeyedRestoresLostKey(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		prefix := testPrefix(t, rdb)
		k := onMockTimeKeyed(NewKeyed(rdb, prefix, 2, 2*time.Second, WithClock(c)), c)
		if ok, err := k.TryAcquire(ctx, "a", 2); !ok || err != nil {
			t.Fatalf("TryAcquire(a, 2) = %v, %v", ok, err)
		}
		w := acquireKeyAt(ctx, c, k, "a", 1) // turn at 1s
		c.AdvanceTo(t, 500*time.Millisecond)
		if err := rdb.Del(ctx, prefix+"a").Err(); err != nil {
			t.Fatal(err)
		}
		if ok, err := k.TryAcquire(ctx, "a", 0.001); ok || err != nil {
			t.Errorf("TryAcquire(a, 0.001) after the loss = %v, %v; want false", ok, err)
		}
		if lv, err := k.Level(ctx, "a"); lv != 2.5 || err != nil {
			t.Errorf("Level(a) after the loss = %v, %v; want 2.5, as before it", lv, err)
		}
		next := acquireKeyAt(ctx, c, k, "a", 1)
		for i, ch := range []<-chan result{w, next} {
			want := time.Duration(i+1) * time.Second
			if r := waitFor(t, c, ch, time.Minute); r.err != nil || r.at != want {
				t.Errorf("caller %d admitted at %v (%v); want %v", i, r.at, r.err, want)
			}
		}
	})
}

// TestKeyedSetRate checks that SetRate changes every key: waiters on any
// key whose amount exceeds the new capacity fail, the others keep their
// turns; a key's units stay, rescaled by its next call, before which it
// drains at its old rate; and a key's view changes the rate of them all,
// rescaling its own key at once.
func TestKeyedSetRate(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		k := onMockTimeKeyed(NewKeyed(rdb, testPrefix(t, rdb), 4, 8*time.Second, WithClock(c)), c)
		level := func(key string, want float64) {
			t.Helper()
			if lv, err := k.Level(ctx, key); lv != want || err != nil {
				t.Errorf("Level(%q) at %v = %v, %v; want %v", key, c.Elapsed(), lv, err, want)
			}
		}
		for _, key := range []string{"a", "b"} {
			if ok, err := k.TryAcquire(ctx, key, 4); !ok || err != nil {
				t.Fatalf("TryAcquire(%s, 4) = %v, %v", key, ok, err)
			}
		}
		big := acquireKeyAt(ctx, c, k, "a", 3)   // turn at 6s
		small := acquireKeyAt(ctx, c, k, "b", 1) // turn at 2s
		k.SetRate(2, 4*time.Second)              // the same 2s a unit, capacity 2
		c.Settle()
		if k.MaxRate() != 2 || k.Period() != 4*time.Second {
			t.Errorf("after SetRate: %v per %v", k.MaxRate(), k.Period())
		}
		if r := <-big; !errors.Is(r.err, ratelimit.ErrExceedsCapacity) || r.at != 0 {
			t.Errorf("a waiter for 3 on a, after SetRate to a capacity of 2, returned %v at %v; want ErrExceedsCapacity at 0s", r.err, r.at)
		}
		// Its give-back takes back what 3 units cost at the new rate, a
		// capacity's worth: 2 units. The third stays, and drains unused.
		level("a", 5)
		if r := waitFor(t, c, small, time.Minute); r.err != nil || r.at != 2*time.Second {
			t.Errorf("the waiter for 1 on b returned %v at %v; want nil at 2s", r.err, r.at)
		}
		if err := k.Key("a").SetRate(ctx, 4, 4*time.Second); err != nil { // 1s a unit, for every key
			t.Fatal(err)
		}
		if k.MaxRate() != 4 || k.Period() != 4*time.Second {
			t.Errorf("after Key(a).SetRate: the Keyed's rate is %v per %v", k.MaxRate(), k.Period())
		}
		level("a", 4) // rescaled by SetRate: its 4 units stay
		c.AdvanceTo(t, 4*time.Second)
		level("a", 2) // drained at the new rate
		// b held 4 units at 2s; no call reached it until now, so it drained
		// at its old rate, 2s a unit, and its 3 units stay.
		level("b", 3)
		c.AdvanceTo(t, 5*time.Second)
		level("b", 2)
	})
}

// TestKeyedPause checks that a pause holds on its key only, also on a key
// never used before, whose Redis key it writes, to expire once the pause
// has ended.
func TestKeyedPause(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		prefix := testPrefix(t, rdb)
		k := onMockTimeKeyed(NewKeyed(rdb, prefix, 1, time.Minute, WithClock(c)), c)
		if err := k.Pause(ctx, "new", 2*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := k.Pause(ctx, "other", 0); err != nil {
			t.Fatal(err)
		}
		if n := rdb.Exists(ctx, prefix+"new").Val(); n != 1 {
			t.Errorf("Pause on a key never used did not write its Redis key")
		}
		if n := rdb.Exists(ctx, prefix+"other").Val(); n != 0 {
			t.Errorf("Pause(0) wrote its Redis key")
		}
		if ok, err := k.TryAcquire(ctx, "other", 1); !ok || err != nil {
			t.Errorf("TryAcquire on another key during the pause = %v, %v; want true", ok, err)
		}
		w := acquireKeyAt(ctx, c, k, "new", 1)
		if r := waitFor(t, c, w, time.Minute); r.err != nil || r.at != 2*time.Second {
			t.Errorf("Acquire on the paused key returned %v at %v; want nil at 2s", r.err, r.at)
		}
	})
}

// TestKeyedKeysExpire checks, with the server's own clock, that each key
// expires once its bucket has drained, and that a pause keeps it until
// the pause has ended.
func TestKeyedKeysExpire(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	rdb := newClient(t, addr)
	prefix := testPrefix(t, rdb)
	k := NewKeyed(rdb, prefix, 1000, time.Second) // a unit drains in 1ms
	if ok, err := k.TryAcquire(ctx, "a", 50); !ok || err != nil {
		t.Fatalf("TryAcquire(a, 50) = %v, %v", ok, err)
	}
	// A capacity of one unit, so that nothing is left in the bucket at the
	// end of a pause.
	one := NewKeyed(rdb, prefix, 1, time.Millisecond)
	if err := one.Pause(ctx, "b", 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The keys live until their buckets have drained, plus the 3ms they
	// linger, so that their expiry is never taken for a loss.
	if ttl := rdb.PTTL(ctx, prefix+"a").Val(); ttl <= 0 || ttl > 53*time.Millisecond {
		t.Errorf("PTTL of a %v; want at most 53ms", ttl)
	}
	if ttl := rdb.PTTL(ctx, prefix+"b").Val(); ttl <= 0 || ttl > 33*time.Millisecond {
		t.Errorf("PTTL of b %v; want at most 33ms, the pause and 3ms", ttl)
	}
	for i := 0; rdb.Exists(ctx, prefix+"a", prefix+"b").Val() != 0; i++ {
		if i == 1000 {
			t.Fatal("the keys outlived their buckets by 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeyedBadInput checks that refused amounts give ratelimit's errors,
// make no round trip and keep nothing of the key, and that NewKeyed and
// SetRate panic on what New refuses, and on WithFallback.
func TestKeyedBadInput(t *testing.T) {
	addr := redisAddr(t)
	rdb := newClient(t, addr)
	var n counter
	rdb.AddHook(&n)
	k := NewKeyed(rdb, testPrefix(t, rdb), 10, time.Second)
	ctx := context.Background()
	tests := []struct {
		amount float64
		want   error
		text   string
	}{
		{11, ratelimit.ErrExceedsCapacity, "redisbucket: acquire 11 exceeds capacity 10"},
		{-1, ratelimit.ErrInvalidAmount, "redisbucket: acquire -1: amount must be a finite number >= 0"},
		{math.NaN(), ratelimit.ErrInvalidAmount, "redisbucket: acquire NaN: amount must be a finite number >= 0"},
		{math.Inf(1), ratelimit.ErrInvalidAmount, "redisbucket: acquire +Inf: amount must be a finite number >= 0"},
	}
	checks := map[string]func(context.Context, string, float64) (bool, error){"TryAcquire": k.TryAcquire, "HasCapacity": k.HasCapacity}
	for _, tt := range tests {
		if err := k.Acquire(ctx, "a", tt.amount); !errors.Is(err, tt.want) || err.Error() != tt.text {
			t.Errorf("Acquire(a, %v) = %v; want %q", tt.amount, err, tt.text)
		}
		for name, f := range checks {
			if ok, err := f(ctx, "a", tt.amount); ok || !errors.Is(err, tt.want) || err.Error() != tt.text {
				t.Errorf("%s(a, %v) = %v, %v; want false, %q", name, tt.amount, ok, err, tt.text)
			}
		}
	}
	if err := k.Acquire(ctx, "a", 0); err != nil {
		t.Errorf("Acquire(a, 0) = %v", err)
	}
	for name, f := range checks {
		if ok, err := f(ctx, "a", 0); !ok || err != nil {
			t.Errorf("%s(a, 0) = %v, %v; want true", name, ok, err)
		}
	}
	if err := k.Pause(ctx, "a", -time.Second); err != nil {
		t.Errorf("Pause(a, -1s) = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := k.Acquire(cctx, "a", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context = %v", err)
	}
	if got := n.n.Load(); got != 0 {
		t.Errorf("%d round trips for refused amounts, amounts of 0 and a context cancelled; want 0", got)
	}
	if len(k.seen) != 0 {
		t.Errorf("%d keys kept for calls that made no round trip; want 0", len(k.seen))
	}

	panics := []struct {
		name string
		f    func()
		want string
	}{
		{"nil client", func() { NewKeyed(nil, "p:", 1, time.Second) }, "redisbucket: NewKeyed: nil client"},
		{"empty prefix", func() { NewKeyed(rdb, "", 1, time.Second) }, "redisbucket: NewKeyed: empty prefix"},
		{"zero rate", func() { NewKeyed(rdb, "p:", 0, time.Second) }, "redisbucket: NewKeyed: maxRate 0 must be a finite number > 0"},
		{"long period", func() { NewKeyed(rdb, "p:", 1, 1<<56) }, "redisbucket: NewKeyed: period 20015h59m54.037927936s must be > 0 and at most 10007h59m57.018963968s"},
		{"fine rate", func() { NewKeyed(rdb, "p:", 2, time.Nanosecond) }, "redisbucket: NewKeyed: maxRate 2 per 1ns: a unit would take 0.5 ns, less than the limiter's resolution of 1 ns"},
		{"fallback", func() { NewKeyed(rdb, "p:", 1, time.Second, WithFallback(0.5, nil)) }, "redisbucket: NewKeyed: WithFallback is not supported: it needs a local limiter per key"},
		{"SetRate", func() { k.SetRate(math.Inf(1), time.Second) }, "redisbucket: SetRate: maxRate +Inf must be a finite number > 0"},
	}
	for _, tt := range panics {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != tt.want {
					t.Errorf("panic %v; want %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
	if k.MaxRate() != 10 || k.Period() != time.Second {
		t.Errorf("a refused SetRate changed the rate to %v per %v", k.MaxRate(), k.Period())
	}
}

// TestKeyedForgets checks that a Keyed keeps at most its memory's worth of
// sightings, forgetting first those that have run out, then those that run
// out first; and that a key keeps its sighting while it stays.
func TestKeyedForgets(t *testing.T) {
	k := NewKeyed(newClient(t, "127.0.0.1:1"), "p:", 1, time.Second)
	k.memory = 4
	k.latest.record(k.latest.send(), 1000)
	ends := map[string]float64{"live1": 5000, "dead1": 999, "live2": 3000, "dead2": 0}
	for key, end := range ends {
		k.Key(key).seen.record(1000, end, 1)
	}
	kept := k.Key("live1").seen
	if len(k.seen) != 4 || kept.last() != 5000 {
		t.Fatalf("%d sightings, live1 ends at %v; want 4, and 5000", len(k.seen), kept.last())
	}
	k.Key("new1").seen.record(1000, 4000, 1)
	k.Key("new2").seen.record(1000, 4000, 1)
	for _, key := range []string{"dead1", "dead2"} {
		if _, ok := k.seen["p:"+key]; ok {
			t.Errorf("%s, which ran out, is still kept among %d", key, len(k.seen))
		}
	}
	// All live now: the next new key costs the one that runs out first
	// among those looked at, which, with 4, is all of them.
	k.Key("new3")
	if _, ok := k.seen["p:live2"]; ok || len(k.seen) != 4 {
		t.Errorf("kept %d, live2 among them: %v; want live2, which ran out first, forgotten", len(k.seen), ok)
	}
	if k.Key("live1").seen != kept {
		t.Errorf("live1's sighting was replaced")
	}
}

// TestKeyedConcurrent runs goroutines on overlapping keys, with a memory
// smaller than the keys in use, and checks that each key admits no more
// than its bucket allows and that no waiter is lost.
func TestKeyedConcurrent(t *testing.T) {
	addr := redisAddr(t)
	rdb := newClient(t, addr)
	k := NewKeyed(rdb, testPrefix(t, rdb), 5, 100*time.Millisecond)
	k.memory = 2
	keys := []string{"a", "b", "c", "d"}
	const run = 300 * time.Millisecond
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var admitted [4]atomic.Int64
	var wg sync.WaitGroup
	var errs sync.Map
	for g := range 12 {
		wg.Go(func() {
			for i := g; ctx.Err() == nil; i++ {
				j := i % len(keys)
				var err error
				if g%2 == 0 {
					var ok bool
					if ok, err = k.TryAcquire(ctx, keys[j], 1); ok {
						admitted[j].Add(1)
					}
				} else if err = k.Acquire(ctx, keys[j], 1); err == nil {
					admitted[j].Add(1)
				}
				// A turn past the end of the run fails at once, as it should.
				if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
					errs.Store(err.Error(), true)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	errs.Range(func(e, _ any) bool { t.Errorf("error: %v", e); return true })
	// At most the burst and the rate over the run, and the units of
	// turns that came due as the run ended, within a unit of slack.
	most := 5 + 5*float64(elapsed)/float64(100*time.Millisecond) + 1
	for j, key := range keys {
		if got := admitted[j].Load(); got == 0 || float64(got) > most {
			t.Errorf("key %s: %d admitted in %v; want 1 to %.0f", key, got, elapsed, most)
		}
	}
	if len(k.seen) > 2 {
		t.Errorf("%d sightings kept; want at most 2", len(k.seen))
	}
}
