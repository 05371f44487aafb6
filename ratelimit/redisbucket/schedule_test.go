package redisbucket

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/redis/go-redis/v9"
)

// TestCostsBelowOneNanosecond checks that no amount slips through a
// rounding: on rates whose unit takes a nanosecond or a fraction more, a
// full bucket admits nothing more, however small the pieces, and from
// empty the pieces fill it up to the capacity and not past it, short of it
// by at most the nanosecond that each admission may be charged beyond its
// exact cost.
func TestCostsBelowOneNanosecond(t *testing.T) {
	addr := redisAddr(t)
	tests := []struct {
		maxRate float64
		period  time.Duration
		piece   float64
	}{
		{1, time.Nanosecond, 0.5},
		{1, time.Nanosecond, 1e-6},
		{2, 3 * time.Nanosecond, 1}, // 1.5 ns a unit
		{1e9 / 1.5, time.Second, 1},
		{3, time.Second, 1}, // 333333333.3 ns a unit
		{7, time.Second, 0.25},
		{2.7, time.Second, 0.3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v per %v by %v", tt.maxRate, tt.period, tt.piece), func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				lim := onMockTime(New(rdb, testKey(t, rdb), tt.maxRate, tt.period, WithClock(c)), c)
				try := func(amount float64) bool {
					t.Helper()
					ok, err := lim.TryAcquire(ctx, amount)
					if err != nil {
						t.Fatal(err)
					}
					return ok
				}
				if !try(tt.maxRate) {
					t.Fatal("an empty bucket refused its capacity")
				}
				for i := range 100 {
					if try(tt.piece) {
						t.Fatalf("a full bucket admitted %v more (try %d)", tt.piece, i)
					}
				}
				// The clock moves in whole microseconds, as TIME does.
				c.Advance(tt.period.Round(time.Microsecond) + time.Microsecond)
				admitted := max(0, tt.maxRate-1000*tt.piece)
				calls := 1.0
				if !try(admitted) {
					t.Fatalf("an empty bucket refused %v", admitted)
				}
				for ; try(tt.piece); calls++ {
					admitted += tt.piece
					if admitted > tt.maxRate {
						t.Fatalf("%v admitted at one instant, above the capacity %v", admitted, tt.maxRate)
					}
				}
				unitNs := float64(tt.period) / tt.maxRate
				if lack := tt.maxRate - admitted; lack > tt.piece+(calls+1)/unitNs {
					t.Errorf("only %v admitted from empty in %v calls, capacity %v", admitted, calls, tt.maxRate)
				}
			})
		})
	}
}

// TestUnrepresentableRates checks that New and SetRate refuse, naming the
// values, a rate whose unit takes less than a nanosecond or no finite
// time, and accept the finest that still take one.
func TestUnrepresentableRates(t *testing.T) {
	rdb := newClient(t, "127.0.0.1:1")
	tests := []struct {
		maxRate float64
		period  time.Duration
		want    string
	}{
		{1e12, time.Second, "maxRate 1e+12 per 1s: a unit would take 0.001 ns, less than the limiter's resolution of 1 ns"},
		{2, time.Nanosecond, "maxRate 2 per 1ns: a unit would take 0.5 ns, less than the limiter's resolution of 1 ns"},
		{1e-300, time.Second, "maxRate 1e-300 per 1s: a unit would take longer than any time the limiter can count"},
	}
	panicked := func(f func()) (msg string) {
		defer func() {
			if r := recover(); r != nil {
				msg = fmt.Sprint(r)
			}
		}()
		f()
		return ""
	}
	for _, tt := range tests {
		if got, want := panicked(func() { New(rdb, "k", tt.maxRate, tt.period) }), "redisbucket: New: "+tt.want; got != want {
			t.Errorf("New(%v, %v) panicked with %q; want %q", tt.maxRate, tt.period, got, want)
		}
		lim := New(rdb, "k", 2, time.Second)
		if got, want := panicked(func() { _ = lim.SetRate(context.Background(), tt.maxRate, tt.period) }), "redisbucket: SetRate: "+tt.want; got != want {
			t.Errorf("SetRate(%v, %v) panicked with %q; want %q", tt.maxRate, tt.period, got, want)
		}
		if lim.MaxRate() != 2 || lim.Period() != time.Second {
			t.Errorf("a refused SetRate changed the rate to %v per %v", lim.MaxRate(), lim.Period())
		}
	}
	for _, ok := range []struct {
		maxRate float64
		period  time.Duration
	}{{1e9, time.Second}, {1, time.Nanosecond}, {1e-200, time.Second}} {
		if got := panicked(func() { New(rdb, "k", ok.maxRate, ok.period) }); got != "" {
			t.Errorf("New(%v, %v) panicked: %s", ok.maxRate, ok.period, got)
		}
	}
}

