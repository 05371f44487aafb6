package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
)

// BenchmarkWindowHeap reports the live heap of NewWindow(10000,
// time.Minute) after three minutes at full rate on a mocked clock, its log
// holding 10,000 admissions at distinct times: exact (res=0), and with
// WithResolution(time.Second). Run it with -benchtime=1x.
func BenchmarkWindowHeap(b *testing.B) {
	for _, res := range []time.Duration{0, time.Second} {
		b.Run("res="+res.String(), func(b *testing.B) {
			var heap int64
			var level float64
			var admitted int
			for b.Loop() {
				heap, level, admitted = windowHeap(10_000, time.Minute, ratelimit.WithResolution(res))
			}
			b.ReportMetric(float64(heap)/(1<<10), "KiB-live")
			b.ReportMetric(level, "admissions-held")
			b.ReportMetric(float64(admitted), "admitted")
		})
	}
}

// The bound: NewWindow(10000, time.Minute) at full rate holds at
// most 256 KiB. This uses clock.Mock itself, in a synctest bubble where
// the 1 ms sleep that ends each of its Adds takes no time, to check that
// the stepClock that the report and BenchmarkWindowHeap use stands for it.
func TestWindowHeapAtFullRate(t *testing.T) {
	const maxRate, period, bound = 10_000, time.Minute, 256 << 10
	synctest.Test(t, func(t *testing.T) {
		m := clock.NewMock()
		before := heapInUse()
		w := ratelimit.NewWindow(maxRate, period, ratelimit.WithClock(m))
		for i := range windowPeriods * maxRate {
			if i > 0 {
				m.Add(period / maxRate)
			}
			if !w.TryAcquire(1) {
				t.Fatalf("admission %d refused at full rate", i)
			}
		}
		after := heapInUse()
		if got := w.Level(); got != maxRate {
			t.Errorf("Level %v, want %v", got, maxRate)
		}
		runtime.KeepAlive(w)
		heap := int64(after) - int64(before)
		stepped, level, admitted := windowHeap(maxRate, period)
		if level != maxRate || admitted != windowPeriods*maxRate {
			t.Errorf("stepClock: %v held, %d admitted; want %d, %d", level, admitted, maxRate, windowPeriods*maxRate)
		}
		t.Logf("live heap at full rate: %.1f KiB on clock.Mock, %.1f KiB on stepClock", float64(heap)/(1<<10), float64(stepped)/(1<<10))
		if heap > bound || stepped > bound {
			t.Errorf("live heap %d B on clock.Mock, %d B on stepClock; want at most %d", heap, stepped, bound)
		}
		// The bubble's own goroutines and timers may differ by a few KiB.
		if d := heap - stepped; d > 8<<10 || d < -8<<10 {
			t.Errorf("clock.Mock: %d B, stepClock: %d B: they should agree", heap, stepped)
		}
	})
}

func TestMostInWindow(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		var ds []time.Duration
		for _, v := range vs {
			ds = append(ds, time.Duration(v)*time.Millisecond)
		}
		return ds
	}
	for _, c := range []struct {
		times []time.Duration
		want  int
	}{
		{nil, 0},
		{ms(0), 1},
		{ms(0, 1000), 1},      // (0, 1000] leaves out 0
		{ms(0, 999, 1000), 2}, // 999 and 1000
		{ms(0, 0, 0, 1000, 1000), 3},
		{ms(0, 500, 999, 1000, 1001, 1998), 4}, // (1, 1001]: 500, 999, 1000, 1001
		{ms(5, 5, 5), 3},
	} {
		if got := mostInWindow(c.times, time.Second); got != c.want {
			t.Errorf("mostInWindow(%v) = %d, want %d", c.times, got, c.want)
		}
	}
}

// TestWindowSectionSmoke runs the report's window section with its tiny
// sizes: it checks that the section prints its rows, not the figures.
func TestWindowSectionSmoke(t *testing.T) {
	var out bytes.Buffer
	windowSection(&out, config{smoke: true})
	for _, want := range []string{
		"6. ratelimit.Window", "ratelimit.NewWindow(100, 50ms)  ", "ratelimit.New(100, 50ms)  ",
		"rate.NewLimiter(2000, 100)  ", "of its most, 100 per 50ms", "with WithResolution(time.Second):",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the section has no %q:\n%s", want, out.String())
		}
	}
}
