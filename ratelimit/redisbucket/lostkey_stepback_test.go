package redisbucket

// The sighting across steps of the server's clock: steps back, twice, and
// forward; a Keyed that forgets sightings meanwhile; the script reading
// what Go sends; and ordinary use, which keeps no reply but the latest.
// The first three failed on a sighting that kept only one reply of an
// earlier time, the latest by server time (e5b253f).

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
)

// TestLostKeyAfterTwoStepsBackKeepsTurns: the server's clock steps back
// twice. After the second step, every reply was of an earlier time than
// the one kept beside the state, and record dropped it as "older than
// both", though it was the key's latest state: the turns reserved then
// were forgotten, and a lost key came back without them.
//
// New(10, 1s). At 0: a Level (server S, empty). The server's clock steps
// back 50s: TryAcquire(10) (server S-50s, end S-49s, kept beside the state).
// It steps back 20s more: Acquire(10) reserves the turn at server S-49s
// (client 21s), its reply (end S-48s) dropped. The key is lost at 1s and
// written back only to S-49s: at 21s (server S-49s) a TryAcquire(10) was
// admitted beside the waiter's 10.
func TestLostKeyAfterTwoStepsBackKeepsTurns(t *testing.T) {
	addr := redisAddr(t)
	keptAndLost(t, "", func(t *testing.T, c *clocktest.Clock, lose bool) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		var behind atomic.Int64
		lim := onMockTimeOffset(New(rdb, key, 10, time.Second, WithClock(c)), c, &behind)
		p := &probe{t: t, c: c, b: newExactBucket(10, time.Second), what: "New(10, 1s)"}
		if _, err := lim.Level(ctx); err != nil {
			t.Fatal(err)
		}
		behind.Store(int64(50 * time.Second))
		if ok, err := lim.TryAcquire(ctx, 10); err != nil || !ok {
			t.Fatalf("TryAcquire(10) = %v, %v", ok, err)
		}
		if err := p.b.admit(c.Now(), 10); err != nil {
			t.Fatal(err)
		}
		behind.Store(int64(70 * time.Second))
		p.wait(ctx, lim, 10)
		before := lim.seen.arg()
		p.advance(time.Second)
		if lose {
			if err := rdb.Del(ctx, key).Err(); err != nil { // Redis restarts
				t.Fatal(err)
			}
		}
		for c.Elapsed() < 30*time.Second {
			p.advance(10 * time.Millisecond)
			ok, err := lim.TryAcquire(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				p.collect()
				if err := p.b.admit(c.Now(), 10); err != nil {
					t.Fatalf("one process, key lost=%v: server clock stepped back 50s, TryAcquire(10), "+
						"stepped back 20s more, Acquire(10) reserved (sighting then %q, the reservation's reply dropped); "+
						"TryAcquire(10) at %v admitted beside the waiter: %v "+
						"(20 units in a window of length 0, bound 10)", lose, before, c.Elapsed(), err)
				}
			}
		}
		p.collect()
	})
}

// TestLostKeyAfterStepsBackAndForwardKeepsTakes: the time of the reply
// kept beside the state outlived it. The server's clock steps back 20s (a
// reply's time kept, covered or not), forward again (a reply of a later
// time clears the reply, not its time), then back 50s: every reply since
// was older than that time and dropped. A TryAcquire(10) takes the full
// bucket; the key is lost, the sighting said nothing ahead, and the key
// came back empty: another 10 passed at the same instant.
func TestLostKeyAfterStepsBackAndForwardKeepsTakes(t *testing.T) {
	addr := redisAddr(t)
	keptAndLost(t, "", func(t *testing.T, c *clocktest.Clock, lose bool) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		var behind atomic.Int64
		lim := onMockTimeOffset(New(rdb, key, 10, time.Second, WithClock(c)), c, &behind)
		b := newExactBucket(10, time.Second)
		for _, d := range []time.Duration{0, 20 * time.Second, 0} { // back 20s, forward again
			behind.Store(int64(d))
			if _, err := lim.Level(ctx); err != nil {
				t.Fatal(err)
			}
		}
		behind.Store(int64(50 * time.Second)) // back 50s
		var taken float64
		for i := range 2 {
			ok, err := lim.TryAcquire(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				taken += 10
				if err := b.admit(c.Now(), 10); err != nil {
					t.Fatalf("one process, key lost=%v: server clock stepped back 20s, forward again, back 50s; "+
						"TryAcquire(10) admitted, the key lost, sighting %q: TryAcquire(10) admitted again at %v: %v "+
						"(%v units in a window of length 0, bound 10)", lose, lim.seen.arg(), c.Elapsed(), err, taken)
				}
			} else if i == 0 {
				t.Fatalf("TryAcquire(10) = false")
			}
			if lose && i == 0 {
				if err := rdb.Del(ctx, key).Err(); err != nil { // Redis restarts
					t.Fatal(err)
				}
			}
		}
	})
}