// TestPauseResumesAtD checks that after Pause(d) nothing is admitted for d,
// not even a fraction of a unit, that one unit fits at d, and that the
// steady rate follows, with no burst; and that Pause never lowers the
// level.
func TestPauseResumesAtD(t *testing.T) {
	addr := redisAddr(t)
	tests := []struct {
		name    string
		maxRate float64
		period  time.Duration
		full    bool // the bucket is full when Pause is called
		pause   time.Duration
		amount  float64
		want    []time.Duration
	}{
		{"New(10, 1s) Pause(5s)", 10, time.Second, false, 5 * time.Second, 1,
			[]time.Duration{5 * time.Second, 5100 * time.Millisecond, 5200 * time.Millisecond}},
		{"New(1, 1m) Pause(2s)", 1, time.Minute, false, 2 * time.Second, 1,
			[]time.Duration{2 * time.Second, 62 * time.Second}},
		{"New(1, 1m) full, Pause(2s)", 1, time.Minute, true, 2 * time.Second, 1,
			[]time.Duration{time.Minute, 2 * time.Minute}},
		{"New(0.5, 1s) Pause(3s)", 0.5, time.Second, false, 3 * time.Second, 0.5,
			[]time.Duration{3 * time.Second, 4 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				lim := onMockTime(New(rdb, testKey(t, rdb), tt.maxRate, tt.period, WithClock(c)), c)
				if tt.full {
					if ok, err := lim.TryAcquire(ctx, tt.maxRate); !ok || err != nil {
						t.Fatalf("TryAcquire(%v) = %v, %v", tt.maxRate, ok, err)
					}
				}
				if err := lim.Pause(ctx, tt.pause); err != nil {
					t.Fatal(err)
				}
				c.AdvanceTo(t, tt.pause-time.Microsecond)
				if ok, err := lim.TryAcquire(ctx, 0.001); ok || err != nil {
					t.Fatalf("TryAcquire(0.001) a microsecond before the pause ends = %v, %v; want false", ok, err)
				}
				chs := make([]<-chan result, len(tt.want))
				for i := range chs {
					chs[i] = acquireAt(ctx, c, lim, tt.amount)
				}
				for i, ch := range chs {
					if r := waitFor(t, c, ch, 3*time.Minute); r.err != nil || r.at != tt.want[i] {
						t.Errorf("caller %d admitted at %v (%v); want %v", i, r.at, r.err, tt.want[i])
					}
				}
			})
		})
	}
}

// retrying is a Scripter that runs every cancel twice, as go-redis runs a
// command again when the reply to the first run is lost, and calls between
// in between.
type retrying struct {
	redis.Scripter
	between func()
}

func (r *retrying) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	cmd := r.Scripter.EvalSha(ctx, sha, keys, args...)
	if len(args) > 0 && args[0] == opCancel && r.between != nil {
		r.between()
		cmd = r.Scripter.EvalSha(ctx, sha, keys, args...)
	}
	return cmd
}

// TestCancelRunTwice checks that a cancel that runs twice gives back its
// own reservation once, and not the one that another client made in
// between, even though that one brought the bucket back to the same tat.
func TestCancelRunTwice(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdbA, rdbB := newClient(t, addr), newClient(t, addr)
		key := testKey(t, rdbA)
		ra := &retrying{Scripter: rdbA}
		a := onMockTime(New(ra, key, 1, time.Second, WithClock(c)), c)
		reserved := make(chan struct{})
		hb := &hooked{Scripter: rdbB}
		hb.after = func() { close(reserved) }
		b := onMockTime(New(hb, key, 1, time.Second, WithClock(c)), c)

		if err := a.Acquire(ctx, 1); err != nil {
			t.Fatal(err)
		}
		actx, cancel := context.WithCancel(ctx)
		cancelled := acquireAt(actx, c, a, 1) // turn at 1s
		c.AdvanceTo(t, 500*time.Millisecond)
		bTurn := make(chan result, 1)
		ra.between = func() {
			ra.between = nil
			go func() {
				err := b.Acquire(ctx, 1) // turn at 1s, once A's is back
				bTurn <- result{c.Elapsed(), err}
			}()
			<-reserved
		}
		cancel()
		c.Settle()
		if r := <-cancelled; r.err != context.Canceled {
			t.Fatalf("cancelled Acquire returned %v", r.err)
		}
		if lv, err := a.Level(ctx); lv != 1.5 || err != nil {
			t.Errorf("Level at 500ms = %v, %v; want 1.5: half a unit in the bucket, and B's", lv, err)
		}
		next := acquireAt(ctx, c, a, 1)
		if r := waitFor(t, c, bTurn, time.Minute); r.err != nil || r.at != time.Second {
			t.Errorf("B admitted at %v (%v); want 1s", r.at, r.err)
		}
		if r := waitFor(t, c, next, time.Minute); r.err != nil || r.at != 2*time.Second {
			t.Errorf("the caller after B admitted at %v (%v); want 2s", r.at, r.err)
		}
	})
}

