package ratelimit

import (
	"math"
	"math/bits"
	"slices"
	"sync"
	"time"
	"unsafe"
)

// A Keyed keeps its keys in numShards shards, picked by the top bits of the
// key's hash, each an open-addressing table under a mutex of its own.
//
// A key in the plain state (no one waits on it, no pause, a bucket that
// ticks can count) is one slot of 16 bytes: its hash, and its tat, the time
// at which its bucket will be empty, in the shard's ticks since the shard's
// epoch: exactly the state word of a Limiter with no block. A key whose tat
// is not after now has drained: a Limiter in that state admits what a new
// one would, so the slot is dropped, and a new key starts from an empty
// bucket. A key that needs more (callers waiting, a pause, a bucket that
// SetRate left fuller than ticks count) is promoted: it gets a Limiter, kept
// in the shard's side map, and its slot's tat says so (promotedTat). It is
// demoted back to a plain tat once it needs no more than that.
//
// The table is linear probing with the slots in the order of their hashes:
// a hash's home slot is hash*n/2^64 (of the hash's bits below the shard's),
// which grows with the hash, so that a lookup stops at the first slot
// whose hash is not below its own, found or not, and a table can be swept
// or resized in one pass, placing each slot at its home or just after the
// slot before. The table has room past the n home slots, so that runs
// never wrap around, and its last slot stays empty, so that every scan
// stops. A table grows by a quarter once 7/8 of its home slots are taken
// and a sweep cannot free an eighth: so it is at least 70% full after
// growing, and a key costs at most about 24 bytes.
const (
	shardBits = 6
	numShards = 1 << shardBits

	// emptyHash marks an empty slot: it is above every hash, so that
	// lookups stop there. A key whose hash is emptyHash takes the one
	// below (see Keyed.hash).
	emptyHash = math.MaxUint64
	// promotedTat is the tat of a promoted key's slot: after any time,
	// so that the slot never looks drained.
	promotedTat = math.MaxInt64

	minHome = 8 // home slots of a table, at least
)

type kslot struct {
	hash uint64
	tat  int64
}

// A promoted key's Limiter, and the calls that use it outside the shard's
// lock: it is not demoted while users > 0.
type promoted struct {
	lim   *Limiter
	users int
}

type shard struct {
	mu       sync.Mutex
	r        *rate
	unitCost int64 // r.cost(1), the most common amount
	// slots is the table, n home slots and room past them, or nil while the
	// shard holds no key; used is the number of keys in it.
	slots []kslot
	n     uint64
	used  int
	side  map[uint64]*promoted
	// epoch is time 0 of the tats; epochNs is the same, in nanoseconds
	// since the Keyed's base (saturated, if the clock has moved that far).
	epoch   time.Time
	epochNs int64
	// seen is the time, in ticks, at which the clock was last read under
	// mu: an earlier time means a clock that moved backwards, or a reading
	// taken before another caller took the lock.
	seen int64
	_    [2*cacheLine - 112]byte
}

// ticks returns the time now in ticks since the epoch, from d0, read in
// nanoseconds since base before the lock was taken; it rereads the clock
// if d0 is stale or out of the epoch's reach, and moves the epoch if it
// must. It requires mu.
func (s *shard) ticks(c *keyed, d0 int64) int64 {
	r := s.r
	if ns := d0 - s.epochNs; ns >= 0 && ns < r.rebaseAfter {
		now := ns * r.scale
		if now >= s.seen {
			s.seen = now
			return now
		}
		if s.seen-now <= staleNs*r.scale {
			// Most likely read before another caller took the lock
			// first: seen is a reading taken since, during this call,
			// so the call may take effect then. (A clock that went back
			// by that little stands still until it passes seen again.)
			return s.seen
		}
	}
	return s.reread(c)
}

// staleNs is how far, in nanoseconds, a reading of the clock may lie behind
// the last one taken under a shard's lock, and still be taken for a
// reading that lost the race for the lock rather than a clock that went
// back.
const staleNs = int64(time.Millisecond)

