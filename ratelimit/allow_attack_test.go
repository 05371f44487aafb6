package ratelimit

// Adversarial tests of Limiter.Allow, Window.Allow and the Decision they
// report. TestAllowLimiterLateTimer and
// TestAllowLateTimerAdmitsOverdueWaitersFirst failed on the first version
// of Allow (see each); TestAllowAttack* tests probe hard cases that held.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/internal/clocktest"
)

// The late-timer attacks use window_attack_test.go's waLateClock: a mocked
// clock on which the limiters' timers fire only when the test calls
// fireLate, as a loaded machine runs a timer's callback late.

// aaLim is what the attacks use of a Limiter, a Window or a KeyLimiter.
type aaLim interface {
	Allow(amount float64) Decision
	TryAcquire(amount float64) bool
	HasCapacity(amount float64) bool
	Acquire(ctx context.Context, amount float64) error
	Level() float64
	Waiting() int
	Pause(d time.Duration)
	MaxRate() float64
}

// aaResult is what an Acquire returned, and when (since clocktest.Start).
type aaResult struct {
	at  time.Duration
	err error
}

// aaGo calls Acquire on a new goroutine and settles, so that the call has
// been admitted, refused or queued when it returns.
func aaGo(ctx context.Context, c *clocktest.Clock, l aaLim, amount float64) <-chan aaResult {
	ch := make(chan aaResult, 1)
	go func() {
		err := l.Acquire(ctx, amount)
		ch <- aaResult{c.Elapsed(), err}
	}()
	c.Settle()
	return ch
}

func aaPoll(ch <-chan aaResult) (aaResult, bool) {
	select {
	case r := <-ch:
		return r, true
	default:
		return aaResult{}, false
	}
}

// TestAllowLimiterLateTimer: a Limiter's Allow (and a Keyed's, for a key
// with callers waiting) must answer from the bucket as it is when the
// timer that admits an overdue waiter runs late (a loaded machine, a GC
// pause, a stopped process). The first version did not run the queue
// first, as Window.Allow does.
//
// New(4, 8s), full at 0; a caller waits for 4 units (due at 8s); an Allow
// at 0 makes due() cache the queue's tail. The timer is late, and at 20s
// the waiter is still queued: the first version read the tail cached at 0
// and reported a RetryAfter of -10s and a Reset of 0 (an HTTP middleware
// would send "Retry-After: -10"), while the waiter's 4 units fill the
// bucket until 28s; with a waiter of 1 unit, a refusal with a RetryAfter
// of 0. Allow now admits the overdue waiter first, and answers: refused,
// RetryAfter 2s, Reset 8s.
func TestAllowLimiterLateTimer(t *testing.T) {
	makers := []struct {
		name string
		make func(c clock.Clock) aaLim
	}{
		{"Limiter", func(c clock.Clock) aaLim { return New(4, 8*time.Second, WithClock(c)) }},
		{"KeyLimiter", func(c clock.Clock) aaLim {
			return NewKeyed[string](4, 8*time.Second, WithClock(c)).Key("k")
		}},
	}
	for _, m := range makers {
		t.Run(m.name+"/near-full waiter", func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lc := &waLateClock{Mock: c.Mock}
				l := m.make(lc)
				if !l.TryAcquire(4) {
					t.Fatal("burst refused")
				}
				w := aaGo(context.Background(), c, l, 4) // due at 8s
				if d := l.Allow(1); d.OK || d.RetryAfter != 10*time.Second || d.Reset != 16*time.Second {
					t.Fatalf("Allow(1) at 0 behind the waiter = %+v; want RetryAfter 10s, Reset 16s", d)
				}
				c.AdvanceTo(t, 20*time.Second) // the timer is due at 8s, but late
				d := l.Allow(1)
				if lc.fireLate() == 0 {
					t.Fatal("no timer was put aside: the test does not test the late timer")
				}
				c.Settle()
				if r, ok := aaPoll(w); !ok || r.err != nil || r.at != 20*time.Second {
					t.Fatalf("the waiter: %+v, %v; want admitted at 20s when its timer ran", r, ok)
				}
				// The waiter went at 20s: the bucket is full until 28s, a unit
				// fits at 22s.
				if d.OK || d.RetryAfter != 2*time.Second || d.Reset != 8*time.Second {
					t.Errorf("Allow(1) at 20s, the waiter's timer late = %+v; want refused, RetryAfter 2s and Reset 8s "+
						"(the waiter's 4 units go in when the timer runs, at 20s at the earliest)", d)
				}
				if d.RetryAfter < 0 {
					t.Errorf("negative RetryAfter %v: the queue's tail cached at 0 was used at 20s", d.RetryAfter)
				}
				if lv := l.Level(); d.Reset < 8*time.Second {
					t.Errorf("Reset %v, but the level is %v now and the bucket is empty only at 28s", d.Reset, lv)
				}
			})
		})
		t.Run(m.name+"/small waiter", func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lc := &waLateClock{Mock: c.Mock}
				l := m.make(lc)
				if !l.TryAcquire(4) {
					t.Fatal("burst refused")
				}
				w := aaGo(context.Background(), c, l, 1) // due at 2s
				c.AdvanceTo(t, 9*time.Second)            // late: the bucket is empty
				d := l.Allow(1)
				if lc.fireLate() == 0 {
					t.Fatal("no timer was put aside: the test does not test the late timer")
				}
				c.Settle()
				if r, ok := aaPoll(w); !ok || r.err != nil {
					t.Fatalf("the waiter: %+v, %v; want admitted", r, ok)
				}
				if !d.OK && d.Err == nil && d.RetryAfter <= 0 {
					t.Errorf("Allow(1) at 9s with the waiter's timer late = %+v: refused, with RetryAfter %v "+
						"(the bucket is empty: the waiter and the newcomer both fit now)", d, d.RetryAfter)
				}
			})
		})
	}
}

