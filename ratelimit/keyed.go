package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
)

// A Keyed is a leaky bucket per key: per client IP or API key in a server,
// per host in a crawler, per tenant in a worker. Every key gets the same
// rate, MaxRate units per Period in bursts of up to MaxRate, and each key's
// bucket behaves exactly as a [Limiter] of its own would (but for a clock
// that moves backwards: see Clocks): the same admissions, to the tick,
// FIFO order among the callers waiting on it, cancellation that takes
// nothing, deadlines that fail at once, Pause.
// [Keyed.SetRate] changes the rate of every key. A Keyed is safe for
// concurrent use.
//
// # Memory
//
// A bucket that has drained, and on which no one waits, holds no
// information: a Limiter in that state admits exactly what a new one would.
// So a Keyed drops such a key, and a key costs nothing one Period after its
// last use. A key holding state costs a slot of 16 bytes, in tables kept
// at least 70% full: about 20 to 25 bytes of heap. The slot holds a 64-bit
// hash of the key, never the key itself, and the time at which its bucket
// will be empty. A key on which callers wait, or that is paused, holds a
// Limiter of its own meanwhile (a few hundred bytes).
//
// A Keyed holds no goroutine. The drained keys are dropped by the calls
// themselves: each call checks whether a sweep is due, and the Keyed sweeps
// one of its 64 shards at a time, so that each shard is swept about once a
// Period (or once every 64 ms, for a shorter Period) while calls come in. A
// shard is also swept before its table grows. So a key that drained is
// dropped at the latest about one Period (or 64 ms) later, given calls;
// [Keyed.Len] sweeps every shard. A Keyed that nobody calls keeps what it
// held, and costs no time.
//
// # Collisions
//
// Two keys whose 64-bit hashes are equal share a bucket: both are then held
// to the one rate together, which is stricter than their own, never looser.
// The hash is [hash/maphash] with a seed of the Keyed's own, so no one can
// pick keys that collide without knowing it; among a million keys held at
// once, the chance that any two collide is about one in 37 million.
//
// # A cap on keys
//
// Without [WithMaxKeys], a Keyed holds every key that holds state: the keys
// active within the last Period, however many. With WithMaxKeys(n), it holds
// at most n: a new key that would be the (n+1)th is refused (TryAcquire
// and HasCapacity report false, Acquire returns an error that wraps
// [ErrTooManyKeys], Allow says so), until keys already held drain. A key that
// holds state is never evicted to make room: dropping it would let it
// start again from an empty bucket, above its rate. Keys that drained are
// swept as above; at the cap, a new key also makes the Keyed sweep every
// shard, at most 16 times a Period (or once every 4 ms, for a Period
// shorter than 64 ms), so that a flood of new keys costs a sweep now and
// then, not one per key. So a new key may be refused for up to a
// sixteenth of a Period after some held key drained, never the other way
// round.
//
// # Clocks
//
// A Keyed reads time only through its clock (see [WithClock]), as a Limiter
// does, and is made and used in synctest bubbles the same way: a clock that
// moves backwards makes it stricter, never looser than a clock that stood
// still at its latest reading. Keys share the latest reading of their
// shard: a key last used before another key's later reading drains up to
// that reading, where a Limiter of its own, which never saw that time,
// would take its bucket as it last saw it. Either way, no key admits more
// than its rate allows over the time the clock has shown.
type Keyed[K comparable] struct {
	keyed // first: its shards are aligned on cache lines
	seed  maphash.Seed
}