// reread reads the clock under mu, and moves the epoch to now if the clock
// has gone far past it or back before the time last seen. As a Limiter
// does, a shard whose clock went back takes its buckets as they were when
// last seen, and drains them from the new time on: stricter by the time
// that has passed since, never looser.
func (s *shard) reread(c *keyed) int64 {
	r := s.r
	d := int64(c.clock.Since(s.epoch))
	if d >= 0 && d < r.rebaseAfter && d*r.scale >= s.seen {
		s.seen = d * r.scale
		return s.seen
	}
	shift, epoch := s.seen, c.clock.Now()
	if d >= 0 && satMul(d, r.scale) >= s.seen {
		// Far past the epoch: the same time, counted from now.
		shift, epoch = satMul(d, r.scale), s.epoch.Add(time.Duration(d))
	} else {
		// The clock went back: the sweeps are due from now.
		c.sweepAt.Store(int64(epoch.Sub(c.base)))
		c.capSweepAt.Store(int64(epoch.Sub(c.base)))
	}
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.hash != emptyHash && sl.tat != promotedTat {
			// A tat that drained by the shift counts as drained: 0 is the
			// new now. compact drops it.
			sl.tat = max(satSub(sl.tat, shift), 0)
		}
	}
	s.epoch, s.epochNs = epoch, int64(epoch.Sub(c.base))
	s.seen = 0
	c.dropped(s.compact(0))
	return 0
}

// home returns the home slot of hash h.
func (s *shard) home(h uint64) int {
	hi, _ := bits.Mul64(h<<shardBits, s.n)
	return int(hi)
}

// find returns the slot holding h and true, or the slot where h would go
// and false (-1 if the table has no slots). It requires mu.
func (s *shard) find(h uint64) (int, bool) {
	if s.slots == nil {
		return -1, false
	}
	i := s.home(h)
	for s.slots[i].hash < h {
		i++
	}
	return i, s.slots[i].hash == h
}

// room reports whether the Keyed has room for a new key. It requires mu.
func (s *shard) room(c *keyed) bool {
	return c.maxKeys == 0 || c.held.Load() < c.maxKeys
}

// insert adds h, not held, with its bucket empty at tat, and reports
// whether it did: under a cap, it refuses a new key the Keyed has no room
// for. It requires mu.
func (s *shard) insert(c *keyed, h uint64, tat, now int64) bool {
	if c.maxKeys > 0 {
		// Load first: a flood of keys refused then writes nothing that
		// every core shares.
		if c.held.Load() >= c.maxKeys {
			return false
		}
		if c.held.Add(1) > c.maxKeys {
			c.held.Add(-1)
			return false
		}
	}
	s.insertAt(c, h, tat, now, false)
	return true
}

// insertAt adds h, not held, with tat, and returns its slot. counted says
// whether held must count it (insert counted it already). It requires mu.
func (s *shard) insertAt(c *keyed, h uint64, tat, now int64, counted bool) int {
	if counted && c.maxKeys > 0 {
		c.held.Add(1)
	}
	if s.slots == nil {
		s.resize(slotsFor(minHome))
	} else if uint64(s.used+1) > s.n-s.n/8 {
		// Full: drop the drained keys, and grow unless that freed an
		// eighth of the home slots. The table keeps its size: keys come.
		s.settleAll(c, now)
		c.dropped(s.compact(now))
		if uint64(s.used+1) > s.n-s.n/4 {
			s.resize(grown(len(s.slots)))
		}
	}
	for {
		i, _ := s.find(h)
		e := i
		for s.slots[e].hash != emptyHash {
			e++
		}
		if e < len(s.slots)-1 {
			copy(s.slots[i+1:e+1], s.slots[i:e])
			s.slots[i] = kslot{h, tat}
			s.used++
			return i
		}
		// The run reaches the last slot, which stays empty.
		s.resize(grown(len(s.slots)))
	}
}

