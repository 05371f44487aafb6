package redisbucket

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Keyed is a bucket per key (client, host, tenant), each a [Limiter]'s,
// kept in Redis under a prefix: every Keyed, in any process, made with the
// same prefix shares each key's bucket, so that a fleet enforces one
// per-client limit, not one per replica.
//
// Each key's bucket is the Redis key prefix+key, which holds one bucket of
// 56 bytes as a Limiter's key does, with the same model, errors and
// guarantees (see the package documentation): FIFO turns across
// processes, give-backs of cancelled reservations by nonce, deadlines that
// fail at once, and a key that expires by itself once its bucket has
// drained and its pause has ended, so that an idle key costs nothing, in
// Redis or here. A key never written is an empty bucket.
//
// A Keyed holds no goroutine and no connection of its own, and needs no
// Close. Each call makes the Limiter of its key on the spot, without a
// round trip; all of them share the Keyed's rate, clock and timeout. Per
// key, the Keyed keeps only what the last replies said of its bucket (until
// when the Redis key holds units), and for at most 10,000 keys, preferring
// to forget those whose bucket has drained: it is what lets a call write
// back a key that Redis lost (see Lost state in the package
// documentation). For a key it has forgotten, it is as a process started
// since: if Redis loses that key while it holds units, what may pass on
// it beyond the rate is one burst and the units that callers had reserved,
// as the package documentation says for such a process.
//
// A Keyed is safe for concurrent use.
type Keyed struct {
	proto  Limiter // what the Limiter of every key shares; key and seen unset
	prefix string

	// latest is the server's time of the latest reply on any key, in µs
	// since 1970: a sighting whose end is not after it has run out.
	latest serverNow

	mu     sync.Mutex
	seen   map[string]*sighting // by Redis key
	memory int                  // the most sightings kept
}

// keyedMemory is how many keys' sightings a Keyed keeps: about 150 bytes
// each, with its Redis key.
const keyedMemory = 10_000

// forgetScan is how many sightings a Keyed looks at to find one to forget.
const forgetScan = 8

// NewKeyed returns a bucket per key, each kept at the Redis key prefix+key,
// through client (a *redis.Client, *redis.ClusterClient or any other
// redis.Scripter): buckets of maxRate units that drain in period, as New's.
//
// Every process that shares the prefix should use the same maxRate and
// period: each key's bucket drains at the rate of the call that last
// changed it. Keys are used as given: if clients choose them, bound their
// length. Under Redis Cluster, prefix+key picks the slot, so the keys
// spread over the cluster; a hash tag in the prefix ("{api}:client:")
// puts them all in one slot instead.
//
// NewKeyed makes no round trip. It takes New's options, but for
// WithFallback, which needs a local limiter per key; it panics on that,
// and, as New does, if client is nil, prefix is empty, or maxRate and
// period are values New refuses.
func NewKeyed(client redis.Scripter, prefix string, maxRate float64, period time.Duration, opts ...Option) *Keyed {
	if client == nil {
		panic("redisbucket: NewKeyed: nil client")
	}
	if prefix == "" {
		panic("redisbucket: NewKeyed: empty prefix")
	}
	p := newParams("NewKeyed", maxRate, period)
	o := newOptions(opts)
	if o.fb != nil {
		panic("redisbucket: NewKeyed: WithFallback is not supported: it needs a local limiter per key")
	}
	return &Keyed{
		proto: Limiter{rdb: client, clock: o.clock, ownTime: o.ownTime, timeout: o.timeout,
			rates: newRates(p), script: bucketScript},
		prefix: prefix,
		seen:   make(map[string]*sighting),
		memory: keyedMemory,
	}
}

// Prefix returns the prefix of the Redis keys.
func (k *Keyed) Prefix() string { return k.prefix }

// MaxRate returns each bucket's capacity: the most that can be acquired in
// one burst on a key, and the number of units admitted per Period.
func (k *Keyed) MaxRate() float64 { return k.proto.MaxRate() }

// Period returns the time in which MaxRate units drain from a full bucket.
func (k *Keyed) Period() time.Duration { return k.proto.Period() }

// Key returns the Limiter of key's bucket, at the Redis key prefix+key: a
// ratelimit.Acquirer, for pool and the throttle wrappers, and a
// throttle.ContextPauser, for throttle.Transport. It makes no round trip
// and holds nothing more than the Keyed does; it shares the Keyed's rate,
// so that its SetRate changes the rate of every key (and rescales key's
// bucket at once), as the Keyed's SetRate does.
func (k *Keyed) Key(key string) *Limiter {
	l := new(Limiter)
	*l = k.proto
	l.key = k.prefix + key
	l.seen = k.sighting(l.key)
	return l
}