// keyed is the part of a Keyed that does not depend on the key's type.
type keyed struct {
	// sweepAt is when the next shard is due a sweep, in nanoseconds since
	// base: every call reads it, so it has a cache line of its own.
	sweepAt atomic.Int64
	_       [cacheLine - 8]byte
	// held counts the keys held, kept only under a cap: it is written on
	// every new and dropped key. capSweepAt is when, in nanoseconds since
	// base, a new key at the cap may sweep every shard again.
	held       atomic.Int64
	capSweepAt atomic.Int64
	_          [cacheLine - 16]byte
	// shards each take two cache lines, so that no two share one.
	shards [numShards]shard

	clock clock.Clock
	// base is time 0 of the readings taken before a shard is locked, which
	// the shards' epochs are measured from. Reading the clock is the
	// costliest step of a call, so it is done outside the lock.
	base      time.Time
	maxKeys   int64 // 0: no cap
	capErr    error // the error for a new key at the cap, made once
	cur       atomic.Pointer[rate]
	sweepGap  atomic.Int64  // nanoseconds between two shard sweeps
	sweepNext atomic.Uint64 // the shard swept next, modulo numShards
	setMu     sync.Mutex    // serialises SetRate
}

// ErrTooManyKeys is returned, wrapped with the cap, by a [Keyed] made with
// [WithMaxKeys] for a new key while it holds its maximum of keys, each of
// which still holds state.
var ErrTooManyKeys = errors.New("ratelimit: too many keys")

// keyCapError reports a new key refused at the cap.
type keyCapError struct{ max int64 }

func (e *keyCapError) Error() string {
	return fmt.Sprintf("ratelimit: Keyed holds its maximum of %d keys, all still holding state: a new key is refused", e.max)
}

func (e *keyCapError) Unwrap() error { return ErrTooManyKeys }

// A KeyedOption configures a Keyed in [NewKeyed]: every [Option] does, and
// so does [WithMaxKeys].
type KeyedOption interface {
	applyKeyed(o *keyedOptions)
}

type keyedOptions struct {
	options
	maxKeys int
}

// applyKeyed makes every Option a KeyedOption.
func (o Option) applyKeyed(ko *keyedOptions) {
	if o != nil {
		o(&ko.options)
	}
}

type maxKeysOption int

func (n maxKeysOption) applyKeyed(o *keyedOptions) { o.maxKeys = int(n) }

// WithMaxKeys caps the keys a [Keyed] holds at n: while n keys hold state,
// a new key is refused rather than any of them evicted (see Keyed). Memory
// then stays bounded however many distinct keys come, as in a flood of
// spoofed addresses. WithMaxKeys panics if n < 1.
func WithMaxKeys(n int) KeyedOption {
	if n < 1 {
		panic(fmt.Sprintf("ratelimit: WithMaxKeys: n %d must be >= 1", n))
	}
	return maxKeysOption(n)
}

// NewKeyed returns a Keyed whose every key is a bucket of maxRate units
// that drains in period, as New(maxRate, period) would make for each. It
// panics on the values New refuses, naming them, and the options take the
// same clock as New's (WithClock), and WithMaxKeys.
func NewKeyed[K comparable](maxRate float64, period time.Duration, opts ...KeyedOption) *Keyed[K] {
	r := newRate("NewKeyed", maxRate, period)
	var o keyedOptions
	for _, opt := range opts {
		if opt != nil {
			opt.applyKeyed(&o)
		}
	}
	if o.clock == nil {
		o.clock = clock.New()
	}
	k := &Keyed[K]{seed: maphash.MakeSeed()}
	k.clock = o.clock
	k.base = o.clock.Now()
	if o.maxKeys > 0 {
		k.maxKeys = int64(o.maxKeys)
		k.capErr = &keyCapError{max: k.maxKeys}
	}
	k.cur.Store(&r)
	k.sweepGap.Store(sweepGap(&r))
	k.sweepAt.Store(k.sweepGap.Load())
	for i := range k.shards {
		s := &k.shards[i]
		s.r, s.unitCost, s.epoch = &r, r.cost(1), k.base
	}
	return k
}

// hash returns the key's hash, never emptyHash, which marks an empty slot.
func (k *Keyed[K]) hash(key K) uint64 {
	h := maphash.Comparable(k.seed, key)
	if h == emptyHash {
		h--
	}
	return h
}

// MaxRate returns every bucket's capacity: the most a key can acquire in
// one burst, and the number of units admitted per Period.
func (k *Keyed[K]) MaxRate() float64 { return k.cur.Load().maxRate }