// remove drops the key in slot i, moving the slots after it back towards
// their homes. It requires mu.
func (s *shard) remove(i int) {
	for {
		next := s.slots[i+1]
		if next.hash == emptyHash || s.home(next.hash) > i {
			break
		}
		s.slots[i] = next
		i++
	}
	s.slots[i] = kslot{hash: emptyHash}
	s.used--
}

// compact drops the slots whose tat is not after now, placing each slot
// left at its home or just after the slot before, and returns how many it
// dropped. It requires mu.
func (s *shard) compact(now int64) int {
	w, dropped := 0, 0
	for i := 0; i < len(s.slots)-1; i++ {
		sl := s.slots[i]
		if sl.hash == emptyHash {
			continue
		}
		if sl.tat <= now {
			dropped++
			continue
		}
		at := max(w, s.home(sl.hash)) // at most i: every slot before was read
		for ; w < at; w++ {
			s.slots[w].hash = emptyHash
		}
		s.slots[at] = sl
		w = at + 1
	}
	for ; w < len(s.slots)-1; w++ {
		s.slots[w].hash = emptyHash
	}
	s.used -= dropped
	return dropped
}

// resize moves the keys to a table of about size slots, or frees the
// table if the shard holds no key. It requires mu.
func (s *shard) resize(size int) {
	if s.used == 0 && s.slots != nil {
		s.slots, s.n = nil, 0
		return
	}
	old := s.slots
	for {
		// The allocator rounds the size up to its size classes: that
		// room goes to more home slots, n+n/16+8 in all at most.
		s.slots = slices.Grow([]kslot(nil), size)
		s.slots = s.slots[:cap(s.slots)]
		n := uint64(len(s.slots)-8) * 16 / 17
		for n+1+(n+1)/16+8 <= uint64(len(s.slots)) {
			n++
		}
		s.n = n
		for i := range s.slots {
			s.slots[i].hash = emptyHash
		}
		w, fits := 0, true
		for _, sl := range old {
			if sl.hash == emptyHash {
				continue
			}
			at := max(w, s.home(sl.hash))
			if at >= len(s.slots)-1 {
				fits = false
				break
			}
			s.slots[at] = sl
			w = at + 1
		}
		if fits {
			return
		}
		size = grown(size)
	}
}

// slotsFor returns the size of a table of n home slots.
func slotsFor(n uint64) int { return int(n + n/16 + 8) }

// grown returns the size a table of size slots grows to: a quarter more.
// The allocator gives a table of more than 32 KB whole pages of 8 KB, so
// the size is rounded down to whole pages: rounded up, the table would
// grow by as much as half at 40 KB, and be less full after.
func grown(size int) int {
	size += max(size/4, minHome)
	if b := size * int(unsafe.Sizeof(kslot{})); b > 32<<10 {
		size = b &^ (8<<10 - 1) / int(unsafe.Sizeof(kslot{}))
	}
	return size
}

// sweep drops every key that drained, demotes the promoted keys that need
// no Limiter any more, and shrinks a table that is less than a quarter
// full. It requires mu.
func (s *shard) sweep(c *keyed, now int64) {
	s.settleAll(c, now)
	if s.slots == nil {
		return
	}
	c.dropped(s.compact(now))
	if s.n > minHome && uint64(s.used) < s.n/4 || s.used == 0 {
		s.resize(slotsFor(max(minHome, uint64(s.used)*8/5))) // frees an empty one
	}
}

// settleAll demotes or drops the promoted keys that need their Limiter no
// more. It requires mu.
func (s *shard) settleAll(c *keyed, now int64) {
	for h, e := range s.side {
		s.settle(c, h, e, now)
	}
}

// dropped counts n keys dropped from the Keyed.
func (c *keyed) dropped(n int) {
	if n > 0 && c.maxKeys > 0 {
		c.held.Add(int64(-n))
	}
}

