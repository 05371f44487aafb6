package redisbucket

// Lost keys and SetRate: a key that Redis lost comes back with every unit
// the limiter saw in it, converted to a slower rate that SetRate set since,
// to the nanosecond, and no more; a key that drained and expired is not
// taken for a lost one; a server clock that stepped back does not hide the
// turns reserved since, nor makes a key come back fuller than it was. Each
// test failed, as its comment says, before these fixes or on an earlier
// version of them.

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// onMockTimeOffset is onMockTime with the server's clock behind c by
// *behind: a server whose clock steps back (NTP, a failover to a replica
// whose clock is behind).
func onMockTimeOffset(l *Limiter, c clock.Clock, behind *atomic.Int64) *Limiter {
	l.script = mockTimeScript
	l.serverTime = func() []any {
		now := c.Now().Add(-time.Duration(behind.Load()))
		return []any{now.Unix(), now.Nanosecond() / 1000}
	}
	return l
}

// TestLostKeySlowerRateKeepsUnitsToTheNanosecond: the sighting's lead was
// converted to the slower rate in Go, as at + lead*ratio*(1+2^-50), a
// float64 sum in microseconds since 1970. In 2026 those are 0.25µs apart,
// and the sum rounded to the nearest: the nudge, relative to the lead, did
// not cover a rounding relative to the sum, so a converted end could come
// out up to 125ns early, and a bucket that SetRate left above its capacity
// came back that much emptier than the units it held. The script converts
// now, in nanoseconds from its own now, rounding up.
//
// New(1e6, 3ms) (3ns a unit), full at 0; at 2µs a HasCapacity sees it
// hold 2998µs of units, 999,333.33 units. The key is lost, and
// SetRate(100, 400ns) (4ns a unit) keeps the units: 3997.333µs at the new
// rate. The sighting converted to 3997.25µs, and the key came back 83ns
// (20.8 units) short. At 3999µs the exact bucket holds 83.3 units, so 16.7
// fit; the limiter admitted 37. The same with bytes: New(1e9, 3s) and
// SetRate(1e8, 400ms) admitted 20 bytes beyond the rate. Without the loss,
// the key (rescaled exactly by the script) refused them.
func TestLostKeySlowerRateKeepsUnitsToTheNanosecond(t *testing.T) {
	addr := redisAddr(t)
	for _, tc := range []struct {
		maxRate    float64 // 3ns a unit
		period     time.Duration
		newMaxRate float64 // 4ns a unit
		newPeriod  time.Duration
		at         time.Duration // when to try: the key holds 250ns of units by the limiter's count
		amount     float64       // the most the limiter admits then
	}{
		{1e6, 3 * time.Millisecond, 100, 400 * time.Nanosecond, 3999 * time.Microsecond, 37},
		{1e9, 3 * time.Second, 1e8, 400 * time.Millisecond, 3999999 * time.Microsecond, 1e8 - 63},
	} {
		keptAndLost(t, fmt.Sprintf("New(%v, %v) SetRate(%v, %v)", tc.maxRate, tc.period, tc.newMaxRate, tc.newPeriod), func(t *testing.T, c *clocktest.Clock, lose bool) {
			ctx := context.Background()
			rdb := newClient(t, addr)
			key := testKey(t, rdb)
			lim := onMockTime(New(rdb, key, tc.maxRate, tc.period, WithClock(c)), c)
			b := newExactBucket(tc.maxRate, tc.period)
			if ok, err := lim.TryAcquire(ctx, tc.maxRate); !ok || err != nil {
				t.Fatalf("TryAcquire(%v) = %v, %v", tc.maxRate, ok, err)
			}
			if err := b.admit(c.Now(), tc.maxRate); err != nil {
				t.Fatal(err)
			}
			c.Advance(2 * time.Microsecond) // the lead seen, in µs, is 1 mod 3
			if ok, err := lim.HasCapacity(ctx, tc.maxRate/1000); ok || err != nil {
				t.Fatalf("HasCapacity at 2µs = %v, %v; want false", ok, err)
			}
			if lose {
				if err := rdb.Del(ctx, key).Err(); err != nil { // Redis restarts
					t.Fatal(err)
				}
			}
			if err := lim.SetRate(ctx, tc.newMaxRate, tc.newPeriod); err != nil {
				t.Fatal(err)
			}
			b.setRate(c.Now(), tc.newMaxRate, tc.newPeriod)
			c.AdvanceTo(t, tc.at)
			ok, err := lim.TryAcquire(ctx, tc.amount)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				if err := b.admit(c.Now(), tc.amount); err != nil {
					t.Errorf("one process, key lost=%v, SetRate keeping the units: TryAcquire(%v) at %v admitted: %v",
						lose, tc.amount, tc.at, err)
				}
			}
		})
	}
}