// Period returns the time in which MaxRate units drain from a full bucket.
func (k *Keyed[K]) Period() time.Duration { return k.cur.Load().period }

// TryAcquire takes amount units from key's bucket if they are available
// now, without waiting, and reports whether it did, as [Limiter.TryAcquire]
// does. It also reports false for a new key refused at the cap
// ([WithMaxKeys]). An amount of 0 always succeeds, and creates no state.
func (k *Keyed[K]) TryAcquire(key K, amount float64) bool {
	if amount == 0 {
		return true
	}
	return k.check(k.hash(key), amount, true)
}

// HasCapacity reports whether TryAcquire(key, amount) would succeed now,
// without taking anything, and without creating state for a new key.
func (k *Keyed[K]) HasCapacity(key K, amount float64) bool {
	if amount == 0 {
		return true
	}
	return k.check(k.hash(key), amount, false)
}

// Level returns how full key's bucket is now, in units, as
// [Limiter.Level] does: 0 for a key the Keyed does not hold.
func (k *Keyed[K]) Level(key K) float64 { return k.level(k.hash(key)) }

// Waiting returns the number of callers queued in Acquire on key.
func (k *Keyed[K]) Waiting(key K) int { return k.waiting(k.hash(key)) }

// Wait is shorthand for Acquire(ctx, key, 1).
func (k *Keyed[K]) Wait(ctx context.Context, key K) error { return k.acquire(ctx, k.hash(key), 1) }

// Acquire takes amount units from key's bucket, waiting until it has room
// for them, with the contract of [Limiter.Acquire]: callers on one key are
// admitted in the order they called; a caller whose ctx ends takes nothing
// and returns ctx.Err(); a deadline that cannot be met fails at once with
// a *DeadlineError; an amount above MaxRate, or negative, NaN or infinite,
// fails with ErrExceedsCapacity or ErrInvalidAmount. Under a cap
// ([WithMaxKeys]) a new key the Keyed has no room for fails at once with an
// error that wraps [ErrTooManyKeys]. An amount of 0 returns nil at once.
func (k *Keyed[K]) Acquire(ctx context.Context, key K, amount float64) error {
	return k.acquire(ctx, k.hash(key), amount)
}

// Pause makes key's bucket admit nothing for d, as [Limiter.Pause] does,
// while the other keys go on. On a key the Keyed does not hold, it creates
// its state, so that the pause is kept however long the key stays idle;
// under a cap, a pause is recorded even on a new key that takes the Keyed
// past it, since dropping the pause would let the key exceed what the
// server asked for (the keys past the cap are then those paused). Pause
// with d <= 0 does nothing.
func (k *Keyed[K]) Pause(key K, d time.Duration) { k.pause(k.hash(key), d) }

// Allow takes amount units from key's bucket if they are available now, as
// TryAcquire does, and says in one call what an HTTP middleware answers
// with: whether the amount was taken, what is left, and when to come back.
// See [Decision].
func (k *Keyed[K]) Allow(key K, amount float64) Decision { return k.allow(k.hash(key), amount) }

// SetRate changes the capacity and the period of every key, keeping each
// bucket's units, as [Limiter.SetRate] does for one: callers waiting keep
// their places, and those whose amount exceeds the new capacity fail with
// ErrExceedsCapacity. It takes each shard's lock in turn, so a call that
// runs meanwhile may find some keys at the old rate and others at the new.
// It takes time in proportion to the keys held. SetRate panics on the
// values New refuses, and then changes nothing.
func (k *Keyed[K]) SetRate(maxRate float64, period time.Duration) { k.setRate(maxRate, period) }

// Len returns the number of keys holding state now: those whose bucket has
// not drained, those callers wait on, those paused. It sweeps every shard to
// drop the keys that drained, so it takes time in proportion to the keys
// held: it is for monitoring and tests, not for every request.
func (k *Keyed[K]) Len() int { return k.length() }