// TestDeadlinesOnTheLimitersClock checks that a deadline set on the
// limiter's clock is judged on that clock, here one that reads long before
// the real time: the round trip still has the time the caller has left,
// and a failed one still goes to the fallback.
func TestDeadlinesOnTheLimitersClock(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		c.Set(time.Date(1990, time.January, 1, 0, 0, 0, 0, time.UTC))
		ctx := context.Background()
		dctx, cancel := c.WithTimeout(ctx, time.Minute)
		defer cancel()
		rdb := newClient(t, addr)
		h := &hooked{Scripter: rdb}
		var local bool
		lim := onMockTime(New(h, testKey(t, rdb), 1, time.Second, WithClock(c),
			WithFallback(1, func(l bool, _ error) { local = l })), c)
		if err := lim.Acquire(dctx, 1); err != nil {
			t.Errorf("Acquire with a minute left on the limiter's clock: %v", err)
		}
		if ok, err := lim.TryAcquire(dctx, 1); ok || err != nil {
			t.Errorf("TryAcquire on a full bucket = %v, %v; want false", ok, err)
		}
		h.down.Store(true)
		if _, err := lim.TryAcquire(dctx, 1); err != nil || !local {
			t.Errorf("TryAcquire with Redis down: %v (on the fallback: %v); want the fallback's answer", err, local)
		}
	})
}

// TestRestoresLostKey checks, on the mocked clock, that a key lost while
// it should hold a bucket comes back full and behind the reservations this
// limiter knows of, and that a key that drained and expired reads empty.
func TestRestoresLostKey(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lim := onMockTime(New(rdb, key, 2, 2*time.Second, WithClock(c)), c)
		lose := func() {
			t.Helper()
			if err := rdb.Del(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if ok, err := lim.TryAcquire(ctx, 2); !ok || err != nil {
			t.Fatalf("TryAcquire(2) = %v, %v", ok, err)
		}
		waiters := []<-chan result{acquireAt(ctx, c, lim, 1), acquireAt(ctx, c, lim, 1)} // turns at 1s, 2s
		c.AdvanceTo(t, 500*time.Millisecond)
		lose()
		if ok, err := lim.TryAcquire(ctx, 0.001); ok || err != nil {
			t.Errorf("TryAcquire(0.001) after the loss = %v, %v; want false", ok, err)
		}
		if lv, err := lim.Level(ctx); lv != 3.5 || err != nil {
			t.Errorf("Level after the loss = %v, %v; want 3.5, as before it", lv, err)
		}
		lose()
		next := acquireAt(ctx, c, lim, 1)
		for i, w := range append(waiters, next) {
			want := time.Duration(i+1) * time.Second
			if r := waitFor(t, c, w, time.Minute); r.err != nil || r.at != want {
				t.Errorf("caller %d admitted at %v (%v); want %v", i, r.at, r.err, want)
			}
		}
		c.AdvanceTo(t, 5*time.Second) // the bucket has drained
		lose()
		if ok, err := lim.TryAcquire(ctx, 2); !ok || err != nil {
			t.Errorf("TryAcquire(2) on a bucket that drained before its key went = %v, %v; want true", ok, err)
		}
	})
}

// TestNoBurstAtEndOfPauseAfterSetRate checks that a pause ends as Pause
// documents at whatever rate is set by then: one unit fits, then the steady
// rate, with no burst, also after SetRate to a faster rate during the
// pause; and that Level during the pause counts it at the new rate, as
// ratelimit's does.
func TestNoBurstAtEndOfPauseAfterSetRate(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		l := onMockTime(New(rdb, testKey(t, rdb), 1, 10*time.Second, WithClock(c)), c)
		if err := l.Pause(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := l.SetRate(ctx, 10, time.Second); err != nil {
			t.Fatal(err)
		}
		// 10s at 10 a second, and one unit short of full at its end.
		if lv, err := l.Level(ctx); lv != 109 || err != nil {
			t.Errorf("Level after SetRate during the pause = %v, %v; want 109", lv, err)
		}
		c.AdvanceTo(t, 10*time.Second-time.Microsecond)
		if ok, err := l.HasCapacity(ctx, 0.001); ok || err != nil {
			t.Fatalf("HasCapacity(0.001) during the pause = %v, %v; want false", ok, err)
		}
		c.AdvanceTo(t, 10*time.Second)
		n := 0
		for n < 20 {
			ok, err := l.TryAcquire(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			n++
		}
		if n != 1 {
			t.Errorf("%d units admitted at the end of the pause, want 1 then the steady rate", n)
		}
		c.AdvanceTo(t, 10100*time.Millisecond)
		if ok, err := l.TryAcquire(ctx, 1); !ok || err != nil {
			t.Errorf("TryAcquire(1) a unit's time after the pause ended = %v, %v; want true", ok, err)
		}
		if ok, err := l.HasCapacity(ctx, 0.001); ok || err != nil {
			t.Errorf("HasCapacity(0.001) after that = %v, %v; want false: the steady rate", ok, err)
		}
	})
}