// TestAllowAttackWindowLateTimer is TestAllowLimiterLateTimer's
// schedule on a Window, which holds: Window.Allow runs the queue first,
// so the overdue waiter is admitted at 20s (invalidating the sim built at
// 0, since it goes later than foreseen), and the Decision is about the
// window as it then is: full until 28s.
func TestAllowAttackWindowLateTimer(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lc := &waLateClock{Mock: c.Mock}
		w := NewWindow(4, 8*time.Second, WithClock(lc))
		if !w.TryAcquire(4) {
			t.Fatal("burst refused")
		}
		ch := aaGo(context.Background(), c, w, 4) // due at 8s
		if d := w.Allow(1); d.OK || d.RetryAfter != 16*time.Second || d.Reset != 16*time.Second {
			t.Fatalf("Allow(1) at 0 behind the waiter = %+v; want RetryAfter 16s, Reset 16s", d)
		}
		c.AdvanceTo(t, 20*time.Second)
		d := w.Allow(1)
		lc.fireLate()
		c.Settle()
		if r, ok := aaPoll(ch); !ok || r.err != nil || r.at != 20*time.Second {
			t.Fatalf("the waiter: %+v, %v; want admitted at 20s, by Allow", r, ok)
		}
		if d.OK || d.RetryAfter != 8*time.Second || d.Reset != 8*time.Second || d.Remaining != 0 {
			t.Errorf("Allow(1) at 20s, the waiter's timer late = %+v; want refused, RetryAfter 8s, Reset 8s", d)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.q.live != 0 || w.timer != nil || w.armed {
			t.Errorf("Window left with %d waiting, timer %v, armed %v", w.q.live, w.timer != nil, w.armed)
		}
	})
}