// Key returns a view of key's bucket, which is an [Acquirer] (and a
// throttle.Pauser): one key of a Keyed can be handed to a pool or a throttle
// wrapper as if it were a Limiter of its own. The view holds the key and
// its hash, and no state: making one costs an allocation, and holds nothing
// in the Keyed; all views of a key share its bucket.
func (k *Keyed[K]) Key(key K) *KeyLimiter[K] {
	return &KeyLimiter[K]{k: k, key: key, h: k.hash(key)}
}

// A KeyLimiter is one key's bucket in a [Keyed], made by [Keyed.Key]: its
// methods are those of the Keyed, on that key.
type KeyLimiter[K comparable] struct {
	k   *Keyed[K]
	key K
	h   uint64
}

var _ Acquirer = (*KeyLimiter[string])(nil)

// Key returns the key.
func (l *KeyLimiter[K]) Key() K { return l.key }

// Acquire is [Keyed.Acquire] on the key.
func (l *KeyLimiter[K]) Acquire(ctx context.Context, amount float64) error {
	return l.k.acquire(ctx, l.h, amount)
}

// Wait is shorthand for Acquire(ctx, 1).
func (l *KeyLimiter[K]) Wait(ctx context.Context) error { return l.k.acquire(ctx, l.h, 1) }

// TryAcquire is [Keyed.TryAcquire] on the key.
func (l *KeyLimiter[K]) TryAcquire(amount float64) bool {
	return amount == 0 || l.k.check(l.h, amount, true)
}

// HasCapacity is [Keyed.HasCapacity] on the key.
func (l *KeyLimiter[K]) HasCapacity(amount float64) bool {
	return amount == 0 || l.k.check(l.h, amount, false)
}

// Allow is [Keyed.Allow] on the key.
func (l *KeyLimiter[K]) Allow(amount float64) Decision { return l.k.allow(l.h, amount) }

// Level is [Keyed.Level] on the key.
func (l *KeyLimiter[K]) Level() float64 { return l.k.level(l.h) }

// Waiting is [Keyed.Waiting] on the key.
func (l *KeyLimiter[K]) Waiting() int { return l.k.waiting(l.h) }

// Pause is [Keyed.Pause] on the key.
func (l *KeyLimiter[K]) Pause(d time.Duration) { l.k.pause(l.h, d) }

// MaxRate returns the Keyed's MaxRate.
func (l *KeyLimiter[K]) MaxRate() float64 { return l.k.MaxRate() }

// Period returns the Keyed's Period.
func (l *KeyLimiter[K]) Period() time.Duration { return l.k.Period() }

// since returns the time now in nanoseconds since base.
func (c *keyed) since() int64 { return int64(c.clock.Since(c.base)) }

// lock reads the clock, does the sweep that is due if any, locks h's shard
// and returns it with the time now in its ticks.
func (c *keyed) lock(h uint64) (*shard, int64) {
	d0 := c.since()
	if d0 >= c.sweepAt.Load() {
		c.rotate(d0)
	}
	s := &c.shards[h>>(64-shardBits)]
	s.mu.Lock()
	return s, s.ticks(c, d0)
}

// check is TryAcquire (take) and HasCapacity, for an amount other than 0.
func (c *keyed) check(h uint64, amount float64, take bool) bool {
	s, now := c.lock(h)
	r := s.r
	if !(amount >= 0) || amount > r.maxRate {
		s.mu.Unlock()
		return false // NaN fails both
	}
	cost := s.unitCost
	if amount != 1 {
		cost = r.cost(amount)
	}
	i, found := s.find(h)
	ok := true
	switch {
	case !found:
		// An empty bucket: the amount fits, if there is room for the key.
		if take {
			ok = s.insert(c, h, now+cost, now)
		} else {
			ok = s.room(c)
		}
		if !ok && c.capSweep(s) {
			return c.check(h, amount, take)
		}
	case s.slots[i].tat != promotedTat:
		tat := max(s.slots[i].tat, now) + cost
		ok = tat-now <= r.capacity
		if ok && take {
			s.slots[i].tat = tat
		}
	default:
		e := s.side[h]
		ok = e.lim.check(amount, take)
		s.settle(c, h, e, now)
	}
	s.mu.Unlock()
	return ok
}