// TestSetRateSlowerLeavesDrainedKeyEmpty: the conversion in Go stretched
// the whole lead seen at the time of the reply by the ratio of the rates,
// also the part of it that drained at the old rate before SetRate. A key
// that drained, and expired, before a SetRate to a slower rate was taken
// for a lost one and written back over-full: the limiter refused what the
// model (and ratelimit.Limiter) admits. The script converts only what is
// left at its now.
//
// New(100, 1s) takes 100 at 0: the bucket is empty at 1s and its key
// expires at 1.003s (the mock script keeps keys an hour, so the test
// deletes it). At 5s SetRate(10, 1s) keeps 0 units, and 10 fit; the
// sighting says 1s*10 = 10s, and the key comes back with 50 units.
//
// Keyed(1e9, 1s): a key takes 1e6 units (1ms) and expires; an hour later
// SetRate(1, time.Hour): the key comes back with 1e6 units at one an
// hour, and refuses every call for 114 years.
func TestSetRateSlowerLeavesDrainedKeyEmpty(t *testing.T) {
	addr := redisAddr(t)
	t.Run("Limiter", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			ctx := context.Background()
			rdb := newClient(t, addr)
			key := testKey(t, rdb)
			lim := onMockTime(New(rdb, key, 100, time.Second, WithClock(c)), c)
			local := ratelimit.New(100, time.Second, ratelimit.WithClock(c))
			if ok, err := lim.TryAcquire(ctx, 100); !ok || err != nil {
				t.Fatalf("TryAcquire(100) = %v, %v", ok, err)
			}
			local.TryAcquire(100)
			c.AdvanceTo(t, 5*time.Second)
			if err := rdb.Del(ctx, key).Err(); err != nil { // expired at 1.003s
				t.Fatal(err)
			}
			if err := lim.SetRate(ctx, 10, time.Second); err != nil {
				t.Fatal(err)
			}
			local.SetRate(10, time.Second)
			lv, _ := lim.Level(ctx)
			ok, err := lim.TryAcquire(ctx, 10)
			if err != nil || !ok {
				t.Errorf("bucket drained at 1s, key expired, SetRate(10, 1s) at 5s: TryAcquire(10) = %v, %v, Level %v; "+
					"want true: ratelimit.Limiter has Level %v, TryAcquire(10) %v", ok, err, lv, local.Level(), local.TryAcquire(10))
			}
		})
	})
	t.Run("Keyed", func(t *testing.T) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			ctx := context.Background()
			rdb := newClient(t, addr)
			prefix := testPrefix(t, rdb)
			k := onMockTimeKeyed(NewKeyed(rdb, prefix, 1e9, time.Second, WithClock(c)), c)
			if ok, err := k.TryAcquire(ctx, "x", 1e6); !ok || err != nil {
				t.Fatalf("TryAcquire(x, 1e6) = %v, %v", ok, err)
			}
			c.AdvanceTo(t, time.Hour)
			if err := rdb.Del(ctx, prefix+"x").Err(); err != nil { // expired at 1.003ms
				t.Fatal(err)
			}
			k.SetRate(1, time.Hour)
			ok, err := k.TryAcquire(ctx, "x", 1)
			lv, _ := k.Level(ctx, "x")
			if err != nil || !ok {
				t.Errorf("key drained at 1ms and expired, Keyed.SetRate(1, 1h) an hour later: TryAcquire(x, 1) = %v, %v, Level %v (%.0f years to drain); want true, an empty bucket",
					ok, err, lv, lv/(24*365.25))
			}
		})
	})
}

