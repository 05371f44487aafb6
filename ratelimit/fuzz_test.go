package ratelimit_test

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// An admission seen by the fuzz driver, in clock order.
type admission struct {
	at     time.Duration
	amount float64
	seg    int // index of the rate segment it falls in
}

type fuzzWaiter struct {
	arrival int
	amount  float64
	cancel  context.CancelFunc
	res     chan result
	done    bool
}

// FuzzLimiter drives random sequences of acquire, cancel, advance, SetRate,
// Pause and TryAcquire on a mocked clock and checks the invariants after
// every step:
//   - the level is never negative, and never above MaxRate except after a
//     Pause or a SetRate that lowered it;
//   - waiters are admitted in arrival order;
//   - every waiter ends admitted, cancelled or refused (capacity lowered);
//   - in any window of length t within one rate segment, at most
//     MaxRate + rate*t units are admitted (plus a nanosecond of rounding per
//     admission).
func FuzzLimiter(f *testing.F) {
	f.Add([]byte{0, 10, 0, 20, 2, 50, 1, 0, 2, 200, 2, 255})
	f.Add([]byte{3, 8, 3, 8, 0, 64, 0, 64, 4, 3, 2, 100, 2, 100, 5, 10, 2, 250})
	f.Add([]byte{0, 255, 0, 1, 0, 128, 1, 1, 4, 200, 2, 30, 1, 0, 2, 255, 2, 255})
	f.Add([]byte{5, 40, 0, 16, 0, 16, 4, 1, 2, 90, 3, 255, 2, 255, 2, 255, 2, 255})
	f.Add([]byte{0, 0, 0, 1, 0, 2, 0, 70, 0, 3, 2, 40, 1, 0, 0, 4, 0, 5, 2, 100, 1, 1, 2, 255})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			fuzzRun(t, c, ops)
		})
	})
}

func fuzzRun(t *testing.T, c *clocktest.Clock, ops []byte) {
	maxRate, period := 4.0, time.Second
	lim := ratelimit.New(maxRate, period, ratelimit.WithClock(c))
	var (
		waiters   []*fuzzWaiter
		admits    []admission
		segments  = []struct{ maxRate, rate float64 }{{maxRate, maxRate / period.Seconds()}}
		overfull  bool // a Pause or a lowering SetRate may leave level > MaxRate
		lastAdmit = -1 // arrival number of the last waiter admitted
	)
	seg := func() int { return len(segments) - 1 }
	var shared [2]struct {
		ctx    context.Context
		cancel context.CancelFunc
	}
	for i := range shared {
		shared[i].ctx, shared[i].cancel = context.WithCancel(context.Background())
	}
	collect := func() {
		for _, w := range waiters {
			if w.done {
				continue
			}
			select {
			case r := <-w.res:
				w.done = true
				switch err := r.err; {
				case err == nil:
					if w.arrival < lastAdmit {
						t.Fatalf("waiter %d admitted after waiter %d", w.arrival, lastAdmit)
					}
					lastAdmit = w.arrival
					admits = append(admits, admission{r.at, w.amount, seg()})
				case errors.Is(err, context.Canceled), errors.Is(err, ratelimit.ErrExceedsCapacity):
				default:
					t.Fatalf("waiter %d: unexpected error %v", w.arrival, err)
				}
			default:
			}
		}
	}
	for len(ops) >= 2 {
		op, arg := ops[0]%6, ops[1]
		ops = ops[2:]
		switch op {
		case 0: // a waiter for up to MaxRate units, on its own context or a shared one
			amount := float64(arg%64+1) / 64 * lim.MaxRate()
			ctx, cancel := context.WithCancel(context.Background())
			if k := arg / 64; k < 2 {
				ctx, cancel = shared[k].ctx, shared[k].cancel
			}
			w := &fuzzWaiter{arrival: len(waiters), amount: amount, cancel: cancel, res: make(chan result, 1)}
			waiters = append(waiters, w)
			go func() {
				err := lim.Acquire(ctx, amount)
				w.res <- result{c.Elapsed(), err}
			}()
		case 1: // cancel one waiter
			if len(waiters) > 0 {
				waiters[int(arg)%len(waiters)].cancel()
			}
		case 2: // let time pass
			c.Advance(time.Duration(arg) * 7 * ms)
		case 3: // TryAcquire
			amount := float64(arg%32+1) / 32 * lim.MaxRate()
			if lim.TryAcquire(amount) {
				admits = append(admits, admission{c.Elapsed(), amount, seg()})
			}
		case 4: // SetRate
			newMax := float64(arg%8 + 1)
			newPeriod := time.Duration(arg/8+1) * 100 * ms
			if newMax < lim.MaxRate() {
				overfull = true
			}
			lim.SetRate(newMax, newPeriod)
			segments = append(segments, struct{ maxRate, rate float64 }{newMax, newMax / newPeriod.Seconds()})
		case 5: // Pause
			lim.Pause(time.Duration(arg) * 10 * ms)
			overfull = overfull || arg > 0
		}
		c.Settle()
		collect()
		level := lim.Level()
		if level < 0 || math.IsNaN(level) {
			t.Fatalf("level %v", level)
		}
		if level > lim.MaxRate()+1e-9 && !overfull {
			t.Fatalf("level %v above MaxRate %v with no Pause or lowering SetRate", level, lim.MaxRate())
		}
		if level <= lim.MaxRate() {
			overfull = false
		}
	}
	// Cancel everyone left, and check that everyone returned.
	for _, w := range waiters {
		w.cancel()
	}
	c.Settle()
	collect()
	for _, w := range waiters {
		if !w.done {
			t.Fatalf("waiter %d never returned", w.arrival)
		}
	}
	if n := lim.Waiting(); n != 0 {
		t.Fatalf("%d still waiting after all returned", n)
	}
	// The window bound, within each segment.
	slices.SortStableFunc(admits, func(a, b admission) int { return cmp.Compare(a.at, b.at) })
	for i := range admits {
		sum := 0.0
		for j := i; j < len(admits) && admits[j].seg == admits[i].seg; j++ {
			sum += admits[j].amount
			s := segments[admits[i].seg]
			window := (admits[j].at - admits[i].at).Seconds()
			slack := float64(j-i+1) * 1e-9 * s.rate
			if limit := s.maxRate + s.rate*window + slack + 1e-9; sum > limit {
				t.Fatalf("%v units admitted in %v s, more than %v", sum, window, limit)
			}
		}
	}
}