func (c *keyed) level(h uint64) float64 {
	s, now := c.lock(h)
	defer s.mu.Unlock()
	i, found := s.find(h)
	switch {
	case !found:
		return 0
	case s.slots[i].tat != promotedTat:
		return float64(max(s.slots[i].tat-now, 0)) / s.r.unit
	}
	e := s.side[h]
	l := e.lim.Level()
	s.settle(c, h, e, now)
	return l
}

func (c *keyed) waiting(h uint64) int {
	s, _ := c.lock(h)
	defer s.mu.Unlock()
	if e := s.side[h]; e != nil {
		return e.lim.Waiting()
	}
	return 0
}

func (c *keyed) acquire(ctx context.Context, h uint64, amount float64) error {
	if done := ctx.Done(); done != nil {
		select {
		case <-done:
			return ctx.Err()
		default:
		}
	}
	s, now := c.lock(h)
	r := s.r
	if err := checkAmount(amount, r.maxRate); err != nil {
		s.mu.Unlock()
		return err
	}
	if amount == 0 {
		s.mu.Unlock()
		return nil
	}
	cost := r.cost(amount)
	i, found := s.find(h)
	var e *promoted
	switch {
	case !found:
		ok := s.insert(c, h, now+cost, now)
		if !ok && c.capSweep(s) {
			return c.acquire(ctx, h, amount)
		}
		s.mu.Unlock()
		if !ok {
			return c.capErr
		}
		return nil
	case s.slots[i].tat != promotedTat:
		t := s.slots[i].tat
		if tat := max(t, now) + cost; tat-now <= r.capacity {
			s.slots[i].tat = tat
			s.mu.Unlock()
			return nil
		}
		// The caller must wait: first, whether its deadline can be met,
		// counted as the Limiter counts it (see Limiter.due), with no
		// queue and no block.
		if deadline, ok := ctx.Deadline(); ok {
			ns := now / r.scale
			wait := time.Duration(fitNs(r, max(t, now), cost, ns) - ns)
			if remaining := deadline.Sub(s.epoch.Add(time.Duration(ns))); remaining <= wait {
				s.mu.Unlock()
				return &DeadlineError{Amount: amount, Wait: wait, Remaining: remaining}
			}
		}
		e = s.promote(c, h, i, t)
	default:
		e = s.side[h]
	}
	// The key's Limiter queues the caller; users keeps it from being
	// demoted meanwhile.
	e.users++
	s.mu.Unlock()
	err := e.lim.Acquire(ctx, amount)
	s, now = c.lock(h)
	e.users--
	s.settle(c, h, e, now)
	s.mu.Unlock()
	return err
}

// fitNs returns the first whole nanosecond, not before ns, at which cost
// fits in a bucket that is empty at tat (ticks, >= 0), as sim.fit finds it
// for a Limiter with no queue and no block.
func fitNs(r *rate, tat, cost, ns int64) int64 {
	return max(ns, ceilDivSigned(tat+cost-r.capacity, r.scale))
}

func (c *keyed) pause(h uint64, d time.Duration) {
	if d <= 0 {
		return
	}
	s, now := c.lock(h)
	defer s.mu.Unlock()
	i, found := s.find(h)
	var e *promoted
	switch {
	case !found:
		i = s.insertAt(c, h, 0, now, true)
		e = s.promote(c, h, i, 0)
	case s.slots[i].tat != promotedTat:
		e = s.promote(c, h, i, s.slots[i].tat)
	default:
		e = s.side[h]
	}
	e.lim.Pause(d)
}