// promote gives the plain key h, in slot i with its bucket empty at tat, a
// Limiter of its own in the same state: the shard's rate and epoch, so that
// its tat carries over as it is. It requires mu.
func (s *shard) promote(c *keyed, h uint64, i int, tat int64) *promoted {
	tat = max(tat, 0)
	l := &Limiter{clock: c.clock}
	p := newParams(*s.r, s.epoch, tat, 0, 0, 0)
	p.state.Store(pack(tat))
	l.cur.Store(p)
	e := &promoted{lim: l}
	if s.side == nil {
		s.side = make(map[uint64]*promoted)
	}
	s.side[h] = e
	s.slots[i].tat = promotedTat
	return e
}

// settle demotes the promoted key h back to a plain tat, or drops it, if
// no call uses its Limiter, no one waits on it and its blocks (a pause, an
// over-full bucket) have ended: from then on the Limiter's bucket is its
// tat, or the floor the blocks left, whichever is later. It requires mu.
func (s *shard) settle(c *keyed, h uint64, e *promoted, now int64) {
	if e.users > 0 {
		return
	}
	l := e.lim
	// Look before locking: lock may move the Limiter's epoch, which
	// rounds the units of a bucket over-full for longer than ticks count.
	// A Keyed leaves its Limiters alone but for the calls on their key.
	if p := l.cur.Load(); p.state.Load()&waitingBit != 0 || int64(c.clock.Since(p.epoch)) < p.blockNs {
		return
	}
	p, lnow := l.lock()
	if !l.q.empty() || lnow/p.scale < p.blockNs || p.rate != *s.r {
		l.unlock()
		return
	}
	// The Limiter's epoch may have moved (its clock went back, or far
	// ahead): both epochs are then within its reach of now, so the shift
	// is exact and cannot overflow.
	tat := max(l.tat(p), p.floor)
	tat = satAdd(tat, satMul(int64(p.epoch.Sub(s.epoch)), p.scale))
	l.unlock()
	delete(s.side, h)
	i, _ := s.find(h)
	if tat <= now {
		s.remove(i)
		c.dropped(1)
		return
	}
	s.slots[i].tat = tat
}

// setRate moves the shard to rate r at now (ticks), as Limiter.SetRate
// moves one limiter: the epoch moves to now, and each bucket keeps its
// units, in the new ticks. It requires mu.
func (s *shard) setRate(c *keyed, r *rate, now int64) {
	old := s.r
	ns := now / old.scale
	limit := r.capacity + spanTicks
	// Keys over-full beyond what ticks count at the new rate become
	// Limiters at the old rate, which SetRate then moves as it does.
	var over []kslot
	for i := range s.slots {
		sl := &s.slots[i]
		switch {
		case sl.hash == emptyHash || sl.tat == promotedTat:
		case sl.tat <= now:
			sl.tat = 0 // drained: compact drops it
		default:
			// At least a tick: convert rounds up.
			if t := convert(sl.tat-now, old, r, limit); t < limit {
				sl.tat = t
			} else {
				over = append(over, *sl)
				sl.tat = promotedTat
			}
		}
	}
	oldEpoch := s.epoch
	s.r, s.unitCost = r, r.cost(1)
	s.epoch = s.epoch.Add(time.Duration(ns))
	s.epochNs = satAdd(s.epochNs, ns)
	s.seen = 0
	c.dropped(s.compact(0))
	for _, e := range s.side {
		e.lim.SetRate(r.maxRate, r.period)
	}
	for _, sl := range over {
		l := &Limiter{clock: c.clock}
		p := newParams(*old, oldEpoch, sl.tat, 0, 0, 0)
		p.state.Store(pack(sl.tat))
		l.cur.Store(p)
		l.SetRate(r.maxRate, r.period)
		if s.side == nil {
			s.side = make(map[uint64]*promoted)
		}
		s.side[sl.hash] = &promoted{lim: l}
	}
	if s.slots == nil || s.used == 0 {
		s.slots, s.n = nil, 0
	}
}
