package redisbucket

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/dripgo/drip/ratelimit"
	"github.com/redis/go-redis/v9"
)

// A Limiter is a leaky bucket kept in one Redis key, shared by every
// Limiter, in any process, that uses the same key. It holds at most MaxRate
// units and drains at MaxRate units per Period, as a ratelimit.Limiter
// does; see the package documentation for the model and what differs.
//
// A Limiter is safe for concurrent use. It holds no goroutine and no
// connection of its own (the client does), so it needs no Close.
type Limiter struct {
	rdb     redis.Scripter
	key     string
	clock   clock.Clock
	ownTime bool // clock came from WithClock: deadlines are on it (see realDeadline)
	timeout time.Duration
	*rates            // the Limiter's own, or shared by the keys of a Keyed
	fb      *fallback // nil without WithFallback
	seen    *sighting // until when Redis last said the key holds the bucket

	// script is bucketScript. Tests of this package replace it with a
	// version that reads the time from two extra arguments, which
	// serverTime supplies; both are fixed at construction, and New offers
	// no way to set them.
	script     *redis.Script
	serverTime func() []any
}

var _ ratelimit.Acquirer = (*Limiter)(nil)

// rates is the rate in force, and what orders its changes with the round
// trips: a Limiter's own, or shared by every key of a Keyed, whose SetRate
// changes them all.
type rates struct {
	params atomic.Pointer[params]

	// rateMu orders SetRate with the round trips: each holds it for
	// reading from loading the params to the reply, and SetRate for writing
	// while it publishes new ones, so that no call reaches Redis with the
	// params of before a SetRate that has returned (a call rescales the
	// key to the rate it carries).
	rateMu sync.RWMutex

	// changed is closed, and replaced, when SetRate changes the capacity,
	// so that waiters check their amounts against it.
	changed atomic.Pointer[chan struct{}]
}

func newRates(p *params) *rates {
	r := new(rates)
	r.params.Store(p)
	ch := make(chan struct{})
	r.changed.Store(&ch)
	return r
}

// set publishes p, once the calls on their way to Redis with the params
// before it have their replies, and wakes the waiters, so that they check
// their amounts against the new capacity. local, if not nil, runs with p
// published and before any call carries it.
func (r *rates) set(p *params, local func()) {
	r.rateMu.Lock()
	r.params.Store(p)
	if local != nil {
		local()
	}
	r.rateMu.Unlock()
	ch := make(chan struct{})
	close(*r.changed.Swap(&ch))
}

// params is one setting of the rate. It is immutable: SetRate publishes a
// new one.
type params struct {
	maxRate   float64
	period    time.Duration
	nsPerUnit float64 // period/maxRate, rounded up
	unit      string  // nsPerUnit as the script receives and stores it
	periodArg string
}

// maxPeriod is ratelimit's limit on periods and pauses (about 417 days).
// The script's float64 arithmetic is exact to the nanosecond while the tat
// is within 2^53 ns (about 104 days) of the key's epoch; beyond, it rounds
// every sum up to the next float64 (2, 4, 8... ns apart), so that a cost
// is never lost: admissions may come that much later, never earlier.
const maxPeriod = time.Duration(1) << 55

// newParams checks maxRate and period. Time in the bucket is counted in
// whole nanoseconds, so a unit must take at least one, and a finite time.
func newParams(fn string, maxRate float64, period time.Duration) *params {
	if !(maxRate > 0) || math.IsInf(maxRate, 1) {
		panic(fmt.Sprintf("redisbucket: %s: maxRate %v must be a finite number > 0", fn, maxRate))
	}
	if period <= 0 || period > maxPeriod {
		panic(fmt.Sprintf("redisbucket: %s: period %v must be > 0 and at most %v", fn, period, maxPeriod))
	}
	// period/maxRate rounded up: the float64 quotient, or the next one if
	// the quotient came out below the exact value.
	exact := new(big.Rat).SetFrac64(int64(period), 1)
	exact.Quo(exact, new(big.Rat).SetFloat64(maxRate))
	ns, _ := exact.Float64()
	if !math.IsInf(ns, 1) && new(big.Rat).SetFloat64(ns).Cmp(exact) < 0 {
		ns = math.Nextafter(ns, math.Inf(1))
	}
	if math.IsInf(ns, 1) {
		panic(fmt.Sprintf("redisbucket: %s: maxRate %v per %v: a unit would take longer than any time the limiter can count", fn, maxRate, period))
	}
	if ns < 1 {
		panic(fmt.Sprintf("redisbucket: %s: maxRate %v per %v: a unit would take %v ns, less than the limiter's resolution of 1 ns",
			fn, maxRate, period, float64(period)/maxRate))
	}
	return &params{
		maxRate:   maxRate,
		period:    period,
		nsPerUnit: ns,
		unit:      strconv.FormatFloat(ns, 'g', 17, 64),
		periodArg: strconv.FormatInt(int64(period), 10),
	}
}

