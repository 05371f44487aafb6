package ratelimit_test

import (
	"runtime"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
)

// ipKey returns the i-th of 2^24 distinct keys like "10.1.2.3".
func ipKey(i int) string {
	var buf [16]byte
	b := append(buf[:0], "10."...)
	b = strconv.AppendUint(b, uint64(i>>16&255), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(i>>8&255), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(i&255), 10)
	return string(b)
}

// liveHeap returns the heap in use once garbage is collected.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// heapAlloc returns the heap allocated, garbage included.
func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// spreadRate is a burst of 1000 a key, one unit draining every 36 s: every
// key hit once holds state for 36 s.
const spreadRate, spreadPeriod = 1000, 10 * time.Hour

// heapPerKey returns the heap a Keyed holds per key once n keys were hit
// once each, the keys themselves, which the caller holds, not counted.
func heapPerKey(n int) float64 {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = ipKey(i)
	}
	c := &stepClock{now: 1e15}
	before := liveHeap()
	k := ratelimit.NewKeyed[string](spreadRate, spreadPeriod, ratelimit.WithClock(c))
	for _, key := range keys {
		k.TryAcquire(key, 1)
	}
	after := liveHeap()
	if k.Len() != n {
		panic("keys lost")
	}
	runtime.KeepAlive(k)
	runtime.KeepAlive(keys)
	return float64(after-before) / float64(n)
}

// A key holding state costs at most 28 bytes of heap: a slot of 16 bytes
// in a table at least 70% full, whatever the number of keys.
func TestKeyedHeapPerKey(t *testing.T) {
	sizes := []int{1000, 100_000, 1_000_000, 1_234_567}
	if testing.Short() || keyedRace {
		sizes = sizes[:2]
	}
	for _, n := range sizes {
		perKey := heapPerKey(n)
		t.Logf("%d keys: %.1f B/key", n, perKey)
		if limit := 28.0 + 16384/float64(n); perKey > limit {
			t.Errorf("%d keys: %.1f B/key, more than %.1f", n, perKey, limit)
		}
	}
}

// A flood of distinct keys, each hit once, at a cap of keys: the live heap
// stays within what the cap's keys take, the keys held keep their state and
// every new key past the cap is refused, and one period after the flood,
// with a few more calls, the heap is back where it was before the Keyed
// was made, with no goroutine started.
func TestKeyedFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood of millions of keys")
	}
	n, maxKeys := 5_000_000, 100_000
	if keyedRace {
		n, maxKeys = 400_000, 10_000
	}
	synctest.Test(t, func(t *testing.T) {
		c := &stepClock{now: 1e15}
		base := liveHeap()
		k := ratelimit.NewKeyed[string](spreadRate, spreadPeriod, ratelimit.WithClock(c), ratelimit.WithMaxKeys(maxKeys))
		empty := liveHeap() - base
		// The cap's footprint: 28 bytes a key (see TestKeyedHeapPerKey).
		footprint := empty + uint64(maxKeys)*28
		var peakAlloc, peakLive uint64
		admitted := 0
		const sample = 100_000
		for i := range n {
			if i%sample == 0 {
				peakAlloc = max(peakAlloc, heapAlloc()-min(heapAlloc(), base))
				if i%(10*sample) == 0 {
					live := liveHeap() - base
					peakLive = max(peakLive, live)
					if live > footprint {
						t.Fatalf("after %d keys: %d bytes live, more than the cap's footprint %d", i, live, footprint)
					}
				}
			}
			if k.TryAcquire(ipKey(i), 1) {
				admitted++
			}
			c.now += 100 // 10 million calls a second
		}
		if admitted != maxKeys || k.Len() != maxKeys {
			t.Fatalf("%d keys admitted, %d held, want the cap %d", admitted, k.Len(), maxKeys)
		}
		if k.Level(ipKey(0)) < 0.98 || k.Level(ipKey(maxKeys-1)) < 0.98 || k.Level(ipKey(maxKeys)) != 0 {
			t.Fatal("a key held lost its state, or a key refused got some")
		}
		live := liveHeap() - base
		// One period later, every key has drained: the calls sweep them,
		// a shard at a time, and the tables go. (The test logs only then:
		// its log is on the heap too.)
		c.now += int64(spreadPeriod)
		for range 70 {
			k.Level("10.255.255.255")
		}
		after := liveHeap() - base
		t.Logf("%d keys, cap %d: peak heap %.1f MB allocated, %.1f MB live, footprint %.1f MB; %d bytes live a period after, %d empty",
			n, maxKeys, float64(peakAlloc)/1e6, float64(max(peakLive, live))/1e6, float64(footprint)/1e6, after, empty)
		if after > empty+8192 { // the runtime's own heap moves by a few KB
			t.Fatalf("one period after the flood: %d bytes live, want the %d of an empty Keyed", after, empty)
		}
		if k.Len() != 0 {
			t.Fatalf("Len %d one period after the flood", k.Len())
		}
		clocktest.CheckNoGoroutines(t, "github.com/dripgo/drip/ratelimit")
		runtime.KeepAlive(k)
	})
}
