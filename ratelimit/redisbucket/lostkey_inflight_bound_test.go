package redisbucket

// What no process can remember: a call in flight when the key is lost. A
// reserve or a take that ran on the server, its reply not yet received,
// is in no sighting when the bucket had drained before it; and a call
// whose request was built before another ran, and reaches the server
// after it and after the loss, carries a sighting without that other's
// turn. Each test below passed more than the rate with the key lost (an
// attack on d7bd438, which carries the reserves in flight in the
// sighting, but only when the key should still hold a bucket); what
// passes beyond it is at most the units of the calls in flight at the
// loss, as the package documentation says, and nothing without the loss.

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/redis/go-redis/v9"
)

// sendHeldScripter is a redis.Scripter that, while hold is set, keeps the
// next script from being sent until release is closed, and says on
// waiting that its call was built: a request that reaches the server late
// (a goroutine descheduled before its write, a wait for a pooled
// connection), after calls built later.
type sendHeldScripter struct {
	redis.Scripter
	hold    atomic.Bool
	waiting chan struct{}
	release chan struct{}
}

func newSendHeldScripter(s redis.Scripter) *sendHeldScripter {
	return &sendHeldScripter{Scripter: s, waiting: make(chan struct{}), release: make(chan struct{})}
}

func (h *sendHeldScripter) wait() {
	if h.hold.CompareAndSwap(true, false) {
		close(h.waiting)
		<-h.release
	}
}

func (h *sendHeldScripter) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	h.wait()
	return h.Scripter.EvalSha(ctx, sha1, keys, args...)
}

func (h *sendHeldScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	h.wait()
	return h.Scripter.Eval(ctx, script, keys, args...)
}

// TestLostKeyPassesAtMostCallsInFlight: New(10, 1s). "fresh": the
// Limiter has seen no reply. "runout": TryAcquire(10) at 0 (end 1s,
// recorded), then the clock moves to 2s (the bucket drained; the sighting
// has no end ahead). Acquire(10) Y runs on the server (at 0 or 2s):
// admitted at once, its tat 1s later; its reply is late (heldScripter).
// Redis loses the key. Acquire(10) X is sent: its sighting has no end
// ahead of now (or is "0", which carries no " r " at all), so the script
// writes nothing back, and X is admitted at once. Y's reply comes: Y
// admitted then too. 20 units in a window of length 0, bound 10: Y's 10,
// in flight, beyond it. Without the loss X's turn is 1s later.
func TestLostKeyPassesAtMostCallsInFlight(t *testing.T) {
	addr := redisAddr(t)
	for _, runout := range []bool{false, true} {
		for _, lose := range []bool{false, true} {
			name := "fresh"
			if runout {
				name = "runout"
			}
			if lose {
				name += "/lost"
			} else {
				name += "/kept"
			}
			t.Run(name, func(t *testing.T) {
				clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
					ctx := context.Background()
					rdb, key := scriptedKey(t, addr)
					h := newHeldScripter(rdb)
					lim := onMockTime(New(h, key, 10, time.Second, WithClock(c)), c)
					admitted := map[time.Duration]float64{}
					if runout {
						if ok, err := lim.TryAcquire(ctx, 10); err != nil || !ok {
							t.Fatalf("TryAcquire(10) at 0 = %v, %v", ok, err)
						}
						admitted[c.Elapsed()] += 10
						c.Advance(2 * time.Second) // drained; the sighting has run out
					}

					ran := c.Elapsed()
					h.hold.Store(true)
					y := make(chan result, 1)
					go func() {
						err := lim.Acquire(ctx, 10)
						y <- result{c.Elapsed(), err}
					}()
					<-h.ran // Y reserved on the server; its reply is late
					if lose {
						if err := rdb.Del(ctx, key).Err(); err != nil {
							t.Fatal(err)
						}
					}
					arg := lim.seen.arg()
					x := make(chan result, 1)
					go func() {
						err := lim.Acquire(ctx, 10)
						x <- result{c.Elapsed(), err}
					}()
					c.Settle()
					close(h.release)
					c.Settle()
					for _, w := range []struct {
						name string
						ch   <-chan result
					}{{"Y", y}, {"X", x}} {
						r := waitFor(t, c, w.ch, 3*time.Second)
						if r.err != nil {
							t.Fatalf("Acquire(10) %s: %v", w.name, r.err)
						}
						admitted[r.at] += 10
					}
					from, to, n, bound := worstWindow(admitted, 10, time.Second)
					inFlight := 0.0
					if lose {
						inFlight = 10 // Y, in flight at the loss
					}
					if n > bound+inFlight {
						t.Errorf("one process, no clock step, key lost=%v (%s): Acquire(10) Y ran on the server at %v "+
							"(admitted at once, tat 1s later), its reply late; Acquire(10) X sent with sighting %q; "+
							"admitted %v: %v units in [%v, %v], bound %v, %v beyond it; want at most the %v units in flight",
							lose, name, ran, arg, admitted, n, from, to, bound, n-bound, inFlight)
					}
				})
			})
		}
	}
}

