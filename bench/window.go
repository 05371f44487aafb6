package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
)

// windowPeer is drip's sliding window, ratelimit.Window. A limiter of
// perSecond in bursts of burst is the window that admits burst in any
// period of burst/perSecond: NewWindow(burst, burst/perSecond). With the
// benchmarks' huge rate that is NewWindow(2^30, 1.07 ms): every call is
// admitted, as 2^30 calls never fit in 1.07 ms, and the log holds the
// calls of the last 1.07 ms, a steady size once the first period has
// passed, but for a goroutine that loses its CPU for most of a period: the
// log then empties, and its ring is given back and grown again (B/op).
var windowPeer = peer{"drip-window", "drip window", func(perSecond float64, burst int) limiter {
	w := ratelimit.NewWindow(float64(burst), time.Duration(float64(burst)/perSecond*float64(time.Second)))
	return limiter{
		try:      func() bool { return w.TryAcquire(1) },
		wait:     w.Wait,
		ctxAware: true,
		waitN:    func(ctx context.Context, n int) error { return w.Acquire(ctx, float64(n)) },
	}
}}

// benchPeers are the libraries the benchmarks compare: the report's peers
// and, after drip's leaky bucket, its Window, which the report shows in a
// section of its own.
var benchPeers = slices.Insert(slices.Clone(peers), 1, windowPeer)

// The window section's setting: the most admitted in any period, and the
// goroutines that ask for them.
const (
	windowMax        = 100
	windowGoroutines = 100
	windowPeriods    = 3
)

// windowSection prints section 5: the Window against a leaky bucket and
// x/time/rate of the same rate and burst, live on the real clock, and the
// heap its log holds at full rate.
func windowSection(w io.Writer, cfg config) {
	period := time.Second
	if cfg.smoke {
		period = 50 * time.Millisecond
	}
	// The admissions' times are read as Wait returns, which may be a little
	// after the limiter admitted them: counted over a window of slack less,
	// they show what the limiter did.
	slack := period / 200
	perSecond := windowMax / period.Seconds()
	fmt.Fprintf(w, "6. ratelimit.Window: at most %d in any %v, which is what an API's \"%d per %v\" means\n", windowMax, period, windowMax, period)
	fmt.Fprintf(w, "   (a bucket of %d at %v/s, drip's or x/time/rate's, lets its burst through, then its rate: close to %d in a period)\n",
		windowMax, perSecond, 2*windowMax)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "   %d goroutines call Wait in a loop for %d periods, live\n", windowGoroutines, windowPeriods)
	mostName, tightName, admittedName := "most in any "+period.String(), "most in any "+(period-slack).String(), fmt.Sprintf("admitted in %v", windowPeriods*period)
	fmt.Fprintf(w, "   %-30s  %s  %s  %s  %s\n", "limiter", mostName, tightName, admittedName, "rate")
	for _, r := range []struct {
		p     peer
		label string
	}{
		{windowPeer, fmt.Sprintf("ratelimit.NewWindow(%d, %v)", windowMax, period)},
		{dripPeer, fmt.Sprintf("ratelimit.New(%d, %v)", windowMax, period)},
		{xratePeer, fmt.Sprintf("rate.NewLimiter(%v, %d)", perSecond, windowMax)},
	} {
		fmt.Fprintf(w, "   %-30s", r.label)
		times := windowedTimes(r.p, perSecond, period)
		span := windowPeriods * period
		var admitted int
		if len(times) > 0 {
			admitted, _ = slices.BinarySearch(times, times[0]+span) // the first at or after the span
		}
		rate := float64(admitted) / span.Seconds()
		share := ""
		if r.p.name == windowPeer.name {
			share = fmt.Sprintf(" (%.1f%% of its most, %d per %v)", rate/perSecond*100, windowMax, period)
		}
		fmt.Fprintf(w, "  %-*d  %-*d  %-*d  %.1f/s%s\n", runes(mostName), mostInWindow(times, period),
			runes(tightName), mostInWindow(times, period-slack), runes(admittedName), admitted, rate, share)
	}
	fmt.Fprintf(w, "   most in any %v: the most admissions with times in (t-%v, t], t any admission's time, read as its Wait returned.\n",
		period, period)
	fmt.Fprintf(w, "   The window admits at most %d in any %v, but the goroutines it admits together read the clock in turn\n",
		windowMax, period)
	fmt.Fprintf(w, "   on %d CPUs, up to a millisecond or so later: counted at those times a %v can show more than %d;\n",
		runtime.GOMAXPROCS(0), period, windowMax)
	fmt.Fprintf(w, "   %v shows %d unless a goroutine waited over %v for a CPU.\n", period-slack, windowMax, slack)
	fmt.Fprintf(w, "   admitted, rate: admissions in the %d periods from the first admission, and that number / %v.\n",
		windowPeriods, windowPeriods*period)
	fmt.Fprintln(w)

	const heapMax, heapPeriod = 10_000, time.Minute
	exact, held, _ := windowHeap(heapMax, heapPeriod)
	merged, _, _ := windowHeap(heapMax, heapPeriod, ratelimit.WithResolution(time.Second))
	fmt.Fprintf(w, "   live heap of NewWindow(%d, %v) at full rate, its log holding %.0f admissions: %.1f KiB;\n",
		heapMax, heapPeriod, held, float64(exact)/(1<<10))
	fmt.Fprintf(w, "   with WithResolution(time.Second): %.1f KiB (on a mocked clock: one admission every %v for %d periods)\n",
		float64(merged)/(1<<10), heapPeriod/heapMax, windowPeriods)
	fmt.Fprintln(w)
}

