package main

import (
	"fmt"
	"testing"
	"time"
)

// The benchmarks behind the report, one sub-benchmark per library, so that
// benchstat compares them side by side (see README.md in this folder).

func BenchmarkTry(b *testing.B) {
	for _, p := range benchPeers {
		if p.make(1, 1).try != nil {
			b.Run("impl="+p.name, benchTry(p, false))
		}
	}
}

func BenchmarkTryParallel(b *testing.B) {
	for _, p := range benchPeers {
		if p.make(1, 1).try != nil {
			b.Run("impl="+p.name, benchTry(p, true))
		}
	}
}

func BenchmarkWaitNoDelay(b *testing.B) {
	for _, p := range benchPeers {
		b.Run("impl="+p.name, benchWait(p))
	}
}

// BenchmarkHeapPerWaiter reports the heap each of 50,000 blocked waiters
// holds in the limiter, goroutines and contexts excluded, when they share
// one context and when each has its own. Run it with -benchtime=1x.
func BenchmarkHeapPerWaiter(b *testing.B) {
	for _, own := range []bool{false, true} {
		for _, p := range []peer{dripPeer, windowPeer, xratePeer} {
			b.Run(fmt.Sprintf("ctx=%s/impl=%s", map[bool]string{false: "shared", true: "own"}[own], p.name), func(b *testing.B) {
				var v float64
				for b.Loop() {
					v = heapPerWaiter(p, 50_000, own)
				}
				b.ReportMetric(v, "B/waiter")
			})
		}
	}
}

// BenchmarkCancelWaiters reports how long 100,000 blocked waiters take to
// return once their context is cancelled. Run it with -benchtime=1x.
func BenchmarkCancelWaiters(b *testing.B) {
	const n = 100_000
	for _, p := range []peer{dripPeer, windowPeer, xratePeer} {
		b.Run("impl="+p.name, func(b *testing.B) {
			var d time.Duration
			for b.Loop() {
				d = cancelTime(p, n)
			}
			b.ReportMetric(float64(d.Milliseconds()), "ms/100k")
		})
	}
}

// BenchmarkAchievedRate reports the share of the most a limiter of 10,000 a
// second in bursts of 100 may admit in 2 s, that it did admit, with 1 and
// 100 goroutines. Run it with -benchtime=1x.
func BenchmarkAchievedRate(b *testing.B) {
	for _, p := range benchPeers {
		for _, g := range []int{1, 100} {
			b.Run(fmt.Sprintf("impl=%s/goroutines=%d", p.name, g), func(b *testing.B) {
				var r rateRun
				for b.Loop() {
					r = achievedRate(p, 10_000, 100, g, 2*time.Second)
				}
				b.ReportMetric(float64(r.admitted)/r.expected*100, "%of-max")
			})
		}
	}
}

// BenchmarkLateness reports how late, at the median, a waiter that must
// wait 5 ms is admitted, beside a bare time.Timer (impl=timer).
func BenchmarkLateness(b *testing.B) {
	const d, runs = 5 * time.Millisecond, 50
	b.Run("impl=timer", func(b *testing.B) {
		var med time.Duration
		for b.Loop() {
			med, _ = timerLateness(d, runs)
		}
		b.ReportMetric(float64(med.Microseconds()), "µs-late")
	})
	for _, p := range benchPeers {
		b.Run("impl="+p.name, func(b *testing.B) {
			var med time.Duration
			for b.Loop() {
				med, _ = lateness(p, d, runs)
			}
			b.ReportMetric(float64(med.Microseconds()), "µs-late")
		})
	}
}

// BenchmarkFairness reports how long a request for the whole burst of 10
// waits at 100/s among 4 goroutines that take 1 unit at a time.
func BenchmarkFairness(b *testing.B) {
	for _, p := range benchPeers {
		if p.make(1, 1).waitN == nil {
			continue
		}
		b.Run("impl="+p.name, func(b *testing.B) {
			var d time.Duration
			for b.Loop() {
				d, _ = fairness(p, 100, 10, 4, 5*time.Second)
			}
			b.ReportMetric(float64(d.Milliseconds()), "ms-to-admission")
		})
	}
}