// TestAllowLateTimerAdmitsOverdueWaitersFirst pins what Allow does when
// the timer of a waiter whose turn has come runs late: it admits the
// waiter first, then answers for the newcomer, on a Window and on a
// Limiter alike, where TryAcquire leaves the waiter to its timer and
// refuses (as TestWindowAttackEstimateLateTimer pins). The first version
// of Limiter.Allow refused and reported a wrong RetryAfter; Window.Allow
// disagreed with TryAcquire with no word in the docs. Either way the
// limiter's rule holds: the waiter and the newcomer both fit.
func TestAllowLateTimerAdmitsOverdueWaitersFirst(t *testing.T) {
	for _, kind := range []struct {
		name string
		make func(c clock.Clock) aaLim
	}{
		{"Window", func(c clock.Clock) aaLim { return NewWindow(4, 8*time.Second, WithClock(c)) }},
		{"Limiter", func(c clock.Clock) aaLim { return New(4, 8*time.Second, WithClock(c)) }},
	} {
		t.Run(kind.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lc := &waLateClock{Mock: c.Mock}
				a, b := kind.make(lc), kind.make(lc)
				for _, l := range []aaLim{a, b} {
					if !l.TryAcquire(4) {
						t.Fatal("burst refused")
					}
				}
				wa := aaGo(context.Background(), c, a, 1)
				wb := aaGo(context.Background(), c, b, 1)
				c.AdvanceTo(t, 10*time.Second) // both timers (8 s, 2 s) late
				// TryAcquire leaves the waiter to its timer, and refuses.
				if b.TryAcquire(1) {
					t.Error("TryAcquire(1) admitted past a waiter")
				}
				// Allow admits the waiter first, at 10 s, then the newcomer,
				// which the bucket (empty since 8 s, at 1 unit per 2 s) and
				// the window (the burst left at 8 s) both have room for.
				if d := a.Allow(1); !d.OK {
					t.Errorf("Allow(1) at 10 s, the waiter's timer late = %+v; want admitted after the waiter", d)
				}
				c.Settle()
				if r, ok := aaPoll(wa); !ok || r.err != nil || r.at != 10*time.Second {
					t.Fatalf("the waiter behind Allow: %+v, %v; want admitted at 10 s", r, ok)
				}
				if lv := a.Level(); lv != 2 {
					t.Errorf("level %v after the waiter and Allow, want 2", lv)
				}
				lc.fireLate()
				c.Settle()
				if r, ok := aaPoll(wb); !ok || r.err != nil {
					t.Fatalf("the other waiter: %+v, %v", r, ok)
				}
			})
		})
	}
}

// aaKind makes a limiter of one kind for the attacks.
type aaKind struct {
	name   string
	window bool
	make   func(c clock.Clock, maxRate float64, period time.Duration) aaRateLim
}

type aaRateLim interface {
	aaLim
	SetRate(maxRate float64, period time.Duration)
}

var aaKinds = []aaKind{
	{"Limiter", false, func(c clock.Clock, r float64, p time.Duration) aaRateLim { return New(r, p, WithClock(c)) }},
	{"Window", true, func(c clock.Clock, r float64, p time.Duration) aaRateLim { return NewWindow(r, p, WithClock(c)) }},
	{"Window/resolution", true, func(c clock.Clock, r float64, p time.Duration) aaRateLim {
		return NewWindow(r, p, WithClock(c), WithResolution(p/7))
	}},
}

var aaRates = []struct {
	maxRate float64
	period  time.Duration
}{
	{4, 8 * time.Second}, {3, time.Second}, {2.5, 100 * time.Millisecond}, {1e9 / 1.5, time.Second},
	{1, time.Millisecond}, {10, 10 * 24 * time.Hour}, {0.5, 3 * time.Second}, {7, 29 * time.Millisecond},
}

// aaAdmission is an admission the attacks saw: when, and how much.
type aaAdmission struct {
	at     time.Duration
	amount float64
}

