package redisbucket

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/redis/go-redis/v9"
)

// The lost keys that TestPropertyNeverOverRate found letting units through:
// with one process, a key that Redis lost must come back with every unit
// the limiter saw in it, however SetRate changed the rate, and however
// long the units take to drain.

// TestLostKeyAfterSlowerSetRateKeepsUnits: 5e8 units taken at 1e9 a second
// (half a second to drain), the key lost, then SetRate(100, time.Minute),
// which keeps the units: they take 9.5 years to drain at the new rate. The
// key came back full at the new rate, 100 units a minute from empty, so a
// unit passed 30 seconds later.
func TestLostKeyAfterSlowerSetRateKeepsUnits(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lim := onMockTime(New(rdb, key, 1e9, time.Second, WithClock(c)), c)
		if ok, err := lim.TryAcquire(ctx, 5e8); !ok || err != nil {
			t.Fatalf("TryAcquire(5e8) = %v, %v", ok, err)
		}
		if err := rdb.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		if err := lim.SetRate(ctx, 100, time.Minute); err != nil {
			t.Fatal(err)
		}
		c.Advance(30 * time.Second)
		if ok, err := lim.TryAcquire(ctx, 1); ok || err != nil {
			t.Errorf("30s after SetRate(100, 1m) on a lost key holding 5e8 units: TryAcquire(1) = %v, %v; want false", ok, err)
		}
		if lv, err := lim.Level(ctx); err != nil || lv < 5e8-50 {
			t.Errorf("Level = %v, %v; want the 5e8 units, less 50 drained", lv, err)
		}
	})
}

// TestLostKeyHoldingMillenniaKeepsUnits: a full bucket of 1e9 units at 1e9
// a second slowed by SetRate to one unit an hour holds 114,000 years of
// units. Lost and written back, it held only the 142 years that the
// reply's integer could say, 1.25 million units; SetRate back to 1e9 a
// second then drained them in 1.25ms, and half a burst passed 10ms later,
// where the 1e9 units kept would have refused it.
func TestLostKeyHoldingMillenniaKeepsUnits(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lim := onMockTime(New(rdb, key, 1e9, time.Second, WithClock(c)), c)
		if ok, err := lim.TryAcquire(ctx, 1e9); !ok || err != nil {
			t.Fatalf("TryAcquire(1e9) = %v, %v", ok, err)
		}
		if err := lim.SetRate(ctx, 1, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := rdb.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		if ok, err := lim.TryAcquire(ctx, 1); ok || err != nil {
			t.Fatalf("TryAcquire(1) on the lost key = %v, %v; want false", ok, err)
		}
		if err := lim.SetRate(ctx, 1e9, time.Second); err != nil {
			t.Fatal(err)
		}
		c.Advance(10 * time.Millisecond)
		if ok, err := lim.TryAcquire(ctx, 5e8); ok || err != nil {
			t.Errorf("10ms after SetRate back to 1e9/s: TryAcquire(5e8) = %v, %v; want false, the bucket holding 1e9 less 1e7", ok, err)
		}
	})
}

// TestAcquireTurnPastCenturiesRefused: a full bucket of 1e9 units at 1e9 a
// second slowed by SetRate to one unit an hour has the next turn 114,000
// years ahead. The script reserved it and replied a wait of 2^62 ns (146
// years), all Redis can say, and Acquire returned after that wait, its turn
// still 113,854 years off. A turn that far ahead is now not reserved.
func TestAcquireTurnPastCenturiesRefused(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		lim := onMockTime(New(rdb, testKey(t, rdb), 1e9, time.Second, WithClock(c)), c)
		if ok, err := lim.TryAcquire(ctx, 1e9); !ok || err != nil {
			t.Fatalf("TryAcquire(1e9) = %v, %v", ok, err)
		}
		if err := lim.SetRate(ctx, 1, time.Hour); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- lim.Acquire(ctx, 1) }()
		c.Settle()
		select {
		case err := <-done:
			var de *ratelimit.DeadlineError
			if !errors.As(err, &de) || de.Wait != 1<<62 {
				t.Errorf("Acquire(1) = %v; want a *DeadlineError with Wait 2^62 ns", err)
			}
			return
		default:
		}
		c.Advance(1 << 62)
		select {
		case err := <-done:
			t.Errorf("Acquire(1) = %v after 146 years, its turn 114,000 years ahead", err)
		default:
			cancel()
			t.Errorf("Acquire(1) reserved a turn 114,000 years ahead")
			<-done
		}
	})
}