// cost returns how far amount moves the tat, in nanoseconds, rounded up,
// so that no sequence of acquisitions can slip through a rounding: every
// amount > 0 costs at least a nanosecond, and whole amounts of a unit that
// is a whole number of nanoseconds cost exactly that, as in
// ratelimit.Limiter. An amount at or above the capacity costs the whole
// period.
func (p *params) cost(amount float64) int64 {
	if amount >= p.maxRate {
		return int64(p.period)
	}
	// The product rounded to a float64 may have lost a fraction just above
	// a whole number, which FMA recovers.
	x := amount * p.nsPerUnit
	c := math.Ceil(x)
	if c == x && math.FMA(amount, p.nsPerUnit, -x) > 0 {
		c++
	}
	return min(int64(c), int64(p.period))
}

// New returns a limiter on the bucket stored at key, through client (a
// *redis.Client, *redis.ClusterClient, *redis.Ring or any other
// redis.Scripter): a bucket of maxRate units that drains in period, which
// admits bursts of up to maxRate units, maxRate units per period at the
// steady rate, and in any window of time of length t at most maxRate +
// maxRate*t/period units. A bucket whose key was never written is empty;
// see the package documentation for a key that Redis lost.
//
// Every process that shares the key should use the same maxRate and period:
// the bucket drains at the rate of the limiter that last changed it. The
// key is used as given, so a hash tag in it ("{api}:limit") picks its Redis
// Cluster slot.
//
// New makes no round trip. It panics if client is nil, key is empty,
// maxRate is not a finite number > 0, or period is not > 0 (or exceeds
// about 417 days), as ratelimit.New does. It also panics, naming the
// values, if a unit would take less than a nanosecond (period/maxRate < 1ns,
// as for more than 10^9 units a second), since the bucket counts whole
// nanoseconds, or no finite time (maxRate 1e-300 per second).
func New(client redis.Scripter, key string, maxRate float64, period time.Duration, opts ...Option) *Limiter {
	if client == nil {
		panic("redisbucket: New: nil client")
	}
	if key == "" {
		panic("redisbucket: New: empty key")
	}
	p := newParams("New", maxRate, period)
	o := newOptions(opts)
	l := &Limiter{rdb: client, key: key, clock: o.clock, ownTime: o.ownTime, timeout: o.timeout,
		rates: newRates(p), seen: new(sighting), script: bucketScript}
	if o.fb != nil {
		l.fb = newFallback(o.fb, maxRate, period, o.probe, o.clock)
	}
	return l
}

// Key returns the Redis key that holds the bucket.
func (l *Limiter) Key() string { return l.key }

// MaxRate returns the bucket's capacity: the most that can be acquired in
// one burst, and the number of units admitted per Period.
func (l *Limiter) MaxRate() float64 { return l.params.Load().maxRate }

// Period returns the time in which MaxRate units drain from a full bucket.
func (l *Limiter) Period() time.Duration { return l.params.Load().period }

// TryAcquire takes amount units if they are available now, without
// waiting, in one round trip, and reports whether it did. It reports false,
// and takes nothing, while callers in any process wait for their turn in
// Acquire (they come first). An amount of 0 always succeeds, with no round
// trip.
//
// An amount that Acquire would refuse gives false and that error, with no
// round trip. A failed round trip gives false and an error that wraps
// ErrUnavailable (or the context's error, if ctx ended) and the cause; on
// the fallback, the local limiter answers instead.
func (l *Limiter) TryAcquire(ctx context.Context, amount float64) (bool, error) {
	return l.check(ctx, "TryAcquire", amount, opTake)
}