// TestLostKeyAfterClockStepBackKeepsTurns: sighting.record kept a reply
// only if its server time was not before the latest one kept. After the
// server's clock stepped back, no reply was kept until it caught up, while
// the turns reserved meanwhile moved the tat: a key lost then came back
// without them, and their turns were given again. A reply that says the
// key holds the bucket longer is now kept, whatever its time.
//
// New(10, 1s) takes 10 at 0; the server's clock steps back 10s, which
// delays admissions by 10s; 30 callers reserve one unit each, turns at
// 10.1s to 13s. Redis loses the key, and 30 more callers reserve: they get
// the same turns. 60 units passed in [10.1s, 13s], a window of 2.9s, where
// the rate allows 10 + 29 = 39. Without the loss, the rate held.
func TestLostKeyAfterClockStepBackKeepsTurns(t *testing.T) {
	addr := redisAddr(t)
	keptAndLost(t, "", func(t *testing.T, c *clocktest.Clock, lose bool) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		var behind atomic.Int64
		lim := onMockTimeOffset(New(rdb, key, 10, time.Second, WithClock(c)), c, &behind)
		if ok, err := lim.TryAcquire(ctx, 10); !ok || err != nil {
			t.Fatalf("TryAcquire(10) = %v, %v", ok, err)
		}
		admitted := map[time.Duration]float64{0: 10}
		behind.Store(int64(10 * time.Second))
		var waiters []<-chan result
		for range 30 {
			waiters = append(waiters, acquireAt(ctx, c, lim, 1))
		}
		if lose {
			if err := rdb.Del(ctx, key).Err(); err != nil { // Redis restarts
				t.Fatal(err)
			}
		}
		for range 30 {
			waiters = append(waiters, acquireAt(ctx, c, lim, 1))
		}
		for c.Elapsed() < 20*time.Second {
			c.Advance(100 * time.Millisecond)
			for i, w := range waiters {
				if w == nil {
					continue
				}
				select {
				case r := <-w:
					if r.err != nil {
						t.Fatalf("Acquire(1): %v", r.err)
					}
					admitted[r.at]++
					waiters[i] = nil
				default:
				}
			}
		}
		if from, to, n, bound := worstWindow(admitted, 10, time.Second); n > bound {
			t.Errorf("one process, server clock stepped back 10s, key lost=%v: %v units admitted in [%v, %v], where the rate allows %v",
				lose, n, from, to, bound)
		}
	})
}

// worstWindow returns the window [from, to] of admission times in which
// the admissions most exceed maxRate + maxRate*(to-from)/period, with the
// units admitted in it and that bound.
func worstWindow(admitted map[time.Duration]float64, maxRate float64, period time.Duration) (from, to time.Duration, n, bound float64) {
	best := math.Inf(-1)
	for a := range admitted {
		for b := range admitted {
			if b < a {
				continue
			}
			var sum float64
			for at, u := range admitted {
				if at >= a && at <= b {
					sum += u
				}
			}
			lim := maxRate + maxRate*float64(b-a)/float64(period)
			if sum-lim > best {
				best, from, to, n, bound = sum-lim, a, b, sum, lim
			}
		}
	}
	return from, to, n, bound
}

