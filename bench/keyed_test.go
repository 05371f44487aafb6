package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The keyed benchmarks: a limiter per key, against the libraries that keep
// one for their users, every call admitted (see README.md in this folder):
//
//	go test -run '^$' -bench 'KeyedTry' -count 5 . > keyed.txt
//	benchstat -col /impl keyed.txt
//	go test -run '^$' -bench 'KeyedHeap|KeyedFlood' -benchtime 1x -count 3 . > keyedmem.txt
//
// keys=1 is one hot key; keys=1000000 spreads the calls uniformly at random
// over a million keys, all held by the limiter before the timing starts.

func BenchmarkKeyedTry(b *testing.B) {
	for _, n := range []int{1, maxSpreadKeys} {
		for _, p := range keyedPeers() {
			b.Run(fmt.Sprintf("keys=%d/impl=%s", n, p.name), benchKeyed(p, n, false))
		}
	}
}

func BenchmarkKeyedTryParallel(b *testing.B) {
	for _, n := range []int{1, maxSpreadKeys} {
		for _, p := range keyedPeers() {
			b.Run(fmt.Sprintf("keys=%d/impl=%s", n, p.name), benchKeyed(p, n, true))
		}
	}
}

// BenchmarkKeyedFloor measures, on the calls and keys of BenchmarkKeyedTry,
// the work that no exact limiter can skip: hashing the key, reading the
// clock once and updating a word of state per key (see keyedFloor). It is
// the floor under every library's figure, drip's included.
func BenchmarkKeyedFloor(b *testing.B) {
	for _, n := range []int{1, maxSpreadKeys} {
		seq := make([]uint32, seqLen)
		if n > 1 {
			seq = spreadSeq(n)
		}
		b.Run(fmt.Sprintf("keys=%d/serial", n), keyedBench(keyedFloor(n), spreadKeys(), seq, false))
		b.Run(fmt.Sprintf("keys=%d/parallel", n), keyedBench(keyedFloor(n), spreadKeys(), seq, true))
	}
}

// BenchmarkKeyedHeapPerKey reports the heap a library holds per key once
// 1,000,000 keys have been hit once each (B/key), the key strings, which
// the caller holds, not counted. Run it with -benchtime=1x.
func BenchmarkKeyedHeapPerKey(b *testing.B) {
	for _, p := range keyedPeers() {
		b.Run("impl="+p.name, func(b *testing.B) {
			spreadKeys()
			var v float64
			for b.Loop() {
				var lim keyedLimiter
				lim, v = prefill(p, maxSpreadKeys)
				lim.release()
			}
			b.ReportMetric(v, "B/key")
		})
	}
}

// BenchmarkKeyedFlood hits 5,000,000 distinct keys once each, with a cap of
// 100,000 keys for the libraries that have one, and reports the peak heap
// above the baseline, sampled every 100,000 keys (peak-alloc-MB: HeapAlloc,
// which counts garbage not yet collected; peak-live-MB: what the last GC
// found live), what the library still held after it (retained-MB), and
// the time per key. Run it with -benchtime=1x; the libraries without a cap
// take 1-2 GB each.
func BenchmarkKeyedFlood(b *testing.B) {
	const n = 5_000_000
	for _, p := range keyedPeers() {
		b.Run("impl="+p.name, func(b *testing.B) {
			var r floodResult
			for b.Loop() {
				r = flood(p, n, floodCap)
			}
			const mb = 1e6
			b.ReportMetric(float64(r.peakAlloc)/mb, "peak-alloc-MB")
			b.ReportMetric(float64(r.peakLive)/mb, "peak-live-MB")
			b.ReportMetric(float64(r.retained)/mb, "retained-MB")
			b.ReportMetric(float64(r.took.Nanoseconds())/n, "ns/key")
			b.ReportMetric(float64(r.admitted)/n, "admitted/key")
		})
	}
}

// benchKeyed measures a call that admits, on one hot key (n = 1) or on n
// keys chosen uniformly at random, all of which the limiter holds before
// the timing starts.
func benchKeyed(p keyedPeer, n int, parallel bool) func(b *testing.B) {
	// testing calls a parallel benchmark once per b.N it tries: the
	// limiter, filled once, serves them all.
	var run func(*testing.B)
	return func(b *testing.B) {
		if run == nil {
			lim, seq := keyedSetup(p, n)
			run = keyedBench(lim.try, spreadKeys(), seq, parallel)
			b.Cleanup(func() {
				lim.release()
				run = nil // the limiter may hold a gigabyte
			})
			b.ResetTimer()
		}
		run(b)
	}
}

// TestKeyedPeersAdmit checks that every library admits every call with
// the limits the runs use, and counts keys apart.
func TestKeyedPeersAdmit(t *testing.T) {
	keys := spreadKeys()[:1000]
	for _, p := range keyedPeers() {
		t.Run(p.name, func(t *testing.T) {
			for _, c := range []keyedConfig{hotLimit, spreadLimit} {
				c.keys = len(keys)
				lim := p.make(c)
				for round := range 3 {
					if got := tryKeys(lim.try, keys, identity(len(keys)), 0, len(keys)); got != 0 {
						t.Errorf("%+v, round %d: %d of %d calls refused", c, round, got, len(keys))
					}
				}
				lim.release()
			}
			// A limit of 1 an hour refuses a second call on a key, and
			// only on that key.
			lim := p.make(keyedConfig{maxRate: 1, period: time.Hour, keys: 2})
			defer lim.release()
			if !lim.try("a") || lim.try("a") || !lim.try("b") {
				t.Errorf("a limit of 1 per key: keys are not limited apart")
			}
		})
	}
}

// identity returns the sequence 0, 1, ... n-1, padded to seqLen.
func identity(n int) []uint32 {
	seq := make([]uint32, seqLen)
	for i := range seq {
		seq[i] = uint32(i % n)
	}
	return seq
}

func TestKeyedFloodSmoke(t *testing.T) {
	for _, p := range keyedPeers() {
		r := flood(p, 3000, 1000)
		if r.admitted != r.keys && p.name != "drip" {
			t.Errorf("%s: %d of %d keys admitted", p.name, r.admitted, r.keys)
		}
	}
}

func TestIPKeys(t *testing.T) {
	seen := map[string]bool{}
	for _, i := range []int{0, 1, 255, 256, 65535, 65536, 1<<24 - 1} {
		k := ipKey(i)
		if seen[k] || !strings.HasPrefix(k, "10.") {
			t.Errorf("ipKey(%d) = %q", i, k)
		}
		seen[k] = true
	}
	if got := ipKey(0x010203); got != "10.1.2.3" {
		t.Errorf("ipKey(0x010203) = %q", got)
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100_000: "100,000", 5_000_000: "5,000,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q; want %q", n, got, want)
		}
	}
}

// TestKeyedSectionSmoke runs the report's keyed section with tiny sizes.
func TestKeyedSectionSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the keyed section")
	}
	var out bytes.Buffer
	if err := keyedSection(&out, config{smoke: true}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"one hot key, serial", "heap per live key", "flood", "The floor"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the keyed section has no %q:\n%s", want, out.String())
		}
	}
}
