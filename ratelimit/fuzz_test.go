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
	op     int // index of the operation after which it was seen
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
//     MaxRate + rate*t units are admitted, exactly (up to float64 sums);
//   - nothing is admitted while a Pause lasts.
//
// The first byte picks the limiter's rate, from ordinary ones to units of
// a fraction of a nanosecond and units of days.
func FuzzLimiter(f *testing.F) {
	f.Add([]byte{0, 10, 0, 20, 2, 50, 1, 0, 2, 200, 2, 255})
	f.Add([]byte{3, 8, 3, 8, 0, 64, 0, 64, 4, 3, 2, 100, 2, 100, 5, 10, 2, 250})
	f.Add([]byte{0, 255, 0, 1, 0, 128, 1, 1, 4, 200, 2, 30, 1, 0, 2, 255, 2, 255})
	f.Add([]byte{5, 40, 0, 16, 0, 16, 4, 1, 2, 90, 3, 255, 2, 255, 2, 255, 2, 255})
	f.Add([]byte{0, 0, 0, 1, 0, 2, 0, 70, 0, 3, 2, 40, 1, 0, 0, 4, 0, 5, 2, 100, 1, 1, 2, 255})
	// Odd lengths: the first byte picks the rate.
	f.Add([]byte{4, 0, 10, 0, 200, 3, 255, 2, 1, 0, 255, 2, 3})       // 1e12 per second
	f.Add([]byte{5, 3, 31, 0, 10, 0, 20, 2, 1, 3, 7, 5, 0, 3, 31})    // 1 per nanosecond
	f.Add([]byte{6, 3, 10, 3, 10, 3, 10, 2, 1, 4, 9, 0, 5, 2, 1})     // 1.5 ns a unit
	f.Add([]byte{8, 0, 63, 0, 1, 2, 255, 3, 31, 5, 100, 2, 200})      // 1e-6 per second
	f.Add([]byte{2, 0, 63, 0, 20, 2, 255, 5, 50, 0, 7, 2, 60, 2, 60}) // 2.7 per second, a pause
	f.Fuzz(func(t *testing.T, ops []byte) {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			fuzzRun(t, c, ops)
		})
	})
}

// fuzzRates are the rates a fuzz run can start with.
var fuzzRates = []setting{
	{4, time.Second}, {3, time.Second}, {2.7, time.Second}, {0.5, time.Second},
	{1e12, time.Second}, {1, time.Nanosecond}, {2, 3 * time.Nanosecond}, {1e6, time.Millisecond},
	{1e-6, time.Second}, {7, 24 * time.Hour},
}

// A pause seen by the fuzz driver: nothing may be admitted in [from, to).
type pauseSpan struct {
	from, to time.Duration
	op       int // index of the Pause operation
}

func fuzzRun(t *testing.T, c *clocktest.Clock, ops []byte) {
	maxRate, period := 4.0, time.Second
	if len(ops)%2 == 1 {
		s := fuzzRates[int(ops[0])%len(fuzzRates)]
		maxRate, period = s.maxRate, s.period
		ops = ops[1:]
	}
	lim := ratelimit.New(maxRate, period, ratelimit.WithClock(c))
	var pauses []pauseSpan
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
	op := 0 // the operation's index
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
					admits = append(admits, admission{r.at, w.amount, seg(), op})
				case errors.Is(err, context.Canceled), errors.Is(err, ratelimit.ErrExceedsCapacity):
				default:
					t.Fatalf("waiter %d: unexpected error %v", w.arrival, err)
				}
			default:
			}
		}
	}
	for ; len(ops) >= 2; op++ {
		kind, arg := ops[0]%6, ops[1]
		ops = ops[2:]
		switch kind {
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
				admits = append(admits, admission{c.Elapsed(), amount, seg(), op})
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
			pauses = append(pauses, pauseSpan{c.Elapsed(), c.Elapsed() + time.Duration(arg)*10*ms, op})
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
		// A pause in progress shows as a level too, at the rate in force:
		// a SetRate to a faster one may put it above MaxRate.
		paused := false
		for _, p := range pauses {
			paused = paused || c.Elapsed() < p.to
		}
		if level <= lim.MaxRate() && !paused {
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
			if limit := s.maxRate + s.rate*window; sum > limit*(1+1e-12) {
				t.Fatalf("%v units admitted in %v s, more than %v", sum, window, limit)
			}
		}
	}
	for _, a := range admits {
		for _, p := range pauses {
			if a.op > p.op && a.at < p.to {
				t.Fatalf("%v units admitted at %v, during a pause from %v to %v", a.amount, a.at, p.from, p.to)
			}
		}
	}
}