// HasCapacity reports whether TryAcquire(ctx, amount) would succeed now,
// without taking anything. It fails as TryAcquire does.
func (l *Limiter) HasCapacity(ctx context.Context, amount float64) (bool, error) {
	return l.check(ctx, "HasCapacity", amount, opCheck)
}

func (l *Limiter) check(ctx context.Context, name string, amount float64, op string) (bool, error) {
	p := l.params.Load()
	if err := checkAmount(amount, p.maxRate); err != nil {
		return false, err
	}
	if amount == 0 {
		return true, nil // takes nothing, so it passes no one
	}
	ctx = l.realDeadline(ctx)
	if !l.useRedis(ctx) {
		return l.checkLocal(amount, op)
	}
	p = l.rlock()
	if err := checkAmount(amount, p.maxRate); err != nil {
		l.rateMu.RUnlock() // SetRate lowered the capacity meanwhile
		return false, err
	}
	v, err := l.run(ctx, p, op, p.cost(amount))
	l.rateMu.RUnlock()
	if err == nil {
		var ok bool
		if ok, err = parseBool(v); err == nil {
			l.fb.succeeded()
			return ok, nil
		}
	}
	if l.fb.failed(ctx, err) {
		return l.checkLocal(amount, op)
	}
	return false, l.fail(ctx, fmt.Sprintf("%s(%v)", name, amount), err)
}

// checkLocal answers TryAcquire or HasCapacity on the fallback, whose
// capacity is the local share: a larger amount fails with
// ratelimit.ErrExceedsCapacity, as Acquire does there.
func (l *Limiter) checkLocal(amount float64, op string) (bool, error) {
	if err := checkAmount(amount, l.fb.local.MaxRate()); err != nil {
		return false, err
	}
	if op == opTake {
		return l.fb.local.TryAcquire(amount), nil
	}
	return l.fb.local.HasCapacity(amount), nil
}

// rlock takes rateMu for reading and returns the params in force, which
// stay so until the caller's RUnlock.
func (l *Limiter) rlock() *params {
	l.rateMu.RLock()
	return l.params.Load()
}

// Wait is shorthand for Acquire(ctx, 1).
func (l *Limiter) Wait(ctx context.Context) error { return l.Acquire(ctx, 1) }

// Acquire takes amount units, waiting until the bucket has room for them,
// and returns nil once it has. It reserves the caller's turn in one round
// trip and then sleeps on the limiter's clock, without Redis, until it.
// Turns are given in the order in which the reservations reach Redis,
// whatever their amounts and processes. An amount of 0 returns nil at
// once.
//
// Acquire returns an error if:
//   - ctx ends first: ctx.Err(). The reservation is given back if no later
//     change to the bucket rests on it, that is, if no call has changed
//     the bucket since, or only reservations that were given back in turn;
//     otherwise its units stay in the bucket and drain unused, so that the
//     callers behind keep their turns (the rate is under-used, never
//     exceeded).
//   - ctx has a deadline at or before the caller's turn (the caller would
//     get its units with no time left to use them): at once, with nothing
//     taken, a *ratelimit.DeadlineError, wrapped with the key, which says
//     how long the wait would have been and unwraps to
//     context.DeadlineExceeded. The deadline is read on the limiter's
//     clock (WithClock). So does a turn more than 2^62 ns (146 years)
//     ahead, deadline or not: it is not reserved, and Wait says 2^62 ns
//     (a SetRate that slowed the rate may leave the bucket that full).
//   - amount exceeds MaxRate (ratelimit.ErrExceedsCapacity), also when
//     SetRate on this Limiter lowers the capacity below it while the
//     caller waits, or amount is negative, NaN or infinite
//     (ratelimit.ErrInvalidAmount).
//   - the round trip fails: an error that wraps ErrUnavailable (or the
//     context's error, if ctx ended) and the cause. On the fallback, the
//     local limiter admits the caller instead.
func (l *Limiter) Acquire(ctx context.Context, amount float64) error {
	if done := ctx.Done(); done != nil {
		select {
		case <-done:
			return ctx.Err()
		default:
		}
	}
	p := l.params.Load()
	if err := checkAmount(amount, p.maxRate); err != nil {
		return err
	}
	if amount == 0 {
		return nil
	}
	rctx := l.realDeadline(ctx)
	if !l.useRedis(rctx) {
		return l.fb.local.Acquire(ctx, amount)
	}
	limit, remaining := int64(noLimit), time.Duration(0)
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		remaining = deadline.Sub(l.clock.Now())
		limit = max(int64(remaining), 0)
	}
	p = l.rlock()
	if err := checkAmount(amount, p.maxRate); err != nil {
		l.rateMu.RUnlock() // SetRate lowered the capacity meanwhile
		return err
	}
	cost, nonce := p.cost(amount), 1+rand.Int64N(1<<53-1)
	v, err := l.run(rctx, p, opReserve, cost, limit, nonce)
	l.rateMu.RUnlock()
	var r reservation
	if err == nil {
		r, err = parseReservation(v, nonce, cost)
	}
	if err != nil {
		if l.fb.failed(rctx, err) {
			return l.fb.local.Acquire(ctx, amount)
		}
		return l.fail(rctx, fmt.Sprintf("Acquire(%v)", amount), err)
	}
	l.fb.succeeded()
	wait := time.Duration(r.wait)
	if !r.ok {
		return fmt.Errorf("redisbucket: key %q: %w", l.key, &ratelimit.DeadlineError{Amount: amount, Wait: wait, Remaining: remaining})
	}
	if wait <= 0 {
		return nil
	}
	// The turn was measured from the server's now, which is behind ours by
	// the reply's trip: waiting the whole of it from now errs late, never
	// early. If that reaches the deadline, the reservation goes back.
	if hasDeadline && !l.clock.Now().Add(wait).Before(deadline) {
		l.giveBack(ctx, amount, r)
		return fmt.Errorf("redisbucket: key %q: %w", l.key, &ratelimit.DeadlineError{Amount: amount, Wait: wait, Remaining: remaining})
	}
	return l.sleep(ctx, amount, wait, r)
}