// probe is one Limiter's view of an exact bucket: drain takes, at the
// current instant, the most the limiter says it admits (Allow's
// Remaining), and the turns of the waiters that have returned, and counts
// each in the exact bucket at the client's time, which is never before the
// server's.
type probe struct {
	t       *testing.T
	c       *clocktest.Clock
	b       *exactBucket
	waiters []waiter
	what    string
}

type waiter struct {
	ch     <-chan result
	amount float64
}

func (p *probe) wait(ctx context.Context, lim *Limiter, amount float64) {
	p.waiters = append(p.waiters, waiter{acquireAt(ctx, p.c, lim, amount), amount})
}

// advance moves the clock by d, and counts the waiters that returned on
// the way, each at the time it returned.
func (p *probe) advance(d time.Duration) {
	p.t.Helper()
	p.c.Advance(d)
	p.collect()
}

func (p *probe) collect() {
	p.t.Helper()
	for i, w := range p.waiters {
		if w.ch == nil {
			continue
		}
		select {
		case r := <-w.ch:
			if r.err != nil {
				p.t.Fatalf("%s: Acquire(%v): %v", p.what, w.amount, r.err)
			}
			if err := p.b.admit(clocktest.Start.Add(r.at), w.amount); err != nil {
				p.t.Fatalf("%s: waiter of %v admitted at %v: %v", p.what, w.amount, r.at, err)
			}
			p.waiters[i].ch = nil
		default:
		}
	}
}

// step takes what lim says fits now.
func (p *probe) step(ctx context.Context, lim *Limiter) {
	p.t.Helper()
	d := lim.Allow(ctx, 0)
	if d.Err != nil {
		p.t.Fatalf("%s: Allow(0) at %v: %v", p.what, p.c.Elapsed(), d.Err)
	}
	if d.Remaining <= 0 {
		return
	}
	ok, err := lim.TryAcquire(ctx, d.Remaining)
	if err != nil || !ok {
		p.t.Fatalf("%s: Allow(0) at %v said %v remain; TryAcquire of them = %v, %v", p.what, p.c.Elapsed(), d.Remaining, ok, err)
	}
	if err := p.b.admit(p.c.Now(), d.Remaining); err != nil {
		p.t.Fatalf("%s: TryAcquire(%v) at %v admitted: %v", p.what, d.Remaining, p.c.Elapsed(), err)
	}
}

// run steps lim every dt until the clock reads until, and checks that all
// waiters returned.
func (p *probe) run(ctx context.Context, lim *Limiter, dt, until time.Duration) {
	p.t.Helper()
	for p.c.Elapsed() < until {
		p.advance(dt)
		p.step(ctx, lim)
	}
	for _, w := range p.waiters {
		if w.ch != nil {
			p.t.Fatalf("%s: a waiter of %v still waits at %v", p.what, w.amount, p.c.Elapsed())
		}
	}
}

// TestLostKeyedKeyFasterThenSlowerHoldsRate: a Keyed's key,
// full at 10 a second, is rescaled by Keyed.SetRate(1000, 1s) at its next
// call, filled again and reserved 400 units ahead by two of its Limiters
// at once; once their turns have come, the key is lost, and then called
// at SetRate(10, 1s): the sighting, seen at the faster rate, is converted
// to the slower one, and the key comes back with every unit. Checked
// against the exact bucket at every 10ms for 150s: nothing passes
// beyond the rate. (The rates are 100 times apart, so that the conversion
// is exact in float64s.)
func TestLostKeyedKeyFasterThenSlowerHoldsRate(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		prefix := testPrefix(t, rdb)
		k := onMockTimeKeyed(NewKeyed(rdb, prefix, 10, time.Second, WithClock(c)), c)
		p := &probe{t: t, c: c, b: newExactBucket(10, time.Second), what: "Keyed x"}
		x1, x2 := k.Key("x"), k.Key("x") // two Limiters sharing the sighting
		if ok, err := x1.TryAcquire(ctx, 10); !ok || err != nil {
			t.Fatalf("TryAcquire(10) = %v, %v", ok, err)
		}
		if err := p.b.admit(c.Now(), 10); err != nil {
			t.Fatal(err)
		}
		k.SetRate(1000, time.Second)
		p.advance(100 * time.Millisecond)
		p.b.setRate(c.Now(), 1000, time.Second) // the next call rescales
		p.step(ctx, x2)
		for i := range 40 { // turns at 110ms to 500ms
			p.wait(ctx, []*Limiter{x1, x2}[i%2], 10)
		}
		p.advance(550 * time.Millisecond)
		if err := rdb.Del(ctx, prefix+"x").Err(); err != nil { // Redis restarts
			t.Fatal(err)
		}
		k.SetRate(10, time.Second)
		p.advance(50 * time.Millisecond)
		p.b.setRate(c.Now(), 10, time.Second)
		p.step(ctx, x1)
		p.wait(ctx, x2, 5)
		p.run(ctx, x1, 10*time.Millisecond, 150*time.Second)
	})
}