// TestLostKeyDelayedRequestPassesAtMostItsUnits: New(10, 1s). TryAcquire(10)
// at 0 fills the bucket (end 1s, recorded). Acquire(5) X is built with the
// sighting "end 1s" and no reserve in flight, and its request is delayed
// before it reaches the server (sendHeldScripter). Acquire(5) Y is built
// after it (its sighting carries X's "r 5"), runs on the server first,
// reserves the turn at 0.5s (tat 1.5s), and its reply is recorded (end
// 1.5s). Redis loses the key. X's request arrives, with its snapshot "end
// 1s": the key comes back full at 1s, and X is given the turn at 0.5s too.
// 20 units in [0, 0.5s], bound 15. Without the loss X's turn is at 1s.
// Only requests are delayed here, no reply: X's arg was taken before Y
// was sent, so nothing in it, in flight or recorded, can hold Y's turn.
func TestLostKeyDelayedRequestPassesAtMostItsUnits(t *testing.T) {
	addr := redisAddr(t)
	for _, lose := range []bool{false, true} {
		name := "kept"
		if lose {
			name = "lost"
		}
		t.Run(name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx := context.Background()
				rdb, key := scriptedKey(t, addr)
				h := newSendHeldScripter(rdb)
				lim := onMockTime(New(h, key, 10, time.Second, WithClock(c)), c)
				b := newExactBucket(10, time.Second)

				takeFull(t, ctx, c, lim, b)
				argX := lim.seen.arg()

				h.hold.Store(true)
				x := make(chan result, 1)
				go func() {
					err := lim.Acquire(ctx, 5)
					x <- result{c.Elapsed(), err}
				}()
				<-h.waiting // X built with argX; its request is late
				argY := lim.seen.arg()
				y := acquireAt(ctx, c, lim, 5) // Y ran, was recorded, and sleeps until its turn
				recorded := lim.seen.arg()
				if lose {
					if err := rdb.Del(ctx, key).Err(); err != nil { // Redis loses the key
						t.Fatal(err)
					}
				}
				close(h.release)
				c.Settle()

				admitted := map[time.Duration]float64{0: 10}
				for _, w := range []struct {
					name string
					ch   <-chan result
				}{{"Y", y}, {"X", x}} {
					r := waitFor(t, c, w.ch, 3*time.Second)
					if r.err != nil {
						t.Fatalf("Acquire(5) %s: %v", w.name, r.err)
					}
					admitted[r.at] += 5
				}
				from, to, n, bound := worstWindow(admitted, 10, time.Second)
				inFlight := 0.0
				if lose {
					inFlight = 5 // X, in flight at the loss
				}
				if n > bound+inFlight {
					t.Errorf("one process, no clock step, no reply delayed, key lost=%v: TryAcquire(10) at 0; Acquire(5) X built "+
						"with sighting %q, its request late; Acquire(5) Y built with %q, ran first, recorded (sighting %q); "+
						"X ran with %q; admitted %v: %v units in [%v, %v], bound %v, %v beyond it; want at most the %v units in flight",
						lose, argX, argY, recorded, argX, admitted, n, from, to, bound, n-bound, inFlight)
				}
			})
		})
	}
}