// sleep waits for the turn that a reservation gave the caller.
func (l *Limiter) sleep(ctx context.Context, amount float64, wait time.Duration, r reservation) error {
	t := l.clock.Timer(wait)
	defer t.Stop()
	for {
		changed := *l.changed.Load()
		if err := checkAmount(amount, l.params.Load().maxRate); err != nil {
			l.giveBack(ctx, amount, r)
			return err
		}
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			select {
			case <-t.C:
				return nil // the turn came first
			default:
			}
			l.giveBack(ctx, amount, r)
			return ctx.Err()
		case <-changed:
		}
	}
}

// giveBack returns a reservation that its caller will not use, if no later
// change to the bucket depends on it. It is best effort: a failed round
// trip leaves the units in the bucket, where they drain unused. It takes at
// most the limiter's timeout, even though ctx has ended.
//
// It runs at the rate in force now, not the one the reservation was made
// at, so that it never rescales the bucket back to a rate that SetRate
// replaced. A SetRate that changed the time a unit takes has replaced the
// nonce too, so that nothing is given back then; one that changed only the
// period may change what amount costs, and giveBack takes back the lesser
// of the two costs: never more than the reservation added.
func (l *Limiter) giveBack(ctx context.Context, amount float64, r reservation) {
	p := l.rlock()
	defer l.rateMu.RUnlock()
	cost := min(p.cost(amount), r.cost)
	_, _ = l.run(context.WithoutCancel(ctx), p, opCancel, cost, r.nonce, r.prev)
}

// realDeadline returns ctx with its deadline, which is on the limiter's
// clock, moved to the real clock, which go-redis sets its sockets by and
// which judges whether a failed round trip ran out of the caller's time: a
// round trip may take, in real time, what the caller has left on the
// limiter's clock. Its values, Done and Err are ctx's. With the real clock
// (no WithClock), it returns ctx itself.
func (l *Limiter) realDeadline(ctx context.Context) context.Context {
	if !l.ownTime {
		return ctx
	}
	d, ok := ctx.Deadline()
	if !ok {
		return ctx
	}
	return realDeadlineCtx{ctx, time.Now().Add(d.Sub(l.clock.Now()))}
}

type realDeadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c realDeadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// Level returns how full the bucket is now, in units: 0 when empty, MaxRate
// when full. During a pause it is at least the level from which the bucket
// drains to one unit short of full by the pause's end at the rate in
// force, as ratelimit.Limiter's is, whatever SetRate did since. Unlike
// ratelimit.Limiter's, it counts the units that callers in Acquire have
// reserved, so it exceeds MaxRate while callers wait, as it does during a
// pause. On the fallback it returns the local limiter's level.
func (l *Limiter) Level(ctx context.Context) (float64, error) {
	ctx = l.realDeadline(ctx)
	if !l.useRedis(ctx) {
		return l.fb.local.Level(), nil
	}
	p := l.rlock()
	defer l.rateMu.RUnlock()
	return l.level(ctx, "Level", p)
}

// level reads the level for Level and SetRate; ctx is already on the real
// clock (realDeadline). The caller holds rateMu for reading.
func (l *Limiter) level(ctx context.Context, name string, p *params) (float64, error) {
	v, err := l.run(ctx, p, opLevel)
	var level float64
	if err == nil {
		level, err = parseLevel(v)
	}
	if err != nil {
		if l.fb.failed(ctx, err) {
			return l.fb.local.Level(), nil
		}
		return 0, l.fail(ctx, name, err)
	}
	l.fb.succeeded()
	return level, nil
}

// Pause admits nothing for d, in any process, not even a fraction of a
// unit; at d one unit fits (or the whole capacity, if that is less), then
// admissions go on at the steady rate, with no burst. It is what a client
// does on a 429 response with Retry-After: New(rdb, key, 1, time.Minute)
// paused for 2s admits the next request at 2s, and the one after at 62s.
// Pause never lowers the level: a bucket fuller than that at d stays so,
// and a pause never shortens one in progress. The pause is kept as its
// end, and ends at the rate in force then: a SetRate in between keeps the
// end, and one unit still fits at it, then the new steady rate. Callers
// already waiting keep their turns, and those who reserve during the
// pause get theirs from its end on, one after the other, with their units
// on top of the bucket as it is then. Pause with d <= 0 does nothing;
// pauses longer than about 417 days are cut to that. On the fallback it
// pauses the local limiter, and the probe that switches back to Redis
// pauses the bucket for what is left of it.
func (l *Limiter) Pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	d = min(d, maxPeriod)
	ctx = l.realDeadline(ctx)
	if !l.useRedis(ctx) {
		l.fb.pause(d)
		return nil
	}
	p := l.rlock()
	_, err := l.run(ctx, p, opPause, int64(d))
	l.rateMu.RUnlock()
	if err != nil {
		if l.fb.failed(ctx, err) {
			l.fb.pause(d)
			return nil
		}
		return l.fail(ctx, fmt.Sprintf("Pause(%v)", d), err)
	}
	l.fb.succeeded()
	return nil
}

// SetRate changes the capacity and the period of this Limiter, and rescales
// the bucket in one round trip: the units in it stay there and drain at the
// new rate from now on, however long they take to drain at it; a bucket
// left above the new capacity just drains before admitting again. A pause in progress keeps its end, and
// ends as a pause does at the new rate: one unit fits, then the steady
// rate, with no burst; the units reserved during it stay on top. Callers
// of this Limiter waiting in Acquire whose amount exceeds the new capacity
// return ratelimit.ErrExceedsCapacity; the others keep the turns they
// reserved, as do the callers of other processes. SetRate first waits for
// this Limiter's calls already on their way to Redis, which reach it with
// the old rate; every call after SetRate, also the give-back of a
// reservation made before it, carries the new rate, so that none
// rescales the bucket back to the old one.
//
// Other Limiters on the key keep their own rate, and a call from one of
// them rescales the bucket back to it: to change the rate of a fleet, call
// SetRate in every process. If the round trip fails, SetRate returns its
// error, and the new rate still applies to this Limiter's later calls,
// which rescale the bucket when they reach it. SetRate panics on the values
// New refuses.
func (l *Limiter) SetRate(ctx context.Context, maxRate float64, period time.Duration) error {
	p := newParams("SetRate", maxRate, period)
	// Calls in flight finish with the old params first; those that start
	// from now on carry the new ones.
	var local func()
	if l.fb != nil {
		local = func() { l.fb.local.SetRate(l.fb.share*maxRate, period) }
	}
	l.set(p, local)
	ctx = l.realDeadline(ctx)
	if !l.useRedis(ctx) {
		return nil
	}
	p = l.rlock()
	defer l.rateMu.RUnlock()
	_, err := l.level(ctx, fmt.Sprintf("SetRate(%v, %v)", maxRate, period), p)
	return err
}
