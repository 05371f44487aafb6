package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// allower is a Limiter or a Window, as the Allow tests use them.
type allower interface {
	Allow(amount float64) ratelimit.Decision
	TryAcquire(amount float64) bool
	HasCapacity(amount float64) bool
	Level() float64
	Pause(d time.Duration)
	SetRate(maxRate float64, period time.Duration)
	MaxRate() float64
}

// allowKinds makes a Limiter or a Window on a clock.
var allowKinds = []struct {
	name string
	make func(maxRate float64, period time.Duration, c clock.Clock) allower
}{
	{"Limiter", func(r float64, p time.Duration, c clock.Clock) allower {
		return ratelimit.New(r, p, ratelimit.WithClock(c))
	}},
	{"Window", func(r float64, p time.Duration, c clock.Clock) allower {
		return ratelimit.NewWindow(r, p, ratelimit.WithClock(c))
	}},
}

// allowRates are the rates of TestAllowAgreesWithTryAcquire: whole and
// fractional, tiny and huge.
var allowRates = []struct {
	maxRate float64
	period  time.Duration
}{
	{4, 8 * time.Second}, {3, time.Second}, {50, time.Second}, {2.5, 100 * time.Millisecond},
	{1e9 / 1.5, time.Second}, {1e12, time.Second}, {1, time.Nanosecond}, {1e-6, time.Second},
	{5000, 400 * 24 * time.Hour}, {0.5, 3 * time.Second},
}

// TestAllowAgreesWithTryAcquire drives two limiters of a kind through the
// same random operations, one taking with Allow and the other with
// TryAcquire, and holds every Decision to what the other limiter then
// does:
//   - OK is TryAcquire's answer, and the levels stay equal;
//   - a refusal's RetryAfter is exact: HasCapacity is false a nanosecond
//     before it, true at it;
//   - floor(Remaining) units fit now (whole units are what the RateLimit
//     header reports), and floor(Remaining)+1 do not;
//   - after Reset, the level is 0 and the whole of MaxRate fits.
//
// The waits and resets move the clock of both limiters, so that the
// checks are part of the random schedule.
func TestAllowAgreesWithTryAcquire(t *testing.T) {
	ops := 0
	for _, kind := range allowKinds {
		for i, s := range allowRates {
			t.Run(fmt.Sprintf("%s/%v per %v", kind.name, s.maxRate, s.period), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(i), 12))
				// The clock starts at 0 and moves at most 2^62 ns in all.
				const steps = 20000
				const maxStep = time.Duration(1<<62) / steps / 2
				c := &stepClock{}
				a, b := kind.make(s.maxRate, s.period, c), kind.make(s.maxRate, s.period, c)
				maxRate := s.maxRate
				for step := range steps {
					ops++
					fail := func(format string, args ...any) {
						t.Helper()
						t.Fatalf("step %d, %v per %v: %s", step, maxRate, s.period, fmt.Sprintf(format, args...))
					}
					switch r := rng.IntN(100); {
					case r < 40:
						c.now += int64(rng.Float64() * rng.Float64() * float64(min(s.period/2, maxStep)))
					case r < 42:
						d := time.Duration(rng.Float64() * float64(s.period))
						a.Pause(d)
						b.Pause(d)
					case r < 44:
						f := []float64{0.5, 1, 2, 3}[rng.IntN(4)]
						if f*s.maxRate/float64(s.period) <= 1000 { // at most 1000 a nanosecond
							maxRate = f * s.maxRate
							a.SetRate(maxRate, s.period)
							b.SetRate(maxRate, s.period)
						}
					default:
						amount := allowAmount(rng, maxRate)
						d := a.Allow(amount)
						ok := b.TryAcquire(amount)
						if d.OK != ok {
							fail("Allow(%v) = %+v, TryAcquire = %v", amount, d, ok)
						}
						if la, lb := a.Level(), b.Level(); la != lb {
							fail("levels %v and %v after Allow(%v)", la, lb, amount)
						}
						if d.OK && d.RetryAfter != 0 {
							fail("admitted with RetryAfter %v", d.RetryAfter)
						}
						if amount > maxRate {
							if !errors.Is(d.Err, ratelimit.ErrExceedsCapacity) || d.OK {
								fail("Allow(%v) over MaxRate %v = %+v", amount, maxRate, d)
							}
						} else if d.Err != nil {
							fail("Allow(%v) = %+v", amount, d)
						}
						checkRemaining(t, b, d, fail)
						if !d.OK && d.Err == nil && rng.IntN(2) == 0 && d.RetryAfter < maxStep {
							// Wait exactly until the amount fits.
							if d.RetryAfter <= 0 {
								fail("refused Allow(%v) with RetryAfter %v", amount, d.RetryAfter)
							}
							c.now += int64(d.RetryAfter - 1)
							if b.HasCapacity(amount) {
								fail("Allow(%v) said %v, but it fits a nanosecond before", amount, d.RetryAfter)
							}
							c.now++
							if !b.HasCapacity(amount) || !a.HasCapacity(amount) {
								fail("Allow(%v) said %v, but it does not fit then", amount, d.RetryAfter)
							}
						} else if rng.IntN(8) == 0 && d.Reset > 0 && d.Reset < maxStep {
							c.now += int64(d.Reset)
							if l := b.Level(); l != 0 || !b.HasCapacity(maxRate) {
								fail("after Reset %v, level %v and HasCapacity(%v) %v", d.Reset, l, maxRate, b.HasCapacity(maxRate))
							}
						}
					}
				}
			})
		}
	}
	t.Logf("%d operations", ops)
}

