package redisbucket

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/redis/go-redis/v9"
)

// process is one process of a simulated fleet: a limiter with a fallback,
// on its own hooked client, so that Redis can be down for some processes
// and not for others.
type process struct {
	lim      *Limiter
	h        *hooked
	admitted []time.Duration // when its calls were admitted
	switches []switchAt
}

type switchAt struct {
	local bool
	at    time.Duration
}

func (s switchAt) String() string {
	if s.local {
		return fmt.Sprintf("to local at %v", s.at)
	}
	return fmt.Sprintf("to Redis at %v", s.at)
}

// newFleet returns n processes on one key of New(maxRate, period), each
// with a fallback of the given share, on the mock clock c.
func newFleet(t *testing.T, c *clocktest.Clock, rdb *redis.Client, n int, maxRate float64, period time.Duration, share float64, opts ...Option) []*process {
	key := testKey(t, rdb)
	fleet := make([]*process, n)
	for i := range fleet {
		p := &process{h: &hooked{Scripter: rdb}}
		notify := func(local bool, _ error) { p.switches = append(p.switches, switchAt{local, c.Elapsed()}) }
		opts := append([]Option{WithClock(c), WithFallback(share, notify)}, opts...)
		p.lim = onMockTime(New(p.h, key, maxRate, period, opts...), c)
		fleet[i] = p
	}
	return fleet
}

// drive has every process call TryAcquire(ctx, 1) once per step, from now
// until the clock reaches end, far more often than the rate allows. Before
// each step, faults sets which processes reach Redis at that time.
func drive(t *testing.T, c *clocktest.Clock, fleet []*process, step, end time.Duration, faults func(now time.Duration)) {
	t.Helper()
	ctx := context.Background()
	for ; c.Elapsed() < end; c.Advance(step) {
		faults(c.Elapsed())
		for i, p := range fleet {
			ok, err := p.lim.TryAcquire(ctx, 1)
			if err != nil {
				t.Fatalf("process %d at %v: %v", i, c.Elapsed(), err)
			}
			if ok {
				p.admitted = append(p.admitted, c.Elapsed())
			}
		}
	}
}

// admissions returns when the fleet admitted a unit, from start (included)
// to end (excluded), in order.
func admissions(fleet []*process, start, end time.Duration) []time.Duration {
	var all []time.Duration
	for _, p := range fleet {
		for _, at := range p.admitted {
			if at >= start && at < end {
				all = append(all, at)
			}
		}
	}
	slices.Sort(all)
	return all
}

// checkWindows fails the test if some window [a, b] holds more admissions
// than burst + rate·(b-a), rate in units per second, and reports the worst.
func checkWindows(t *testing.T, what string, at []time.Duration, burst, rate float64) {
	t.Helper()
	worst, from, to := 0.0, 0, 0
	for i := range at {
		for j := i; j < len(at); j++ {
			if over := float64(j-i+1) - burst - rate*(at[j]-at[i]).Seconds(); over > worst {
				worst, from, to = over, i, j
			}
		}
	}
	if worst > 1e-9 {
		t.Errorf("%s: %d units admitted from %v to %v; the bound is %v + %v/s, %.2f units",
			what, to-from+1, at[from], at[to], burst, rate, burst+rate*(at[to]-at[from]).Seconds())
	}
}

// checkSwitches fails the test unless the process switched exactly as want
// says.
func checkSwitches(t *testing.T, i int, p *process, want ...switchAt) {
	t.Helper()
	if !slices.Equal(p.switches, want) {
		t.Errorf("process %d switched %v; want %v", i, p.switches, want)
	}
}

// TestPartialPartition runs four processes with shares of 1/4 on 20 units
// per second; from 3s to 13s three of them cannot reach Redis. The fleet
// then runs at 1.75 times the rate, the bound WithFallback documents for
// a steady partition, and no faster, not even for a burst when the three
// switch; and at most twice the rate (maxRate + rate·t) in any window.
func TestPartialPartition(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		const (
			n, cut  = 4, 3
			share   = 0.25
			maxRate = 20.0 // per second
			cutAt   = 3 * time.Second
			healAt  = 13 * time.Second
			backAt  = healAt + (recoveryProbes-1)*time.Second
			end     = 20 * time.Second
		)
		fleet := newFleet(t, c, newClient(t, addr), n, maxRate, time.Second, share)
		drive(t, c, fleet, 10*time.Millisecond, end, func(now time.Duration) {
			for _, p := range fleet[n-cut:] {
				p.h.down.Store(now >= cutAt && now < healAt)
			}
		})

		checkSwitches(t, 0, fleet[0])
		for i, p := range fleet[n-cut:] {
			checkSwitches(t, n-cut+i, p, switchAt{true, cutAt}, switchAt{false, backAt})
		}
		checkWindows(t, "whole run", admissions(fleet, 0, end), (1+n*share)*maxRate, (1+n*share)*maxRate)

		// During the partition, each bucket (Redis and the three local
		// ones) admits at most one unit plus its rate in a window: they
		// are saturated, and the local ones start full.
		steady := (1 + cut*share) * maxRate
		during := admissions(fleet, cutAt, healAt)
		checkWindows(t, "during the partition", during, 1+cut, steady)
		if min := 0.95 * steady * (healAt - cutAt).Seconds(); float64(len(during)) < min {
			t.Errorf("%d units admitted during the partition; want at least %v: the bound is reached", len(during), min)
		}
		checkWindows(t, "after the fleet is back on Redis", admissions(fleet, backAt, end), maxRate, maxRate)
	})
}

// TestFallbackFlapping runs two processes with shares of 1/2 on 20 units
// per second against a Redis that refuses every other 100ms from 1s to
// 6s, probed every 100ms. Each process switches to its fallback once,
// with no burst, stays there while Redis flaps, and switches back at the
// third probe in a row that Redis answers; meanwhile the fleet keeps to
// the rate.
func TestFallbackFlapping(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		const (
			probe     = 100 * time.Millisecond
			maxRate   = 20.0 // per second
			flapFrom  = 1 * time.Second
			flapUntil = 6 * time.Second
			end       = 9 * time.Second
		)
		fleet := newFleet(t, c, newClient(t, addr), 2, maxRate, time.Second, 0.5, WithProbeInterval(probe))
		drive(t, c, fleet, 10*time.Millisecond, end, func(now time.Duration) {
			down := now >= flapFrom && now < flapUntil && now/probe%2 == 1
			for _, p := range fleet {
				p.h.down.Store(down)
			}
		})

		local := flapFrom + probe // the first refusal
		back := flapUntil + (recoveryProbes-1)*probe
		for i, p := range fleet {
			checkSwitches(t, i, p, switchAt{true, local}, switchAt{false, back})
		}
		flapping := admissions(fleet, local, back)
		checkWindows(t, "while Redis flaps", flapping, 2, maxRate)
		if min := 0.95 * maxRate * (back - local).Seconds(); float64(len(flapping)) < min {
			t.Errorf("%d units admitted while Redis flaps; want at least %v: the fallbacks keep the fleet at its rate", len(flapping), min)
		}
		checkWindows(t, "whole run", admissions(fleet, 0, end), 2*maxRate, 2*maxRate)
	})
}