// TestAllowAttackBehindWaiters drives every kind through random
// schedules of Allow, TryAcquire, Acquire left to wait (some with
// deadlines, some cancelled), Pause, SetRate and clock steps, on the
// synchronised mock clock, and holds each Decision to what then happens:
//   - RetryAfter >= 0, Reset >= 0, 0 <= Remaining <= MaxRate;
//   - a refusal (with no Err) has RetryAfter > 0, and an Acquire of the
//     same amount made right after it, with nothing else done, is admitted
//     exactly RetryAfter later, not a nanosecond before;
//   - HasCapacity(Remaining) and HasCapacity(floor(Remaining)) hold;
//   - after waiting Reset with nothing else done, every caller that waited
//     at the Allow has been admitted, the level is 0 and MaxRate fits;
//   - over the whole run (without SetRate), no window of time holds more
//     than the bound: MaxRate + MaxRate*t/Period for a bucket, MaxRate in
//     any Period for a window.
func TestAllowAttackBehindWaiters(t *testing.T) {
	var probes, behind, resets int
	for _, kind := range aaKinds {
		for seed := range uint64(16) {
			s := aaRates[int(seed)%len(aaRates)]
			setRates := seed%2 == 1
			t.Run(fmt.Sprintf("%s/%d/%v per %v", kind.name, seed, s.maxRate, s.period), func(t *testing.T) {
				clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
					p, b, r := aaBehindWaiters(t, c, kind, seed, s.maxRate, s.period, setRates)
					probes += p
					behind += b
					resets += r
				})
			})
		}
	}
	t.Logf("%d RetryAfter probes (%d behind waiters), %d Reset probes", probes, behind, resets)
	if probes < 200 || behind < 50 || resets < 100 {
		t.Errorf("too few probes to be sure: %d RetryAfter (%d behind waiters), %d Reset", probes, behind, resets)
	}
}

type aaWaiter struct {
	amount   float64
	cancel   context.CancelFunc
	ch       <-chan aaResult
	deadline bool // its context has a deadline, which may end it
	gone     bool // cancelled: it may return ctx.Err()
}