// checkRemaining checks d.Remaining against what lim admits now.
func checkRemaining(t *testing.T, lim allower, d ratelimit.Decision, fail func(string, ...any)) {
	t.Helper()
	r := d.Remaining
	if r < 0 || r > lim.MaxRate() || math.IsNaN(r) {
		fail("Remaining %v, MaxRate %v", r, lim.MaxRate())
	}
	if whole := math.Floor(r); whole >= 1 && !lim.HasCapacity(whole) {
		fail("Remaining %v, but %v do not fit", r, whole)
	}
	if whole := math.Floor(r) + 1; whole <= lim.MaxRate() && lim.MaxRate() < 1<<52 && lim.HasCapacity(whole) {
		fail("Remaining %v, but %v fit", r, whole)
	}
}

// allowAmount picks an amount: mostly whole units and fractions of
// MaxRate, sometimes 0, sometimes more than MaxRate.
func allowAmount(rng *rand.Rand, maxRate float64) float64 {
	switch r := rng.IntN(20); {
	case r == 0:
		return 0
	case r == 1:
		return maxRate * 1.5
	case r < 10 && maxRate >= 1:
		return float64(1 + rng.IntN(int(min(maxRate, 8))))
	default:
		return maxRate * rng.Float64() / 3
	}
}

// TestAllowBehindWaiters checks that Allow refuses while callers wait,
// reports nothing remaining, and gives the wait Acquire would have: that
// of a DeadlineError.
func TestAllowBehindWaiters(t *testing.T) {
	for _, kind := range allowKinds {
		t.Run(kind.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := kind.make(4, 8*time.Second, c)
				acq := lim.(interface {
					Acquire(context.Context, float64) error
				})
				for range 4 {
					if d := lim.Allow(1); !d.OK {
						t.Fatalf("burst refused: %+v", d)
					}
				}
				done := make(chan error)
				go func() { done <- acq.Acquire(context.Background(), 1) }()
				c.Settle()
				d := lim.Allow(1)
				if d.OK || d.Remaining != 0 || d.Err != nil {
					t.Fatalf("Allow behind a waiter = %+v", d)
				}
				// Empty once the waiter has gone through: bucket, at 10 s (it
				// goes at 2 s, when the bucket is full up to 8 s); window, at
				// 16 s (it goes at 8 s).
				wantReset := map[string]time.Duration{"Limiter": 10 * time.Second, "Window": 16 * time.Second}[kind.name]
				if d.Reset != wantReset {
					t.Fatalf("Reset behind a waiter %v, want %v", d.Reset, wantReset)
				}
				ctx, cancel := context.WithDeadline(context.Background(), c.Now().Add(d.RetryAfter))
				var de *ratelimit.DeadlineError
				if err := acq.Acquire(ctx, 1); !errors.As(err, &de) || de.Wait != d.RetryAfter {
					t.Fatalf("Allow said %v; Acquire with that deadline: %v", d.RetryAfter, err)
				}
				cancel()
				// Bucket: the waiter goes at 2 s, a newcomer at 4 s; window:
				// at 8 s and 8 s.
				want := map[string]time.Duration{"Limiter": 4 * time.Second, "Window": 8 * time.Second}[kind.name]
				if d.RetryAfter != want {
					t.Fatalf("RetryAfter %v, want %v", d.RetryAfter, want)
				}
				c.Advance(8 * time.Second)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestWindowAllowHeaders pins the Window's Decision on the seed's
// schedule: NewWindow(4, 8s) takes four units at 0, .01, .02, .03 s.
func TestWindowAllowHeaders(t *testing.T) {
	c := clock.NewMock()
	w := ratelimit.NewWindow(4, 8*time.Second, ratelimit.WithClock(c))
	for i := range 4 {
		d := w.Allow(1)
		want := ratelimit.Decision{OK: true, Remaining: float64(3 - i), Reset: 8 * time.Second}
		if d != want {
			t.Fatalf("Allow %d = %+v, want %+v", i, d, want)
		}
		c.Add(10 * time.Millisecond)
	}
	// At 0.04 s: full until the first leaves at 8 s; empty at 8.03 s.
	d := w.Allow(1)
	want := ratelimit.Decision{RetryAfter: 8*time.Second - 40*time.Millisecond, Reset: 8*time.Second - 10*time.Millisecond}
	if d != want {
		t.Fatalf("Allow when full = %+v, want %+v", d, want)
	}
	w.Pause(20 * time.Second)
	d = w.Allow(0)
	want = ratelimit.Decision{OK: true, Reset: 20 * time.Second}
	if d != want {
		t.Fatalf("Allow(0) in a pause = %+v, want %+v", d, want)
	}
	c.Add(20 * time.Second)
	if d := w.Allow(2.5); d != (ratelimit.Decision{OK: true, Remaining: 1.5, Reset: 8 * time.Second}) {
		t.Fatalf("Allow(2.5) after it all = %+v", d)
	}
}