// TestKeyedForgetsDrainedKeyAfterStepBack: Keyed.forget takes a
// sighting whose last end is not after k.latest for one that has run out.
// k.latest was the latest server time of any reply: after the server's
// clock stepped back, it stayed at the time before the step, and every
// sighting made since looked run out, so forget dropped one whose key held
// a full bucket as readily as one that had drained, which the Keyed
// prefers to forget. That key, lost, came back empty. k.latest is now the
// time of the reply that came last.
//
// Keyed(10, 1s), room for 2 sightings. Level on y at server S (empty). The
// server's clock steps back 50s: TryAcquire(x, 10) (end S-49s). A call on
// w makes room: y has drained, x holds 10 units for 1s more, but both
// looked run out, and x went as often as y. x is lost; TryAcquire(x, 10)
// at the same instant was admitted.
func TestKeyedForgetsDrainedKeyAfterStepBack(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		for try := range 64 {
			prefix := testPrefix(t, rdb)
			var behind atomic.Int64
			k := NewKeyed(rdb, prefix, 10, time.Second, WithClock(c))
			onMockTimeOffset(&k.proto, c, &behind)
			k.memory = 2
			b := newExactBucket(10, time.Second)
			if _, err := k.Level(ctx, "y"); err != nil {
				t.Fatal(err)
			}
			behind.Store(int64(50 * time.Second))
			if ok, err := k.TryAcquire(ctx, "x", 10); err != nil || !ok {
				t.Fatalf("TryAcquire(x, 10) = %v, %v", ok, err)
			}
			if err := b.admit(c.Now(), 10); err != nil {
				t.Fatal(err)
			}
			arg := k.sighting(prefix + "x").arg()
			if _, err := k.Level(ctx, "w"); err != nil {
				t.Fatal(err)
			}
			k.mu.Lock()
			_, kept := k.seen[prefix+"x"]
			k.mu.Unlock()
			if kept {
				continue // forget took y, which has drained
			}
			if err := rdb.Del(ctx, prefix+"x").Err(); err != nil { // Redis restarts
				t.Fatal(err)
			}
			ok, err := k.TryAcquire(ctx, "x", 10)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				if err := b.admit(c.Now(), 10); err != nil {
					t.Fatalf("one process, Keyed with room for 2 sightings: Level(y) at server S; server clock stepped back; "+
						"TryAcquire(x, 10) (sighting %q, k.latest still S); a call on w forgot x, not the drained y (try %d); "+
						"x lost: TryAcquire(x, 10) admitted again at %v: %v (20 units in a window of length 0, bound 10)",
						arg, try, c.Elapsed(), err)
				}
			}
			return
		}
	})
}