func aaBehindWaiters(t *testing.T, c *clocktest.Clock, kind aaKind, seed uint64, maxRate float64, period time.Duration, setRates bool) (probes, behind, resets int) {
	rng := rand.New(rand.NewPCG(seed, 0xa110))
	lim := kind.make(c, maxRate, period)
	cur := maxRate
	var admitted []aaAdmission
	var waiters []*aaWaiter
	base, baseCancel := context.WithCancel(context.Background())
	defer func() {
		baseCancel()
		c.Settle()
	}()
	collect := func(step int) {
		t.Helper()
		keep := waiters[:0]
		for _, w := range waiters {
			r, ok := aaPoll(w.ch)
			switch {
			case !ok:
				keep = append(keep, w)
			case r.err == nil:
				admitted = append(admitted, aaAdmission{r.at, w.amount})
			case w.gone && errors.Is(r.err, context.Canceled),
				w.deadline && errors.Is(r.err, context.DeadlineExceeded),
				errors.Is(r.err, ErrExceedsCapacity) && w.amount > cur:
			default:
				t.Fatalf("step %d: a waiter for %v: %v", step, w.amount, r.err)
			}
		}
		waiters = keep
	}
	amount := func() float64 {
		switch k := rng.IntN(12); {
		case k == 0:
			return 0
		case k == 1:
			return cur
		case k < 7 && cur >= 1:
			return float64(1 + rng.IntN(int(min(cur, 4))))
		default:
			return cur * rng.Float64() / 2
		}
	}
	limit := 20 * period
	for step := range 200 {
		switch k := rng.IntN(20); {
		case k < 8:
			a := amount()
			queued := lim.Waiting()
			d := lim.Allow(a)
			now := c.Elapsed()
			if d.RetryAfter < 0 || d.Reset < 0 || !(d.Remaining >= 0) || d.Remaining > cur {
				t.Fatalf("step %d at %v: Allow(%v) = %+v (MaxRate %v)", step, now, a, d, cur)
			}
			if d.Err != nil {
				t.Fatalf("step %d: Allow(%v) = %+v", step, a, d)
			}
			if d.OK {
				if d.RetryAfter != 0 {
					t.Fatalf("step %d: Allow(%v) admitted with RetryAfter %v", step, a, d.RetryAfter)
				}
				admitted = append(admitted, aaAdmission{now, a})
			} else if d.RetryAfter <= 0 {
				t.Fatalf("step %d at %v: Allow(%v) refused with RetryAfter %v", step, now, a, d.RetryAfter)
			}
			if d.Remaining > 0 && !lim.HasCapacity(d.Remaining) {
				t.Fatalf("step %d at %v: Allow(%v) = %+v, but HasCapacity(%v) is false", step, now, a, d, d.Remaining)
			}
			if f := math.Floor(d.Remaining); f >= 1 && !lim.HasCapacity(f) {
				t.Fatalf("step %d at %v: Allow(%v) = %+v, but HasCapacity(%v) is false", step, now, a, d, f)
			}
			switch {
			case !d.OK && d.RetryAfter < limit && !slices.ContainsFunc(waiters, func(w *aaWaiter) bool { return w.deadline }) && rng.IntN(2) == 0:
				// (A waiter whose deadline a Pause made unmeetable would
				// leave during the probe, and move the probe up.)
				// The same amount, queued now, goes exactly RetryAfter later.
				probes++
				if queued > 0 {
					behind++
				}
				pctx, pcancel := context.WithCancel(base)
				ch := aaGo(pctx, c, lim, a)
				if d.RetryAfter > 1 {
					c.Advance(d.RetryAfter - 1)
					if r, ok := aaPoll(ch); ok {
						pcancel()
						t.Fatalf("step %d at %v: Allow(%v) = %+v (%d waiting), but Acquire(%v) returned %v at %v, before it",
							step, now, a, d, queued, a, r.err, r.at)
					}
				}
				c.Advance(time.Nanosecond)
				r, ok := aaPoll(ch)
				pcancel()
				if !ok || r.err != nil {
					t.Fatalf("step %d at %v: Allow(%v) = %+v (%d waiting), but Acquire(%v) has not been admitted at %v: %v, %v",
						step, now, a, d, queued, a, c.Elapsed(), ok, r.err)
				}
				admitted = append(admitted, aaAdmission{r.at, a})
			case d.Reset > 0 && d.Reset < limit && rng.IntN(6) == 0:
				// After Reset, the callers that waited have gone, and the
				// whole of MaxRate fits.
				resets++
				c.Advance(d.Reset)
				collect(step)
				if n := lim.Waiting(); n != 0 || lim.Level() != 0 || !lim.HasCapacity(cur) {
					t.Fatalf("step %d at %v: Allow(%v) = %+v (%d waiting); %v later: %d waiting, level %v, HasCapacity(%v) %v",
						step, now, a, d, queued, d.Reset, n, lim.Level(), cur, lim.HasCapacity(cur))
				}
			}
		case k < 9:
			a := amount()
			if lim.TryAcquire(a) && a > 0 {
				admitted = append(admitted, aaAdmission{c.Elapsed(), a})
			}
		case k < 13:
			if len(waiters) >= 4 {
				break
			}
			a := amount()
			if a == 0 {
				break
			}
			ctx, cancel := context.WithCancel(base)
			deadline := rng.IntN(6) == 0
			if deadline {
				ctx, cancel = c.WithTimeout(base, time.Duration(rng.Int64N(int64(2*period))))
			}
			w := &aaWaiter{amount: a, cancel: cancel, deadline: deadline, ch: aaGo(ctx, c, lim, a)}
			var de *DeadlineError
			if r, ok := aaPoll(w.ch); ok && r.err != nil && (errors.As(r.err, &de) || errors.Is(r.err, context.DeadlineExceeded)) {
				cancel()
				break
			}
			waiters = append(waiters, w)
		case k < 14:
			if len(waiters) > 0 && rng.IntN(2) == 0 {
				w := waiters[rng.IntN(len(waiters))]
				w.gone = true
				w.cancel()
				c.Settle()
			}
		case k < 14:
			lim.Pause(time.Duration(rng.Float64() * float64(period)))
		case k < 15:
			if setRates {
				cur = maxRate * []float64{0.5, 1, 2}[rng.IntN(3)]
				lim.SetRate(cur, period)
			}
		default:
			c.Advance(time.Duration(rng.Float64() * rng.Float64() * float64(period)))
		}
		collect(step)
	}
	for _, w := range waiters {
		w.gone = true
		w.cancel()
	}
	c.Settle()
	collect(-1)
	if !setRates {
		aaCheckBound(t, kind.window, admitted, maxRate, period)
	}
	return probes, behind, resets
}

