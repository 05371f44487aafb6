package redisbucket

// Replies that arrive out of order across a step back of the server's
// clock. go-redis runs concurrent calls of one Limiter on several pooled
// connections, and a goroutine may be descheduled between its reply and
// record: a reply of a call that ran before the step (of a later server
// time) can be recorded after the reply of one that ran after it. Each
// test holds one reply in the client (heldScripter) until a call after
// the step has been recorded, through the ordinary Limiter and Keyed
// paths, with no reply replayed by hand.

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/redis/go-redis/v9"
)

// heldScripter is a redis.Scripter that, while hold is set, keeps the
// reply of the next script that ran on the server until release is
// closed, and says on ran that the script ran: a reply that reaches its
// caller late (another pooled connection, a descheduled goroutine).
type heldScripter struct {
	redis.Scripter
	hold    atomic.Bool
	ran     chan struct{}
	release chan struct{}
}

func newHeldScripter(s redis.Scripter) *heldScripter {
	return &heldScripter{Scripter: s, ran: make(chan struct{}), release: make(chan struct{})}
}

func (h *heldScripter) held(cmd *redis.Cmd) *redis.Cmd {
	if cmd.Err() == nil && h.hold.CompareAndSwap(true, false) {
		close(h.ran)
		<-h.release
	}
	return cmd
}

func (h *heldScripter) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return h.held(h.Scripter.EvalSha(ctx, sha1, keys, args...))
}

func (h *heldScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return h.held(h.Scripter.Eval(ctx, script, keys, args...))
}

// TestLateReplyAcrossStepBackHidesAtMostItsTake: one Limiter, two
// goroutines. A Level runs on the server at S (the key empty) and its
// reply is late. The server's clock steps back 50s; a TryAcquire(10) takes
// the full bucket at S-50s and is recorded (end S-49s). Then the Level's
// reply is recorded: the two calls were in flight together, and its server
// time is the later, so it is taken for the later state, though the key
// was in it before the take. (In "pruned", a Level recorded in order at S
// comes first, and the late reply is of S-1ms.) Only a step back between
// two calls in flight together misleads the server's time so; ordering
// such calls by their sends instead kept stale states in ordinary use
// (TestOrdinaryGiveBackThenExpiry). The key lost, the hidden take may pass
// again, as the package documentation says: 10 units beyond the rate at
// most. Without the loss it is refused.
func TestLateReplyAcrossStepBackHidesAtMostItsTake(t *testing.T) {
	addr := redisAddr(t)
	for _, tc := range []struct {
		name   string
		before bool // a Level recorded in order 1ms after the late one, before the step
	}{
		{"replaced", false},
		{"pruned", true},
	} {
		for _, lose := range []bool{false, true} {
			name := tc.name + "/kept"
			if lose {
				name = tc.name + "/lost"
			}
			t.Run(name, func(t *testing.T) {
				clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
					ctx := context.Background()
					rdb, key := scriptedKey(t, addr)
					h := newHeldScripter(rdb)
					var behind atomic.Int64
					lim := onMockTimeOffset(New(h, key, 10, time.Second, WithClock(c)), c, &behind)
					b := newExactBucket(10, time.Second)

					h.hold.Store(true)
					late := make(chan error, 1)
					go func() {
						_, err := lim.Level(ctx)
						late <- err
					}()
					<-h.ran // ran on the server at S; its reply is late
					if tc.before {
						c.Advance(time.Millisecond)
						if _, err := lim.Level(ctx); err != nil {
							t.Fatal(err)
						}
					}
					behind.Store(int64(50 * time.Second)) // the server's clock steps back
					if ok, err := lim.TryAcquire(ctx, 10); err != nil || !ok {
						t.Fatalf("TryAcquire(10) after the step = %v, %v", ok, err)
					}
					if err := b.admit(c.Now(), 10); err != nil {
						t.Fatal(err)
					}
					afterTake := lim.seen.arg()
					close(h.release)
					if err := <-late; err != nil {
						t.Fatal(err)
					}
					afterLate := lim.seen.arg()
					if lose {
						if err := rdb.Del(ctx, key).Err(); err != nil { // Redis restarts
							t.Fatal(err)
						}
					}
					ok, err := lim.TryAcquire(ctx, 10)
					if err != nil {
						t.Fatal(err)
					}
					// Kept, the key refuses it. Lost, the take that the late
					// reply hid may pass again, as the package documentation
					// says: 10 units beyond the rate, and no more.
					if ok && !lose {
						if err := b.admit(c.Now(), 10); err != nil {
							t.Errorf("(%s) key kept: TryAcquire(10) admitted again at %v: %v", tc.name, c.Elapsed(), err)
						}
					}
					if ok && lose {
						if more, err := lim.TryAcquire(ctx, 1); err != nil || more {
							t.Errorf("(%s) key lost: Level at server S, its reply late; server clock stepped back 50s; TryAcquire(10) "+
								"admitted (sighting %q); the late Level recorded (sighting %q); TryAcquire(10) admitted again, "+
								"and then TryAcquire(1) = %v, %v; want false: only the hidden 10 may pass again", tc.name, afterTake, afterLate, more, err)
						}
					}
				})
			})
		}
	}
}

// TestKeyedLateReplyForgetsDrainedKey: Keyed.latest was the time of the
// reply that came last, so a late reply from before a step back of the
// server's clock put it back ahead, and every sighting made since the step
// looked run out to forget, which then dropped a live key's as readily as
// a drained one's. It is now the time of the reply to the call sent last.
//
// Keyed(10, 1s), room for 2 sightings. A Level on y runs at server S (y
// empty), its reply late. The clock steps back 50s: TryAcquire(x, 10)
// (end S-49s). y's reply came: k.latest = S. A call on w made room: y
// had drained, x held 10 units for 1s more, but both looked run out, and
// x went as often as y. x is lost; TryAcquire(x, 10) at the same instant
// was admitted.
func TestKeyedLateReplyForgetsDrainedKey(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		ctx := context.Background()
		rdb := newClient(t, addr)
		if err := mockTimeScript.Load(ctx, rdb).Err(); err != nil {
			t.Fatal(err)
		}
		for try := range 64 {
			prefix := testPrefix(t, rdb)
			h := newHeldScripter(rdb)
			var behind atomic.Int64
			k := NewKeyed(h, prefix, 10, time.Second, WithClock(c))
			onMockTimeOffset(&k.proto, c, &behind)
			k.memory = 2
			b := newExactBucket(10, time.Second)
			h.hold.Store(true)
			late := make(chan error, 1)
			go func() {
				_, err := k.Level(ctx, "y")
				late <- err
			}()
			<-h.ran
			behind.Store(int64(50 * time.Second))
			if ok, err := k.TryAcquire(ctx, "x", 10); err != nil || !ok {
				t.Fatalf("TryAcquire(x, 10) = %v, %v", ok, err)
			}
			if err := b.admit(c.Now(), 10); err != nil {
				t.Fatal(err)
			}
			close(h.release)
			if err := <-late; err != nil {
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
					t.Errorf("one process, Keyed with room for 2 sightings: Level(y) at server S, its reply late; server clock "+
						"stepped back 50s; TryAcquire(x, 10) (sighting %q); y's reply set k.latest back to S; a call on w forgot "+
						"x, not the drained y (try %d); x lost: TryAcquire(x, 10) admitted again at %v: %v "+
						"(20 units in a window of length 0, bound 10)", arg, try, c.Elapsed(), err)
				}
			}
			return
		}
	})
}