// TestLostKeyInPauseAfterSlowerSetRateHoldsRate: a pause in
// progress, with a turn reserved during it and one before, SetRate to a
// rate 4 times slower, and the key lost during the pause: checked against
// the exact bucket (which knows no pause, only the rate) at every 5ms for
// a minute.
func TestLostKeyInPauseAfterSlowerSetRateHoldsRate(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lim := onMockTime(New(rdb, key, 8, time.Second, WithClock(c)), c)
		p := &probe{t: t, c: c, b: newExactBucket(8, time.Second), what: "New(8, 1s)"}
		p.step(ctx, lim)
		p.wait(ctx, lim, 3)
		if err := lim.Pause(ctx, 3*time.Second); err != nil {
			t.Fatal(err)
		}
		p.advance(time.Second)
		p.wait(ctx, lim, 2)
		if err := lim.SetRate(ctx, 2, time.Second); err != nil {
			t.Fatal(err)
		}
		p.b.setRate(c.Now(), 2, time.Second)
		p.advance(500 * time.Millisecond)
		if err := rdb.Del(ctx, key).Err(); err != nil { // Redis restarts
			t.Fatal(err)
		}
		p.run(ctx, lim, 5*time.Millisecond, time.Minute)
	})
}

// TestLostKeyAfterStepBackFasterReplyKept: sighting.record compared the
// end of a reply of an earlier server time with the one kept, and kept
// the later end; but ends seen at different rates are not comparable. A
// reply at a faster rate (after a SetRate) says an earlier end for more
// units than a slower reply's later end, and once the server's clock had
// stepped back (its time before the one kept) it was dropped: a key lost
// after SetRate back to the slower rate came back with the slower reply's
// units only, or not at all. Such a reply is now kept beside the other.
//
// New(10, 1s) takes 10 at 0 (reply: end 1s, 100ms a unit). The server's
// clock steps back 1ms. SetRate(1000, 1s) keeps the 10 units (10ms); 900
// more are taken: the key holds 910 units, until 0.909s at 1ms a unit,
// before the end kept, and its reply is dropped. The key is lost, and
// SetRate(10, 1s) keeps the 910 units: 91s to drain. At 1.1s the sighting
// (end 1s) had run out, the key was taken for an empty one, and 10 units
// passed. Without the loss, the key refused them.
func TestLostKeyAfterStepBackFasterReplyKept(t *testing.T) {
	addr := redisAddr(t)
	keptAndLost(t, "", func(t *testing.T, c *clocktest.Clock, lose bool) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		var behind atomic.Int64
		lim := onMockTimeOffset(New(rdb, key, 10, time.Second, WithClock(c)), c, &behind)
		b := newExactBucket(10, time.Second)
		take := func(amount float64, want bool) {
			t.Helper()
			ok, err := lim.TryAcquire(ctx, amount)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				if err := b.admit(c.Now(), amount); err != nil {
					lv, _ := lim.Level(ctx)
					t.Errorf("one process, server clock stepped back 1ms, SetRate(1000, 1s), 900 taken, key lost=%v, "+
						"SetRate(10, 1s): TryAcquire(%v) at %v admitted: %v (limiter's Level now %v)",
						lose, amount, c.Elapsed(), err, lv)
				}
			} else if want {
				t.Fatalf("TryAcquire(%v) at %v = false", amount, c.Elapsed())
			}
		}
		take(10, true)
		behind.Store(int64(time.Millisecond))
		if err := lim.SetRate(ctx, 1000, time.Second); err != nil {
			t.Fatal(err)
		}
		b.setRate(c.Now(), 1000, time.Second)
		take(900, true)
		if lose {
			if err := rdb.Del(ctx, key).Err(); err != nil { // Redis restarts
				t.Fatal(err)
			}
		}
		if err := lim.SetRate(ctx, 10, time.Second); err != nil {
			t.Fatal(err)
		}
		b.setRate(c.Now(), 10, time.Second)
		c.AdvanceTo(t, 1100*time.Millisecond)
		take(10, false)
	})
}