// aaCheckBound checks the admissions against the bound: for a bucket, at
// most maxRate + maxRate*t/period in any window of time of length t; for a
// window, at most maxRate in any period.
func aaCheckBound(t *testing.T, window bool, adm []aaAdmission, maxRate float64, period time.Duration) {
	t.Helper()
	sort.SliceStable(adm, func(i, j int) bool { return adm[i].at < adm[j].at })
	tol := maxRate * 1e-9
	for i := range adm {
		sum := 0.0
		for j := i; j < len(adm); j++ {
			span := adm[j].at - adm[i].at
			if window && span >= period {
				break
			}
			sum += adm[j].amount
			bound := maxRate
			if !window {
				bound += maxRate * float64(span) / float64(period)
			}
			if sum > bound+tol {
				t.Fatalf("%v units admitted from %v to %v, more than the bound %v", sum, adm[i].at, adm[j].at, bound)
			}
		}
	}
}

// aaStepClock is a clock whose time the test sets, forwards or back; it
// has no timers (the test below makes no caller wait).
type aaStepClock struct {
	clock.Clock // nil: anything else panics
	now         int64
}

func (c *aaStepClock) Now() time.Time                  { return time.Unix(0, c.now) }
func (c *aaStepClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// TestAllowAttackClockBack drives each kind on a clock that also steps
// back (as a clock.Mock set back, or a synctest bubble starting at its own
// time, does), and holds every Decision to what the same limiter does next:
// a refusal's RetryAfter is when the amount fits on the clock as it goes
// on from there (not a nanosecond before); after Reset the level is 0 and
// MaxRate fits; Remaining fits. For a Window, a twin taking with TryAcquire
// must also give the same answers and keep the same level.
//
// A Limiter's twin is left out of that comparison on purpose: Allow always
// takes the mutex, which records the time (seen) that a clock going back
// is measured from, while TryAcquire's fast path does not, so after a
// step back the TryAcquire twin is stricter (by the documented rule:
// "stricter by the time that has passed since, never looser") and the
// levels part. Long rates make the Limiter's epoch move too.
func TestAllowAttackClockBack(t *testing.T) {
	rates := []struct {
		maxRate float64
		period  time.Duration
	}{{4, 8 * time.Second}, {3, time.Second}, {1e9 / 1.5, time.Second}, {10, 10 * 24 * time.Hour}, {5000, 400 * 24 * time.Hour}}
	const steps = 3000
	for _, kind := range aaKinds {
		for i, s := range rates {
			t.Run(fmt.Sprintf("%s/%v per %v", kind.name, s.maxRate, s.period), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(i), 0xbac))
				// The clock moves at most 2^61 ns forwards in all.
				maxStep := min(s.period, time.Duration(1<<61)/steps/4)
				c := &aaStepClock{now: 1 << 50}
				a, b := kind.make(c, s.maxRate, s.period), kind.make(c, s.maxRate, s.period)
				for step := range steps {
					switch k := rng.IntN(10); {
					case k < 3:
						c.now += int64(rng.Float64() * rng.Float64() * float64(maxStep))
					case k < 4:
						c.now -= int64(rng.Float64() * rng.Float64() * float64(maxStep))
					case k < 5:
						d := time.Duration(rng.Float64() * float64(maxStep))
						a.Pause(d)
						b.Pause(d)
					default:
						amount := s.maxRate * rng.Float64() / 2
						if rng.IntN(3) == 0 {
							amount = math.Min(s.maxRate, float64(1+rng.IntN(3)))
						}
						d := a.Allow(amount)
						ok := b.TryAcquire(amount)
						if d.Err != nil || d.RetryAfter < 0 || d.Reset < 0 || (!d.OK && d.RetryAfter == 0) {
							t.Fatalf("step %d: Allow(%v) = %+v", step, amount, d)
						}
						if kind.window {
							if la, lb := a.Level(), b.Level(); d.OK != ok || la != lb {
								t.Fatalf("step %d: Allow(%v) = %+v, TryAcquire %v; levels %v and %v", step, amount, d, ok, la, lb)
							}
						}
						// Both twins read the clock at the same moments: a Window's
						// time stands still after a step back until the clock has
						// caught up with the latest reading, so a reading on one
						// alone would part them.
						has := func(amount float64) bool {
							x, y := a.HasCapacity(amount), b.HasCapacity(amount)
							if kind.window && x != y {
								t.Fatalf("step %d: HasCapacity(%v) %v and %v on the twins", step, amount, x, y)
							}
							return x
						}
						level := func() float64 {
							x, y := a.Level(), b.Level()
							if kind.window && x != y {
								t.Fatalf("step %d: levels %v and %v on the twins", step, x, y)
							}
							return x
						}
						if d.Remaining > 0 && !has(d.Remaining) {
							t.Fatalf("step %d: Remaining %v does not fit", step, d.Remaining)
						}
						switch {
						case !d.OK && d.RetryAfter < 4*maxStep && rng.IntN(2) == 0:
							c.now += int64(d.RetryAfter - 1)
							if d.RetryAfter > 1 && has(amount) {
								t.Fatalf("step %d: Allow(%v) said %v, but it fits a nanosecond before", step, amount, d.RetryAfter)
							}
							c.now++
							if !has(amount) {
								t.Fatalf("step %d: Allow(%v) said %v, but it does not fit then", step, amount, d.RetryAfter)
							}
						case d.Reset < 4*maxStep && rng.IntN(4) == 0:
							c.now += int64(d.Reset)
							if l := level(); l != 0 || !has(s.maxRate) {
								t.Fatalf("step %d: Allow(%v) = %+v; after Reset, level %v", step, amount, d, l)
							}
						}
					}
				}
			})
		}
	}
}

