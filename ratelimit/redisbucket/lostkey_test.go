package redisbucket

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
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

// TestSightingKeepsWhatNoReplyCovers: the reply of the latest server time
// is the key's state; the replies of an earlier time are kept beside it in
// the order they came, unless the state or a reply that came after covers
// them (ends no earlier, at a rate no slower), or a reply that came after
// is of a time past their end; at most maxRecent.
func TestSightingKeepsWhatNoReplyCovers(t *testing.T) {
	type reply struct {
		at        int64
		end, unit float64
	}
	for _, tc := range []struct {
		name    string
		replies []reply
		want    string
	}{
		{"none", nil, "0"},
		{"the latest replaces", []reply{{10, 100, 5}, {20, 50, 1}}, "50 1"},
		{"an earlier one it covers goes", []reply{{20, 100, 1}, {10, 90, 5}}, "100 1"},
		{"an earlier one at a faster rate stays", []reply{{20, 100, 5}, {10, 90, 1}}, "100 5 90 1"},
		{"an earlier one ending later stays", []reply{{20, 100, 1}, {10, 110, 5}}, "100 1 110 5"},
		{"earlier ones stay in the order they came", []reply{{30, 100, 5}, {10, 90, 1}, {20, 95, 3}, {5, 80, 2}}, "100 5 90 1 95 3 80 2"},
		{"one a later one covers goes", []reply{{30, 100, 5}, {20, 95, 3}, {10, 96, 2}}, "100 5 96 2"},
		{"one that ran out by a later one's time goes", []reply{{300, 400, 5}, {10, 90, 1}, {100, 150, 1}}, "400 5 150 1"},
		{"a later state covering them clears them", []reply{{20, 100, 5}, {10, 90, 1}, {30, 200, 1}}, "200 1"},
		{"a drained key, then an earlier one", []reply{{20, 0, 5}, {10, 90, 1}}, "90 1"},
		{"at most maxRecent", []reply{{100, 100, 9}, {1, 91, 1}, {2, 92, 1.5}, {3, 93, 2}, {4, 94, 2.5}, {5, 95, 3}}, "100 9 92 1.5 93 2 94 2.5 95 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sighting
			for _, r := range tc.replies {
				s.record(r.at, r.end, r.unit)
			}
			if got := s.arg(); got != tc.want {
				t.Errorf("arg() = %q; want %q", got, tc.want)
			}
		})
	}
}
