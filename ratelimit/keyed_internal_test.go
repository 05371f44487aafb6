package ratelimit

import (
	"testing"
	"time"
	"unsafe"

	"github.com/benbjohnson/clock"
)

// checkTables fails the test unless every shard's table keeps its
// invariants: slots in the order of their hashes, each at or after its
// home, the last slot empty, used and the cap's count right, and a side
// entry for every promoted slot and none other.
func checkTables(t testing.TB, c *keyed) {
	t.Helper()
	total := 0
	for si := range c.shards {
		s := &c.shards[si]
		s.mu.Lock()
		used, promotedSlots := 0, 0
		if s.slots != nil {
			if s.slots[len(s.slots)-1].hash != emptyHash {
				t.Fatalf("shard %d: last slot taken", si)
			}
			if uint64(len(s.slots)) < s.n+s.n/16+8 || uint64(len(s.slots)) > s.n+(s.n+1)/16+9 {
				t.Fatalf("shard %d: %d slots for %d home", si, len(s.slots), s.n)
			}
		} else if s.used != 0 || s.n != 0 {
			t.Fatalf("shard %d: no table but used %d, n %d", si, s.used, s.n)
		}
		prev := uint64(0)
		for i, sl := range s.slots {
			if sl.hash == emptyHash {
				continue
			}
			if int(sl.hash>>(64-shardBits)) != si {
				t.Fatalf("shard %d: slot %d holds a hash of shard %d", si, i, sl.hash>>(64-shardBits))
			}
			if used > 0 && sl.hash <= prev {
				t.Fatalf("shard %d: slot %d out of order", si, i)
			}
			if h := s.home(sl.hash); h > i {
				t.Fatalf("shard %d: slot %d before its home %d", si, i, h)
			}
			if sl.tat == promotedTat {
				promotedSlots++
				if s.side[sl.hash] == nil {
					t.Fatalf("shard %d: promoted slot %d has no Limiter", si, i)
				}
			}
			prev = sl.hash
			used++
		}
		if used != s.used || promotedSlots != len(s.side) {
			t.Fatalf("shard %d: %d slots used, counted %d; %d promoted, %d Limiters", si, used, s.used, promotedSlots, len(s.side))
		}
		total += used
		s.mu.Unlock()
	}
	if c.maxKeys > 0 && int64(total) != c.held.Load() {
		t.Fatalf("%d keys held, counted %d", total, c.held.Load())
	}
}

// heldKeys returns the keys held, drained or not, without sweeping.
func heldKeys(c *keyed) int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.used
		s.mu.Unlock()
	}
	return n
}

// Keys whose hashes collide share a bucket; keys of the same shard whose
// homes coincide keep their order through inserts, removals, sweeps and
// resizes.
func TestKeyedTableCollisionsAndRuns(t *testing.T) {
	mock := clock.NewMock()
	k := NewKeyed[int](2, time.Second, WithClock(mock))
	c := &k.keyed
	// Hashes of shard 5 that crowd few homes.
	base := uint64(5) << (64 - shardBits)
	hs := []uint64{base + 10, base + 11, base + 12, base + 13, base + 1<<40, base + 1<<40 + 1}
	for i, h := range hs {
		if !c.check(h, 1, true) {
			t.Fatalf("key %d refused", i)
		}
		checkTables(t, c)
	}
	// The same hash is the same bucket: one more unit fills it.
	if !c.check(hs[0], 1, true) || c.check(hs[0], 0.001, true) {
		t.Fatal("a bucket of 2 did not fill at 2")
	}
	mock.Add(600 * time.Millisecond)
	// hs[0] holds 0.8; the rest drained.
	if n := c.length(); n != 1 {
		t.Fatalf("Len %d, want 1", n)
	}
	checkTables(t, c)
	for i := range 2000 {
		c.check(base+uint64(i)*7919, 1, true)
		if i%97 == 0 {
			checkTables(t, c)
		}
	}
	checkTables(t, c)
	mock.Add(time.Second)
	if n := c.length(); n != 0 {
		t.Fatalf("Len %d after every key drained, want 0", n)
	}
	if s := &c.shards[5]; s.slots != nil {
		t.Fatalf("an empty shard keeps %d slots", len(s.slots))
	}
}

// A key's Limiter is not demoted while a call uses it outside the shard's
// lock, as Acquire does between promoting the key and queueing on its
// Limiter, even though no one is queued yet and no block lasts: the call
// would queue on a Limiter the Keyed no longer sees. Once unused, it is.
func TestKeyedSettleKeepsALimiterInUse(t *testing.T) {
	mock := clock.NewMock()
	k := NewKeyed[string](2, 2*time.Second, WithClock(mock)) // a unit a second
	k.Pause("a", time.Second)
	h := k.hash("a")
	s := &k.shards[h>>(64-shardBits)]
	s.mu.Lock()
	e := s.side[h]
	e.users++
	s.mu.Unlock()
	mock.Add(500 * time.Millisecond)
	k.Level("a")
	mock.Add(time.Second) // the pause has ended, the bucket is a unit short of full
	k.Level("a")
	s.mu.Lock()
	kept := s.side[h] == e
	e.users--
	s.mu.Unlock()
	if !kept {
		t.Fatal("a Limiter in use was demoted")
	}
	if k.Level("a") != 0.5 {
		t.Fatalf("level %v, want 0.5", k.Level("a"))
	}
	s.mu.Lock()
	demoted := s.side[h] == nil
	s.mu.Unlock()
	if !demoted || k.Len() != 1 {
		t.Fatalf("a Limiter no longer needed was kept (demoted %v), Len %d", demoted, k.Len())
	}
	checkTables(t, &k.keyed)
}

// Shards take whole cache lines, from a cache line's start in the Keyed,
// so that the cores that lock two of them share no line.
func TestKeyedShardsAlignedOnCacheLines(t *testing.T) {
	var k Keyed[string]
	if size, at := unsafe.Sizeof(k.shards[0]), unsafe.Offsetof(k.shards); size%cacheLine != 0 || at%cacheLine != 0 {
		t.Fatalf("shards of %d bytes at offset %d", size, at)
	}
}