func (c *keyed) allow(h uint64, amount float64) Decision {
	s, now := c.lock(h)
	r := s.r
	i, found := s.find(h)
	if found && s.slots[i].tat == promotedTat {
		e := s.side[h]
		dec := e.lim.allow(amount)
		s.settle(c, h, e, now)
		s.mu.Unlock()
		return dec
	}
	var d Decision
	tat := now // an empty bucket, for a key not held
	if found {
		tat = max(s.slots[i].tat, now)
	}
	switch err := checkAmount(amount, r.maxRate); {
	case err != nil:
		d.Err = err
	case amount == 0:
		d.OK = true
	default:
		cost := r.cost(amount)
		switch {
		case tat+cost-now > r.capacity:
			ns := now / r.scale
			d.RetryAfter = time.Duration(fitNs(r, tat, cost, ns) - ns)
		case found:
			tat += cost
			s.slots[i].tat = tat
			d.OK = true
		case s.insert(c, h, now+cost, now):
			tat += cost
			d.OK = true
		case c.capSweep(s):
			return c.allow(h, amount)
		default:
			// Nothing is admitted for the key until room is made: no
			// units remain. The keys held drain within a Period, and a
			// sweep at the cap finds them within the sixteenth of one
			// (of 64 ms at least) that capSweep lets pass between two.
			s.mu.Unlock()
			wait := time.Duration(int64(r.period) + numShards/16*sweepGap(r))
			d.Err, d.RetryAfter, d.Reset = c.capErr, wait, wait
			return d
		}
	}
	s.mu.Unlock()
	d.Remaining = r.remaining(r.capacity - (tat - now))
	d.Reset = time.Duration(ceilDivSigned(tat-now, r.scale))
	return d
}

// setRate is SetRate.
func (c *keyed) setRate(maxRate float64, period time.Duration) {
	r := newRate("SetRate", maxRate, period)
	c.setMu.Lock()
	defer c.setMu.Unlock()
	c.cur.Store(&r)
	// The sweeps come round at the new pace from now: a sweep due a long
	// period ahead would leave the keys of a shorter one for that long.
	gap := sweepGap(&r)
	c.sweepGap.Store(gap)
	c.sweepAt.Store(c.since() + gap)
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.setRate(c, &r, s.ticks(c, c.since()))
		s.mu.Unlock()
	}
}

func (c *keyed) length() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.sweep(c, s.ticks(c, c.since()))
		n += s.used
		s.mu.Unlock()
	}
	return n
}

// capSweep sweeps every shard for a new key refused at the cap, unless
// that was done less than 1/16 of a period ago, and reports whether it
// did: then the caller tries again. So a flood of new keys at the cap costs
// a sweep of the Keyed 16 times a period, not one per key. It unlocks s,
// the shard of the key refused, if it sweeps: shards are locked one at a
// time.
func (c *keyed) capSweep(s *shard) bool {
	d0 := c.since()
	at := c.capSweepAt.Load()
	if d0 < at || !c.capSweepAt.CompareAndSwap(at, d0+numShards/16*c.sweepGap.Load()) {
		return false
	}
	s.mu.Unlock()
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.sweep(c, s.ticks(c, c.since()))
		s.mu.Unlock()
	}
	return true
}

// sweepGap returns the time between two shard sweeps at rate r, in
// nanoseconds: a Period, or 64 ms if longer, for all the shards.
func sweepGap(r *rate) int64 {
	return max(int64(r.period), int64(64*time.Millisecond)) / numShards
}

// rotate sweeps the next shard, if its sweep is due at d0 (nanoseconds
// since base) and no other call claimed it. A Keyed left alone for longer
// than a cycle catches up over the next numShards calls, one shard each.
// It requires no lock.
func (c *keyed) rotate(d0 int64) {
	at, gap := c.sweepAt.Load(), c.sweepGap.Load()
	next := max(at+gap, d0-(numShards-1)*gap)
	if d0 < at || !c.sweepAt.CompareAndSwap(at, next) {
		return
	}
	s := &c.shards[(c.sweepNext.Add(1)-1)%numShards]
	s.mu.Lock()
	s.sweep(c, s.ticks(c, d0))
	s.mu.Unlock()
}