// windowedTimes runs windowGoroutines goroutines that acquire one unit at a
// time for a little longer than windowPeriods periods, so as to cover them
// from the first admission, which comes a little after the start, on p's
// limiter of perSecond in bursts of windowMax. It returns the admission
// times, sorted, each read as its Wait returns. Their records are made
// beforehand, so that the run itself makes little garbage to collect.
func windowedTimes(p peer, perSecond float64, period time.Duration) []time.Duration {
	d := windowPeriods*period + period/20
	lim := p.make(perSecond, windowMax)
	// None of the limiters admits twice windowMax in a period, and one
	// goroutine may get every admission: room for all of them.
	per := make([][]time.Duration, windowGoroutines)
	for i := range per {
		per[i] = make([]time.Duration, 0, 2*(windowPeriods+2)*windowMax)
	}
	runtime.GC()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range windowGoroutines {
		wg.Go(func() {
			for len(per[i]) < cap(per[i]) && lim.wait(ctx) == nil {
				per[i] = append(per[i], time.Since(start))
				// The goroutines admitted together all read the clock
				// before any of them goes back to the limiter.
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	for _, ts := range per {
		all = append(all, ts...)
	}
	slices.Sort(all)
	return all
}

// mostInWindow returns the most of the sorted times that lie in any
// window (t-period, t] for t one of them.
func mostInWindow(times []time.Duration, period time.Duration) int {
	most, j := 0, 0
	for i, t := range times {
		for times[j] <= t-period {
			j++
		}
		// times[j:i+1] lie in (t-period, t]; any equal to t after i are
		// counted when i reaches the last of them.
		most = max(most, i-j+1)
	}
	return most
}

// windowHeap returns the live heap that NewWindow(maxRate, period, opts...)
// holds after windowPeriods periods at full rate: a TryAcquire(1) every
// period/maxRate, on a mocked clock, so that its log holds maxRate
// admissions at distinct times. An exact window admits every one; with a
// resolution, some wait for a merged entry to leave. It also returns the
// units the window then holds, and how many it admitted.
func windowHeap(maxRate int, period time.Duration, opts ...ratelimit.WindowOption) (heap int64, level float64, admitted int) {
	c := newStepClock()
	step := period / time.Duration(maxRate)
	before := heapInUse()
	w := ratelimit.NewWindow(float64(maxRate), period, append([]ratelimit.WindowOption{ratelimit.WithClock(c)}, opts...)...)
	for i := range windowPeriods * maxRate {
		if i > 0 {
			c.add(step)
		}
		if w.TryAcquire(1) {
			admitted++
		}
	}
	after := heapInUse()
	level = w.Level()
	runtime.KeepAlive(w)
	return int64(after) - int64(before), level, admitted
}

// stepClock is a clock.Mock whose time moves on at once: the Mock's own Add
// ends with a sleep of 1 ms, for its timers' goroutines, so that 30,000
// steps would take 30 s. The Mock's timers do not move with it: it serves
// only callers that never wait, such as TryAcquire.
type stepClock struct {
	*clock.Mock
	now time.Time
}

func newStepClock() *stepClock {
	m := clock.NewMock()
	return &stepClock{Mock: m, now: m.Now()}
}

func (c *stepClock) add(d time.Duration)             { c.now = c.now.Add(d) }
func (c *stepClock) Now() time.Time                  { return c.now }
func (c *stepClock) Since(t time.Time) time.Duration { return c.now.Sub(t) }
func (c *stepClock) Until(t time.Time) time.Duration { return t.Sub(c.now) }