// TestReservedDuringPauseAfterSetRate checks that the units of a turn
// reserved during a pause stay on top of the bucket at its end when
// SetRate changes the rate in between: the caller is admitted at the end of
// the pause, and no one else until the steady rate has room, as
// ratelimit's queued callers are.
func TestReservedDuringPauseAfterSetRate(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		l := onMockTime(New(rdb, testKey(t, rdb), 1, 10*time.Second, WithClock(c)), c)
		if err := l.Pause(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		turn := acquireAt(ctx, c, l, 1)
		if err := l.SetRate(ctx, 10, time.Second); err != nil {
			t.Fatal(err)
		}
		if lv, err := l.Level(ctx); lv != 110 || err != nil {
			t.Errorf("Level after SetRate = %v, %v; want 110: the pause's 109 and the reserved unit", lv, err)
		}
		if r := waitFor(t, c, turn, time.Minute); r.err != nil || r.at != 10*time.Second {
			t.Fatalf("the caller that reserved during the pause was admitted at %v (%v); want 10s", r.at, r.err)
		}
		if ok, err := l.HasCapacity(ctx, 0.001); ok || err != nil {
			t.Errorf("HasCapacity(0.001) at the end of the pause = %v, %v; want false: the reserved unit is in", ok, err)
		}
		c.AdvanceTo(t, 10100*time.Millisecond)
		if ok, err := l.TryAcquire(ctx, 1); !ok || err != nil {
			t.Errorf("TryAcquire(1) a unit's time later = %v, %v; want true", ok, err)
		}
	})
}

// TestPauseEndedBeforeSetRate checks that a pause that ended leaves its
// floor at the rate then in force, even if no call reached the bucket
// before SetRate changed the rate: the units are kept, as ratelimit keeps
// them.
func TestPauseEndedBeforeSetRate(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		l := onMockTime(New(rdb, testKey(t, rdb), 10, time.Second, WithClock(c)), c)
		if err := l.Pause(ctx, time.Second); err != nil {
			t.Fatal(err)
		}
		c.AdvanceTo(t, time.Second)
		// The pause left 9 units, one short of full at 10 a second.
		if err := l.SetRate(ctx, 1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if lv, err := l.Level(ctx); lv != 9 || err != nil {
			t.Errorf("Level after SetRate = %v, %v; want the 9 units the pause left", lv, err)
		}
		c.AdvanceTo(t, 11*time.Second)
		if lv, err := l.Level(ctx); lv != 8 || err != nil {
			t.Errorf("Level at 11s = %v, %v; want 8, a unit drained at 1 per 10s", lv, err)
		}
	})
}

// TestCancelDuringPause checks that turns reserved during a pause are
// given back as others are, during the pause and after it, while no later
// change rests on them.
func TestCancelDuringPause(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		lim := onMockTime(New(rdb, testKey(t, rdb), 1, time.Second, WithClock(c)), c)
		level, waiter, cancelled := giveBackKit(t, c, lim)

		if err := lim.Pause(ctx, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		cancel1, w1 := waiter() // turn at 2s
		cancel2, w2 := waiter() // turn at 3s
		cancel3, w3 := waiter() // turn at 4s
		level(5)                // the pause's 2, and 3 reserved
		cancelled(cancel3, w3)  // the last: back
		level(4)
		cancelled(cancel1, w1) // w2 rests on it: it stays
		level(4)
		c.AdvanceTo(t, 2500*time.Millisecond)
		level(1.5)
		cancelled(cancel2, w2) // the last, after the pause: back
		level(0.5)
		w4 := acquireAt(ctx, c, lim, 1)
		if r := waitFor(t, c, w4, time.Minute); r.err != nil || r.at != 3*time.Second {
			t.Errorf("next waiter returned %v at %v; want nil at 3s (w1's unit drained unused)", r.err, r.at)
		}
	})
}
