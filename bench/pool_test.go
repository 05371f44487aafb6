package main

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
)

// BenchmarkPoolTask measures the cost of one task, from submission to its
// end, when the limiter admits everything: the pool's overhead over the
// task itself. impl=drip-acquire-only shows what the submitter's own
// TryAcquire saves (see poolVariants).
func BenchmarkPoolTask(b *testing.B) {
	for _, r := range slices.Concat(poolRunners, poolVariants) {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			r.run(b.N, noopTask)
		})
	}
}

// BenchmarkPoolMillion submits a million tasks to 8 workers and reports
// the peak heap while they run, sampled every 100 µs, beside the same for
// ten thousand tasks, to show that submission blocks rather than queues.
// peak-live-KiB is the heap the last GC found live (it moves only when a
// GC runs); peak-heap-KiB also counts garbage not yet collected, which the
// GC lets grow to its 4 MiB minimum goal before it runs.
func BenchmarkPoolMillion(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		for _, r := range poolRunners {
			b.Run(fmt.Sprintf("tasks=%d/%s", n, r.name), func(b *testing.B) {
				var peak heapPeak
				for b.Loop() {
					runtime.GC()
					stop := sampleHeap(&peak)
					r.run(n, noopTask)
					stop()
				}
				b.ReportMetric(float64(peak.live)/(1<<10), "peak-live-KiB")
				b.ReportMetric(float64(peak.heap)/(1<<10), "peak-heap-KiB")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/task")
			})
		}
	}
}