// TestStepBackExpiredKeyStaysEmpty: after the server's clock stepped
// back, every reply is of an earlier server time than the one before the
// step, so each goes to the other slot. A first version of that slot
// merged replies that did not cover each other into (the later end, the
// faster unit): a take at the slow rate (long end), then SetRate to a
// faster rate (short end, fast unit), merged into (the slow end, the fast
// unit), which covered SetRate back to the slow rate. The key drained and
// expired (no loss), but the merged end was still ahead: the key was
// taken for lost, and the slow caller converted the slow end's lead as if
// it were fast units, ratio times the units the key ever held. The slot
// now holds the latest of those replies.
//
// New(10, 10s) (1s a unit); a Level at 0 (empty). The server's clock
// steps back 1h. At 2s TryAcquire(10): the key holds 10s. At 3s
// SetRate(fast): the 9 units left drain at the fast rate; 5 of them drain;
// SetRate(10, 10s): 4 units, 4s. The key drains at about 7.005s and
// expires. At 8s the exact bucket is empty; the key came back with 4000
// units (1h07m to drain) after a 1000x faster rate, 4e9 (127 years) after
// a 1e9x one.
func TestStepBackExpiredKeyStaysEmpty(t *testing.T) {
	addr := redisAddr(t)
	for _, tc := range []struct {
		name    string
		fast    float64       // units per 10s
		drained time.Duration // at the fast rate: 5 units
	}{
		{"fast 1000x", 10000, 5 * time.Millisecond},
		{"fast 1e9x", 1e10, 5 * time.Nanosecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				key := testKey(t, rdb)
				var behind atomic.Int64
				lim := onMockTimeOffset(New(rdb, key, 10, 10*time.Second, WithClock(c)), c, &behind)
				b := newExactBucket(10, 10*time.Second)
				if _, err := lim.Level(ctx); err != nil {
					t.Fatal(err)
				}
				behind.Store(int64(time.Hour)) // the server's clock steps back 1h
				c.AdvanceTo(t, 2*time.Second)
				if ok, err := lim.TryAcquire(ctx, 10); err != nil || !ok {
					t.Fatalf("TryAcquire(10) at 2s = %v, %v", ok, err)
				}
				if err := b.admit(c.Now(), 10); err != nil {
					t.Fatal(err)
				}
				c.AdvanceTo(t, 3*time.Second)
				if err := lim.SetRate(ctx, tc.fast, 10*time.Second); err != nil {
					t.Fatal(err)
				}
				b.setRate(c.Now(), tc.fast, 10*time.Second)
				c.Advance(tc.drained)
				if err := lim.SetRate(ctx, 10, 10*time.Second); err != nil {
					t.Fatal(err)
				}
				b.setRate(c.Now(), 10, 10*time.Second)
				sightingArg := lim.seen.arg()
				c.AdvanceTo(t, 8*time.Second)
				b.drainTo(c.Now())
				exact, _ := b.level.Float64()
				// The bucket drained at about 7.005s; its key expired 3ms later
				// (the mock script keeps keys an hour).
				if err := rdb.Del(ctx, key).Err(); err != nil {
					t.Fatal(err)
				}
				lv, err := lim.Level(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if lv > 10 {
					t.Errorf("one process, no key lost: server clock stepped back 1h, TryAcquire(10) at 2s, SetRate(%v, 10s) at 3s, "+
						"SetRate(10, 10s) at 3s+%v; the key drained and expired; at 8s the exact bucket holds %v units, "+
						"but the key came back with %v units (capacity 10, %v to drain); sighting was %q",
						tc.fast, tc.drained, exact, lv, time.Duration(lv*float64(time.Second)), sightingArg)
				}
			})
		})
	}
}