// TestScriptReadsSightings: the script reads ARGV[4] as Go formats
// it ('g', -1): exponents ("1.7644e+15", "1e+21", "1e+08"), two pairs, an
// end of exactly the server's now (not ahead: nothing written back), and a
// faster unit converted to the caller's. A lost key comes back with the
// level each says, to a part in 10^9.
func TestScriptReadsSightings(t *testing.T) {
	addr := redisAddr(t)
	const e = 1.7644e15 // µs since 1970
	for _, tc := range []struct {
		name      string
		now       float64 // the server's, µs since 1970
		s         *sighting
		arg       string
		wantLevel float64 // New(10, 1s): 1e8 ns a unit
	}{
		{"one pair", e - 3e6, &sighting{kept: []seenReply{{end: e, unit: 1e8}}}, "1.7644e+15 1e+08", 30},
		{"end at now", e, &sighting{kept: []seenReply{{end: e, unit: 1e8}}}, "1.7644e+15 1e+08", 0},
		{"two at now", e, &sighting{kept: []seenReply{{end: e, unit: 1e8}, {end: e, unit: 1}}}, "1.7644e+15 1e+08 1.7644e+15 1", 0},
		{"other faster", e - 3e6, &sighting{kept: []seenReply{{end: e - 3e6, unit: 1e8}, {end: e, unit: 1e7}}}, "1.764399997e+15 1e+08 1.7644e+15 1e+07", 300},
		{"other 1ns", e - 1, &sighting{kept: []seenReply{{end: e - 1, unit: 1e8}, {end: e, unit: 1}}}, "1.764399999999999e+15 1e+08 1.7644e+15 1", 1000},
		{"first huge", e, &sighting{kept: []seenReply{{end: 1e21, unit: 1e8}, {end: e + 1e6, unit: 1}}}, "1e+21 1e+08 1.764400001e+15 1", (1e21 - e) * 1e3 / 1e8},
		{"second huge", e, &sighting{kept: []seenReply{{end: e + 1e6, unit: 1e8}, {end: 1e21, unit: 1e8}}}, "1.764400001e+15 1e+08 1e+21 1e+08", (1e21 - e) * 1e3 / 1e8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb := newClient(t, addr)
				key := testKey(t, rdb)
				var behind atomic.Int64
				behind.Store(c.Now().UnixMicro()*1000 - int64(tc.now)*1000)
				lim := onMockTimeOffset(New(rdb, key, 10, time.Second, WithClock(c)), c, &behind)
				lim.seen = tc.s
				if got := lim.seen.arg(); got != tc.arg {
					t.Fatalf("arg() = %q, want %q", got, tc.arg)
				}
				lv, err := lim.Level(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if lv < tc.wantLevel || lv > tc.wantLevel*(1+1e-9) {
					t.Errorf("sighting %q, server now %.17g µs, key lost: Level() = %.17g, want %.17g", tc.arg, tc.now, lv, tc.wantLevel)
				}
			})
		})
	}
}

// TestOrdinaryUseKeepsNoEarlierReply: no clock step, one call at a
// time (takes, checks, levels, Allow, reservations waited out and given
// back, pauses, SetRate there and back): every reply is of a server time
// no earlier than the one before it, and none is kept beside the state.
func TestOrdinaryUseKeepsNoEarlierReply(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		key := testKey(t, rdb)
		lim := onMockTime(New(rdb, key, 10, time.Second, WithClock(c)), c)
		rng := rand.New(rand.NewPCG(4, 4))
		for i := range 400 {
			var err error
			switch op := rng.IntN(8); op {
			case 0, 1:
				_, err = lim.TryAcquire(ctx, float64(rng.IntN(5)+1))
			case 2:
				_, err = lim.HasCapacity(ctx, 3)
			case 3:
				_, err = lim.Level(ctx)
			case 4:
				err = lim.Allow(ctx, 2).Err
			case 5:
				cctx, cancel := context.WithCancel(ctx)
				ch := acquireAt(cctx, c, lim, float64(rng.IntN(10)+1))
				if rng.IntN(2) == 0 {
					cancel() // a give-back, if the turn was ahead
				}
				for done := false; !done; {
					select {
					case <-ch:
						done = true
					default:
						c.Advance(time.Millisecond)
					}
				}
				cancel()
			case 6:
				err = lim.Pause(ctx, time.Duration(rng.IntN(500))*time.Millisecond)
			case 7:
				if lim.MaxRate() == 10 {
					err = lim.SetRate(ctx, 1000, time.Second)
				} else {
					err = lim.SetRate(ctx, 10, time.Second)
				}
			}
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			s := lim.seen
			s.mu.Lock()
			kept := len(s.kept)
			s.mu.Unlock()
			if kept > 1 {
				t.Fatalf("call %d, no clock step, one call at a time: %d replies kept; sighting %q", i, kept, s.arg())
			}
			c.Advance(time.Duration(rng.IntN(300)) * time.Millisecond)
		}
	})
}
