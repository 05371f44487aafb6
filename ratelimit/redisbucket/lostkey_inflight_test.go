package redisbucket

// A call's ARGV[4] is the sighting when it is sent: it holds no reply of
// a call still in flight. A reserve that ran on the server, whose reply
// had not been recorded yet, was in no sighting that a call sent meanwhile
// carried; if the key was lost between the two, the second wrote the key
// back without the first's turn, and both callers were admitted at once.
// The units of the reserves in flight now go with the sighting, and a key
// written back holds them behind the bucket.

import (
	"context"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
)

// TestLostKeyKeepsReserveInFlight: one Limiter, New(10, 1s), no clock
// step. TryAcquire(10) at 0 fills the bucket (end 1s, recorded). Acquire(5)
// (Y) runs on the server at 0 and reserves the turn at 0.5s (tat 1.5s);
// its reply is still on its way (another pooled connection, a goroutine
// descheduled between the reply and its record). Redis loses the key
// (FLUSHALL, an eviction, a failover to a replica that missed Y's write).
// Acquire(5) (X), sent now, carried the sighting "end 1s": the key came
// back full at 1s, without Y's 5 units, and X was given the turn at 0.5s
// too. Y's reply came: both returned at 0.5s, 20 units in [0, 0.5s],
// bound 15. Without the loss X's turn is at 1s.
func TestLostKeyKeepsReserveInFlight(t *testing.T) {
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
				h := newHeldScripter(rdb)
				lim := onMockTime(New(h, key, 10, time.Second, WithClock(c)), c)
				b := newExactBucket(10, time.Second)

				takeFull(t, ctx, c, lim, b)

				h.hold.Store(true)
				y := make(chan result, 1)
				go func() {
					err := lim.Acquire(ctx, 5)
					y <- result{c.Elapsed(), err}
				}()
				<-h.ran // Y reserved its turn on the server; its reply is late
				if lose {
					if err := rdb.Del(ctx, key).Err(); err != nil { // Redis loses the key
						t.Fatal(err)
					}
				}
				arg := lim.seen.arg()
				x := make(chan result, 1)
				go func() {
					err := lim.Acquire(ctx, 5)
					x <- result{c.Elapsed(), err}
				}()
				c.Settle() // X reserved, and sleeps until its turn
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
				if n > bound {
					t.Errorf("one process, no clock step, key lost=%v: TryAcquire(10) at 0; Acquire(5) Y reserved on the server, "+
						"its reply late; Acquire(5) X sent with sighting %q; admitted %v: %v units in [%v, %v], bound %v "+
						"(%v units beyond the rate)", lose, arg, admitted, n, from, to, bound, n-bound)
				}
			})
		})
	}
}