// TestOvertakenRepliesDoNotInflateLostKey: no clock step. Three calls of
// one Limiter run in order on the server (X: a take at the slow rate, Y:
// SetRate to a 1000x faster one, Z: SetRate back), as concurrent calls
// with SetRate between them do, and their replies are recorded in the
// order Z, X, Y (goroutines scheduled late). Z (slow, an earlier end than
// X: Y's time drained fast) covers neither; X and Y neither cover the
// other and merged into (X's end, Y's unit). The key is lost; a slow
// caller converted X's lead as if fast: 1000 times the units. Now Z is
// the state, and X and Y, older, each in turn the other.
//
// New(10, 10s); TryAcquire(10) at 0 (end 10s); SetRate(10000, 10s) at 1s
// (9ms); SetRate(10, 10s) at 1.005s (4 units, end 5.005s). The key is
// lost at 2s, when it holds 3.005 units.
func TestOvertakenRepliesDoNotInflateLostKey(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lim := onMockTime(New(rdb, key, 10, 10*time.Second, WithClock(c)), c)
		b := newExactBucket(10, 10*time.Second)
		var replies []seenReply
		grab := func() {
			replies = append(replies, lim.seen.kept...)
			lim.seen = new(sighting)
		}
		if ok, err := lim.TryAcquire(ctx, 10); err != nil || !ok {
			t.Fatalf("TryAcquire(10) = %v, %v", ok, err)
		}
		if err := b.admit(c.Now(), 10); err != nil {
			t.Fatal(err)
		}
		grab()
		c.AdvanceTo(t, time.Second)
		if err := lim.SetRate(ctx, 10000, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		b.setRate(c.Now(), 10000, 10*time.Second)
		grab()
		c.Advance(5 * time.Millisecond)
		if err := lim.SetRate(ctx, 10, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		b.setRate(c.Now(), 10, 10*time.Second)
		grab()
		// The three calls in flight together, their replies recorded as
		// Z, X, Y.
		sent := []ticket{lim.seen.send(), lim.seen.send(), lim.seen.send()}
		for _, i := range []int{2, 0, 1} {
			lim.seen.recordSent(sent[i], 0, replies[i].end, replies[i].unit)
		}
		arg := lim.seen.arg()
		c.AdvanceTo(t, 2*time.Second)
		if err := rdb.Del(ctx, key).Err(); err != nil { // Redis restarts
			t.Fatal(err)
		}
		b.drainTo(c.Now())
		exact, _ := b.level.Float64()
		lv, err := lim.Level(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if lv > 10 {
			t.Errorf("one process, no clock step: TryAcquire(10) at 0, SetRate(10000, 10s) at 1s, SetRate(10, 10s) at 1.005s, "+
				"replies recorded Z, X, Y; key lost at 2s, when the exact bucket holds %v units: it came back with %v units "+
				"(capacity 10, %v to drain); sighting %q", exact, lv, time.Duration(lv*float64(time.Second)), arg)
		}
	})
}