// TestAllowAttackRemainingRates checks rate.remaining, which Limiter and
// Keyed Allow report, on rates and rooms chosen to be hard: units of a
// fraction of a tick, of a whole number of ticks beyond 2^53, rooms of a
// tick, of the capacity less a tick, and random ones. The result must
// cost at most the room (never over), be within a millionth of a unit
// (or a part in 2^30) of the largest amount that does, and not be NaN or
// negative.
func TestAllowAttackRemainingRates(t *testing.T) {
	rates := []struct {
		maxRate float64
		period  time.Duration
	}{
		{4, 8 * time.Second}, {3, time.Second}, {1e9 / 1.5, time.Second}, {1e12, time.Second}, {1, time.Nanosecond},
		{1e-6, time.Second}, {5000, 400 * 24 * time.Hour}, {0.5, 3 * time.Second}, {1.33e9, time.Second},
		{1 << 40, maxPeriod}, {3, maxPeriod}, {1e-305, time.Nanosecond}, {2.5, 100 * time.Millisecond},
		{math.Nextafter(7, 8), 29 * time.Millisecond}, {1e15, 1000 * time.Second},
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for _, s := range rates {
		r := newRate("test", s.maxRate, s.period)
		rooms := []int64{1, 2, r.scale, r.unitInt, r.unitInt - 1, r.unitInt + 1, r.capacity - 1, r.capacity - r.scale,
			r.capacity / 2, r.capacity / 3, int64(r.unit), int64(r.unit) + 1}
		for range 300 {
			rooms = append(rooms, 1+rng.Int64N(r.capacity))
		}
		for _, room := range rooms {
			if room <= 0 || room > r.capacity {
				continue
			}
			start := time.Now()
			x := r.remaining(room)
			if took := time.Since(start); took > 10*time.Millisecond {
				t.Errorf("%v per %v: remaining(%d) took %v", s.maxRate, s.period, room, took)
			}
			if !(x >= 0) || x > s.maxRate {
				t.Fatalf("%v per %v: remaining(%d) = %v", s.maxRate, s.period, room, x)
			}
			if x > 0 && r.cost(x) > room {
				t.Fatalf("%v per %v: remaining(%d) = %v, which costs %d", s.maxRate, s.period, room, x, r.cost(x))
			}
			// Not far below: a little more must not fit.
			more := x + max(1e-6, x*0x1p-30)
			if more < s.maxRate && r.cost(more) <= room && room < r.capacity {
				t.Errorf("%v per %v: remaining(%d) = %v, but %v (cost %d) fits too", s.maxRate, s.period, room, x, more, r.cost(more))
			}
		}
	}
}

// TestAllowAttackConcurrent runs Allow on every kind against Acquire
// (with cancellation and deadlines), TryAcquire, SetRate and Pause on
// other goroutines, while the mocked clock moves in steps, for the race
// detector, and checks every Decision's invariants: no negative
// RetryAfter or Reset, Remaining within [0, MaxRate]. (A refusal with a
// RetryAfter of 0 was possible here with the first version of
// Limiter.Allow, which did not admit the overdue waiters first: see
// TestAllowLimiterLateTimer.) At the end
// every Acquire must have returned, no goroutine of the package may be
// left, and a limiter with no one waiting holds no timer.
func TestAllowAttackConcurrent(t *testing.T) {
	for _, kind := range aaKinds {
		t.Run(kind.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := kind.make(c, 10, time.Second)
				var wg sync.WaitGroup
				ctx, cancel := context.WithCancel(context.Background())
				errs := make(chan string, 64)
				var allows, oks, acquired atomic.Int64
				report := func(format string, args ...any) {
					select {
					case errs <- fmt.Sprintf(format, args...):
					default:
					}
				}
				for g := range 8 {
					wg.Go(func() {
						rng := rand.New(rand.NewPCG(uint64(g), 9))
						for i := 0; ctx.Err() == nil && i < 200; i++ {
							switch k := rng.IntN(10); {
							case k < 5:
								a := float64(rng.IntN(4))
								d := lim.Allow(a)
								allows.Add(1)
								if d.OK {
									oks.Add(1)
								}
								if d.RetryAfter < 0 || d.Reset < 0 || !(d.Remaining >= 0) || d.Remaining > 20 {
									report("Allow(%v) = %+v", a, d)
								}
							case k < 7:
								actx, acancel := context.WithCancel(ctx)
								if rng.IntN(2) == 0 {
									actx, acancel = c.WithTimeout(ctx, time.Duration(rng.Int64N(int64(time.Second))))
								}
								if lim.Acquire(actx, float64(1+rng.IntN(3))) == nil {
									acquired.Add(1)
								}
								acancel()
							case k < 8:
								lim.TryAcquire(1)
							case k < 9:
								if g == 0 {
									lim.SetRate([]float64{5, 10, 20}[rng.IntN(3)], time.Second)
								}
							default:
								lim.Pause(time.Duration(rng.Int64N(int64(500 * time.Millisecond))))
							}
							c.Sleep(time.Duration(1+rng.Int64N(50)) * time.Millisecond)
						}
					})
				}
				for range 1500 {
					c.Advance(10 * time.Millisecond)
				}
				cancel()
				c.Advance(time.Second)
				wg.Wait()
				close(errs)
				for e := range errs {
					t.Error(e)
				}
				t.Logf("%d Allows, %d OK; %d Acquires admitted", allows.Load(), oks.Load(), acquired.Load())
				if allows.Load() < 100 || oks.Load() < 30 || acquired.Load() < 15 {
					t.Errorf("too little happened to be sure")
				}
				c.Settle()
				for _, fn := range []string{"(*Limiter)", "(*Window)", "(*queue)", "(*watcher)"} {
					clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit."+fn)
				}
				switch l := lim.(type) {
				case *Limiter:
					l.mu.Lock()
					if l.q.live != 0 || l.timer != nil || l.armed {
						t.Errorf("Limiter left with %d waiting, timer %v, armed %v", l.q.live, l.timer != nil, l.armed)
					}
					l.mu.Unlock()
				case *Window:
					l.mu.Lock()
					if l.q.live != 0 || l.timer != nil || l.armed {
						t.Errorf("Window left with %d waiting, timer %v, armed %v", l.q.live, l.timer != nil, l.armed)
					}
					l.mu.Unlock()
				}
			})
		})
	}
}