// sighting returns the sighting of the Redis key rkey, making room for it
// if it is new.
func (k *Keyed) sighting(rkey string) *sighting {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.seen[rkey]; ok {
		return s
	}
	if len(k.seen) >= k.memory {
		k.forget()
	}
	s := &sighting{latest: &k.latest}
	k.seen[rkey] = s
	return s
}

// forget drops a sighting: among a few, taken from where the map's
// iteration starts (at random), the one that runs out first, or the first
// found that has run out already. Forgetting one that a call in flight
// still holds loses only what its reply says, which the next call on the
// key learns again. k.mu is held.
func (k *Keyed) forget() {
	now := float64(k.latest.load())
	victim, soonest, n := "", math.Inf(1), 0
	for rkey, s := range k.seen {
		end := s.last()
		if end <= now {
			delete(k.seen, rkey)
			return
		}
		if end < soonest {
			victim, soonest = rkey, end
		}
		if n++; n == forgetScan {
			break
		}
	}
	delete(k.seen, victim)
}

// Wait is shorthand for Acquire(ctx, key, 1).
func (k *Keyed) Wait(ctx context.Context, key string) error { return k.Acquire(ctx, key, 1) }

// Acquire takes amount units from key's bucket, waiting until it has room
// for them, as Limiter.Acquire does: one round trip reserves the turn,
// then the caller sleeps until it, without Redis. It fails as
// Limiter.Acquire does, with errors that name the Redis key.
func (k *Keyed) Acquire(ctx context.Context, key string, amount float64) error {
	if done := ctx.Done(); done != nil {
		select {
		case <-done:
			return ctx.Err()
		default:
		}
	}
	if err := checkAmount(amount, k.MaxRate()); err != nil || amount == 0 {
		return err // no round trip, and nothing kept of key
	}
	return k.Key(key).Acquire(ctx, amount)
}

// TryAcquire takes amount units from key's bucket if they are available
// now, without waiting, in one round trip, and reports whether it did, as
// Limiter.TryAcquire does.
func (k *Keyed) TryAcquire(ctx context.Context, key string, amount float64) (bool, error) {
	if err := checkAmount(amount, k.MaxRate()); err != nil || amount == 0 {
		return err == nil, err
	}
	return k.Key(key).TryAcquire(ctx, amount)
}

// HasCapacity reports whether TryAcquire(ctx, key, amount) would succeed
// now, without taking anything, as Limiter.HasCapacity does.
func (k *Keyed) HasCapacity(ctx context.Context, key string, amount float64) (bool, error) {
	if err := checkAmount(amount, k.MaxRate()); err != nil || amount == 0 {
		return err == nil, err
	}
	return k.Key(key).HasCapacity(ctx, amount)
}

// Level returns how full key's bucket is now, in units, counting the units
// that callers in any process have reserved, as Limiter.Level does: 0 for
// a key never used, or whose bucket has drained.
func (k *Keyed) Level(ctx context.Context, key string) (float64, error) {
	return k.Key(key).Level(ctx)
}

// Pause admits nothing on key for d, in any process, then one unit, then
// the steady rate, as Limiter.Pause does; the other keys go on. A pause on
// a key never used, or whose bucket has drained, is kept all the same:
// the Redis key is written, and expires once the pause has ended and the
// bucket drained. Pause with d <= 0 does nothing.
func (k *Keyed) Pause(ctx context.Context, key string, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	return k.Key(key).Pause(ctx, d)
}

// SetRate changes the capacity and the period of every key, at once and
// without a round trip. Callers waiting in Acquire, on any key, whose
// amount exceeds the new capacity return ratelimit.ErrExceedsCapacity; the
// others keep their turns. SetRate first waits for the calls already on
// their way to Redis, which reach it with the old rate; every call after
// it, also the give-back of a reservation made before it, carries the new
// rate.
//
// Each key's bucket is rescaled to the new rate by the next call on it,
// which keeps its units, as a call from a process at another rate does
// (see the package documentation): until then it drains at the rate it
// was written with. Since nothing is admitted on a key in between, each
// key goes as a Limiter whose SetRate came at that call. Other processes
// on the prefix keep their own rate: call SetRate in each. SetRate panics
// on the values New refuses.
func (k *Keyed) SetRate(maxRate float64, period time.Duration) {
	k.proto.set(newParams("SetRate", maxRate, period), nil)
}