// TestSightingKeepsTheLatestState: a reply replaces those received before
// its call was sent, whatever their server time; of calls in flight
// together, the reply of the later server time replaces the other, and
// replies of the same time are both kept; at most maxKept, the last
// received.
func TestSightingKeepsTheLatestState(t *testing.T) {
	type call struct {
		at        int64
		end, unit float64
	}
	for _, tc := range []struct {
		name  string
		calls []call
		sends []int // the order the calls are sent in: indexes into calls
		recvs []int // the order their replies are recorded in
		want  string
	}{
		{"none", nil, nil, nil, "0"},
		{"one after another: the last", []call{{10, 100, 5}, {20, 50, 1}}, nil, nil, "50 1"},
		{"one after another, the server's clock back: the last", []call{{20, 100, 5}, {10, 50, 1}}, nil, nil, "50 1"},
		{"in flight together: the later by the server", []call{{10, 100, 5}, {20, 50, 1}}, []int{0, 1}, []int{0, 1}, "50 1"},
		{"in flight together, received the other way", []call{{10, 100, 5}, {20, 50, 1}}, []int{0, 1}, []int{1, 0}, "50 1"},
		{"in flight together at the same time: both", []call{{10, 100, 5}, {10, 90, 1}}, []int{0, 1}, []int{1, 0}, "90 1 100 5"},
		{"a drained key, later by the server", []call{{10, 100, 5}, {20, 0, 5}}, []int{0, 1}, []int{0, 1}, "0"},
		{"at most maxKept", []call{{1, 91, 1}, {1, 92, 2}, {1, 93, 3}, {1, 94, 4}, {1, 95, 5}, {1, 96, 6}, {1, 97, 7}, {1, 98, 8}, {1, 99, 9}, {1, 100, 10}},
			[]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, "93 3 94 4 95 5 96 6 97 7 98 8 99 9 100 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sighting
			if tc.sends == nil {
				for _, c := range tc.calls {
					s.record(c.at, c.end, c.unit)
				}
			} else {
				sent := make([]ticket, len(tc.calls))
				for _, i := range tc.sends {
					sent[i] = s.send()
				}
				for _, i := range tc.recvs {
					c := tc.calls[i]
					s.recordSent(sent[i], c.at, c.end, c.unit)
				}
			}
			if got := s.arg(); got != tc.want {
				t.Errorf("arg() = %q; want %q", got, tc.want)
			}
		})
	}
	// A call sent after the replies of calls in flight together were
	// received replaces them all.
	var s sighting
	a, b := s.send(), s.send()
	s.recordSent(a, 0, 100, 5)
	s.recordSent(b, 0, 90, 1)
	s.record(0, 50, 5)
	if got := s.arg(); got != "50 5" {
		t.Errorf("after a call sent once both replies came: arg() = %q; want %q", got, "50 5")
	}
	// The units of the reserves in flight go with the ends.
	s.reserving(2.5)
	if got := s.arg(); got != "50 5 r 2.5" {
		t.Errorf("with 2.5 units reserved in flight: arg() = %q; want %q", got, "50 5 r 2.5")
	}
	s.reserving(-2.5)
	if got := s.arg(); got != "50 5" {
		t.Errorf("once the reserve's reply came: arg() = %q; want %q", got, "50 5")
	}
}

// keptAndLost runs f on a mocked clock as two subtests, "kept" and
// "lost" (under name, if any), with lose false and true: f loses the key
// where it means to only when lose is true, so that "kept" shows what the
// same calls do without the loss.
func keptAndLost(t *testing.T, name string, f func(t *testing.T, c *clocktest.Clock, lose bool)) {
	t.Helper()
	for _, lose := range []bool{false, true} {
		sub := map[bool]string{false: "kept", true: "lost"}[lose]
		if name != "" {
			sub = name + "/" + sub
		}
		t.Run(sub, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) { f(t, c, lose) })
		})
	}
}

// scriptedKey returns a client of addr on which the mock-time script is
// loaded, so that a Scripter wrapping it, which runs EvalSha alone, finds
// it; and a key of the test's own.
func scriptedKey(t *testing.T, addr string) (*redis.Client, string) {
	t.Helper()
	rdb := newClient(t, addr)
	if err := mockTimeScript.Load(context.Background(), rdb).Err(); err != nil {
		t.Fatal(err)
	}
	return rdb, testKey(t, rdb)
}

// takeFull takes the whole bucket of lim, New(10, ...), and counts it in b.
func takeFull(t *testing.T, ctx context.Context, c *clocktest.Clock, lim *Limiter, b *exactBucket) {
	t.Helper()
	if ok, err := lim.TryAcquire(ctx, 10); err != nil || !ok {
		t.Fatalf("TryAcquire(10) at 0 = %v, %v", ok, err)
	}
	if err := b.admit(c.Now(), 10); err != nil {
		t.Fatal(err)
	}
}
