package redisbucket

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/dripgo/drip/ratelimit"
	"github.com/redis/go-redis/v9"
)

// TestPropertyNeverOverRate drives Limiters and Keyeds on the server,
// through random sequences of TryAcquire, Allow, HasCapacity, Pause,
// SetRate, lost keys and clock steps, over rates from one unit in 11 days
// to one a nanosecond and periods up to a year, 1,000,000 operations in
// all, and checks each admission against a bucket of exact rationals: the
// units admitted, drained at the rate in force, never exceed MaxRate. That
// is "at most MaxRate + MaxRate*t/Period units in any window of length t"
// (SetRate changing the rate from its call on, and keeping the units).
//
// It also checks what a caller reads from the answers: HasCapacity and the
// TryAcquire right after it agree; an Allow's Remaining fits; after an
// Allow's RetryAfter, its amount fits.
//
// The sequences of one Limiter may lose their key (Redis restarted): with
// one process, nothing passes beyond the rate (see Lost state in the
// package documentation). Two Limiters on one key, as two processes, share
// one bucket; a Keyed's keys each have theirs. Each sequence has its own
// keys and clock, and runs on one of 8 goroutines: a failure names the
// sequence, which replays alone, logging each step, with
// -run TestPropertyNeverOverRate -prop.seed N.
func TestPropertyNeverOverRate(t *testing.T) {
	addr := redisAddr(t)
	const total = 1_000_000
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, PoolSize: 16})
	t.Cleanup(func() { rdb.Close() })
	prefix := fmt.Sprintf("drip:test:{prop}:%016x:", rand.Uint64())
	if *propSeed >= 0 {
		s := newPropSeq(rdb, prefix, uint64(*propSeed))
		s.trace = t.Logf
		n, err := s.run()
		s.cleanup()
		if err != nil {
			t.Errorf("sequence %d (%s, %v per %v): %v", *propSeed, s.mode, s.maxRate, s.period, err)
		}
		t.Logf("%d operations", n)
		return
	}

	var (
		ops, next atomic.Int64
		failed    atomic.Bool
		wg        sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ops.Load() < total && !failed.Load() {
				seed := uint64(next.Add(1) - 1)
				s := newPropSeq(rdb, prefix, seed)
				n, err := s.run()
				ops.Add(int64(n))
				s.cleanup()
				if err != nil {
					failed.Store(true)
					t.Errorf("sequence %d (%s, %v per %v): %v", seed, s.mode, s.maxRate, s.period, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d operations in %d sequences", ops.Load(), next.Load())
}

var propSeed = flag.Int64("prop.seed", -1, "run only this sequence of TestPropertyNeverOverRate, logging each step")

// propRates are the rates the sequences start at and SetRate picks from:
// a unit of a nanosecond, of 10^15 ns (11.6 days), and between; whole and
// fractional nanoseconds a unit; capacities below one unit and of 2^40.
var propRates = []struct {
	maxRate float64
	period  time.Duration
}{
	{1, time.Nanosecond},
	{1e9, time.Second},
	{5e8, time.Second},
	{333333.3333333333, 7 * time.Millisecond},
	{1000, time.Millisecond},
	{3, time.Second},
	{100, time.Minute},
	{0.5, time.Second},
	{2.7, 7200*time.Hour + 8*time.Microsecond},
	{7, 8760 * time.Hour},
	{1 << 40, 1 << 55},
	{1e-6, time.Second},
	{1e-3, time.Hour},
}

// propClock is a clock that moves only when the test moves it, at no cost:
// the mock's Add sleeps a millisecond, which a million steps cannot
// afford. The calls the sequences make read Now only; any other method
// would panic on the nil Clock.
type propClock struct {
	clock.Clock
	now time.Time
}

func (c *propClock) Now() time.Time { return c.now }

// propSeq is one random sequence and the exact bucket it is checked
// against.
type propSeq struct {
	trace   func(format string, args ...any)
	rdb     *redis.Client
	rng     *rand.Rand
	seed    uint64
	mode    string // "one limiter", "two limiters", "keyed"
	maxRate float64
	period  time.Duration
	c       *propClock
	start   time.Time
	lims    []*Limiter // the Limiters, or one per key of the Keyed
	keyed   *Keyed
	keys    []string // the Redis keys
	buckets []*exactBucket
}

func newPropSeq(rdb *redis.Client, prefix string, seed uint64) *propSeq {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	r := propRates[rng.IntN(len(propRates))]
	s := &propSeq{rdb: rdb, rng: rng, seed: seed, maxRate: r.maxRate, period: r.period,
		mode: []string{"one limiter", "two limiters", "keyed"}[seed%3]}
	// A start anywhere in 2026-2036, to the nanosecond.
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int64N(int64(10 * 365 * 24 * time.Hour))))
	s.c, s.start = &propClock{now: start}, start
	base := fmt.Sprintf("%s%d:", prefix, seed)
	switch s.mode {
	case "one limiter", "two limiters":
		key := base + "bucket"
		s.keys = []string{key}
		s.buckets = []*exactBucket{newExactBucket(r.maxRate, r.period)}
		s.lims = []*Limiter{onMockTime(New(rdb, key, r.maxRate, r.period, WithClock(s.c)), s.c)}
		if s.mode == "two limiters" {
			s.lims = append(s.lims, onMockTime(New(rdb, key, r.maxRate, r.period, WithClock(s.c)), s.c))
		}
	case "keyed":
		s.keyed = onMockTimeKeyed(NewKeyed(rdb, base, r.maxRate, r.period, WithClock(s.c)), s.c)
		for _, k := range []string{"a", "b", "c"} {
			s.keys = append(s.keys, base+k)
			s.buckets = append(s.buckets, newExactBucket(r.maxRate, r.period))
			s.lims = append(s.lims, s.keyed.Key(k))
		}
	}
	return s
}

func (s *propSeq) cleanup() { s.rdb.Del(context.Background(), s.keys...) }

// run runs the sequence, and returns how many calls it made, and the first
// error found.
func (s *propSeq) run() (int, error) {
	ctx := context.Background()
	steps := 1500 + s.rng.IntN(1500)
	calls := 0
	for step := range steps {
		fail := func(format string, args ...any) (int, error) {
			return calls, fmt.Errorf("step %d at %v: %s", step, s.c.now.Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
		}
		// Which limiter: one of two processes on one key, or one of the
		// Keyed's keys (the Keyed's own methods, or its Key's Limiter).
		i := s.rng.IntN(len(s.lims))
		l, b := s.lims[i], s.buckets[min(i, len(s.buckets)-1)]
		keyedCall := s.keyed != nil && s.rng.IntN(2) == 0
		key := string('a' + rune(i))
		p := l.params.Load()
		a := s.amount(p.maxRate)
		tooMuch := a > p.maxRate
		calls++
		k := s.rng.IntN(100)
		if s.trace != nil {
			s.trace("step %d t=%v rate %v/%v a=%v k=%d model=%v", step, s.c.now.Sub(s.start), p.maxRate, p.period, a, k, b.level.FloatString(3))
		}
		switch {
		case k < 25: // TryAcquire
			var ok bool
			var err error
			if keyedCall {
				ok, err = s.keyed.TryAcquire(ctx, key, a)
			} else {
				ok, err = l.TryAcquire(ctx, a)
			}
			if tooMuch {
				if ok || !errors.Is(err, ratelimit.ErrExceedsCapacity) {
					return fail("TryAcquire(%v), over MaxRate %v = %v, %v; want ErrExceedsCapacity", a, p.maxRate, ok, err)
				}
				break
			}
			if err != nil {
				return fail("TryAcquire(%v): %v", a, err)
			}
			if ok {
				if err := b.admit(s.scriptTime(), a); err != nil {
					return fail("TryAcquire(%v) admitted: %v", a, err)
				}
			}
		case k < 45: // Allow, and what its answer promises
			var d ratelimit.Decision
			if keyedCall {
				d = s.keyed.Allow(ctx, key, a)
			} else {
				d = l.Allow(ctx, a)
			}
			if tooMuch {
				if d.OK || !errors.Is(d.Err, ratelimit.ErrExceedsCapacity) {
					return fail("Allow(%v), over MaxRate %v = %+v; want ErrExceedsCapacity", a, p.maxRate, d)
				}
				break
			}
			if d.Err != nil {
				return fail("Allow(%v): %v", a, d.Err)
			}
			if d.OK {
				if err := b.admit(s.scriptTime(), a); err != nil {
					return fail("Allow(%v) admitted: %v", a, err)
				}
			}
			switch {
			case d.Remaining > 0 && s.rng.IntN(2) == 0:
				calls++
				ok, err := l.TryAcquire(ctx, d.Remaining)
				if err != nil || !ok {
					return fail("Allow(%v) said %v remain; TryAcquire of them = %v, %v", a, d.Remaining, ok, err)
				}
				if err := b.admit(s.scriptTime(), d.Remaining); err != nil {
					return fail("TryAcquire(Remaining %v) admitted: %v", d.Remaining, err)
				}
			case !d.OK && d.RetryAfter > 0 && d.RetryAfter < 1<<50 && s.rng.IntN(2) == 0:
				// The server reads whole microseconds: the first of them
				// at or after RetryAfter.
				s.c.now = s.c.now.Truncate(time.Microsecond).Add(d.RetryAfter).Add(time.Microsecond - 1).Truncate(time.Microsecond)
				calls++
				if ok, err := l.HasCapacity(ctx, a); err != nil || !ok {
					return fail("Allow(%v) said retry after %v; HasCapacity then = %v, %v", a, d.RetryAfter, ok, err)
				}
			}
		case k < 60: // HasCapacity, then TryAcquire at the same instant
			has, err := l.HasCapacity(ctx, a)
			if tooMuch {
				if has || !errors.Is(err, ratelimit.ErrExceedsCapacity) {
					return fail("HasCapacity(%v), over MaxRate %v = %v, %v; want ErrExceedsCapacity", a, p.maxRate, has, err)
				}
				break
			}
			if err != nil {
				return fail("HasCapacity(%v): %v", a, err)
			}
			calls++
			ok, err := l.TryAcquire(ctx, a)
			if err != nil || ok != has {
				return fail("HasCapacity(%v) = %v, then TryAcquire = %v, %v", a, has, ok, err)
			}
			if ok {
				if err := b.admit(s.scriptTime(), a); err != nil {
					return fail("TryAcquire(%v) admitted: %v", a, err)
				}
			}
		case k < 63: // Pause: only ever stricter
			d := time.Duration(s.rng.Int64N(int64(min(3*p.period, 48*time.Hour)))) + 1
			if err := l.Pause(ctx, d); err != nil {
				return fail("Pause(%v): %v", d, err)
			}
		case k < 65 && s.mode == "one limiter": // SetRate
			r := propRates[s.rng.IntN(len(propRates))]
			if err := l.SetRate(ctx, r.maxRate, r.period); err != nil {
				return fail("SetRate(%v, %v): %v", r.maxRate, r.period, err)
			}
			b.setRate(s.scriptTime(), r.maxRate, r.period)
		case k < 67 && s.mode != "two limiters": // Redis loses the key
			if err := s.rdb.Del(ctx, s.keys[min(i, len(s.keys)-1)]).Err(); err != nil {
				return fail("DEL: %v", err)
			}
		default:
			calls--
			s.step(p)
		}
	}
	return calls, nil
}

// amount picks an amount for a bucket of maxRate units: one unit, the
// whole bucket, a random share of it, a sliver, or more than fits.
func (s *propSeq) amount(maxRate float64) float64 {
	switch s.rng.IntN(10) {
	case 0, 1, 2:
		if maxRate >= 1 {
			return 1
		}
		return maxRate
	case 3:
		return maxRate
	case 4:
		return maxRate * 1e-9
	case 5:
		return math.Nextafter(maxRate, math.Inf(1)) // never fits: refused with an error
	default:
		return maxRate * s.rng.Float64()
	}
}

// step moves the clock: not at all, by a share of a unit's time or of a
// period, or by several periods; by a microsecond at most once the
// sequence has run 40 years, which the longest rates reach.
func (s *propSeq) step(p *params) {
	unit := p.nsPerUnit
	var d float64
	switch k := s.rng.IntN(20); {
	case k < 3:
		d = 0
	case k < 4:
		d = 1000 // a microsecond, the server's resolution
	case k < 14:
		d = 2 * unit * s.rng.Float64()
	case k < 19:
		d = float64(p.period) * s.rng.Float64()
	default:
		d = 3 * float64(p.period)
	}
	if s.c.now.Sub(s.start) > 40*365*24*time.Hour {
		d = min(d, 1000)
	}
	s.c.now = s.c.now.Add(time.Duration(min(d, 1<<58)))
}

// scriptTime is the time the server's script read for the last call: the
// clock, to the microsecond below.
func (s *propSeq) scriptTime() time.Time { return s.c.now.Truncate(time.Microsecond) }

// exactBucket is the bucket as the model defines it, in exact rationals:
// the units admitted, drained at maxRate units per period, must never
// exceed maxRate once an admission is counted.
type exactBucket struct {
	level   *big.Rat // units, at last
	last    time.Time
	maxRate *big.Rat
	perNs   *big.Rat // units drained per nanosecond
	started bool
}

func newExactBucket(maxRate float64, period time.Duration) *exactBucket {
	b := &exactBucket{level: new(big.Rat)}
	b.setRate(time.Time{}, maxRate, period)
	return b
}

// drainTo drains the bucket up to t.
func (b *exactBucket) drainTo(t time.Time) {
	if !b.started {
		b.last, b.started = t, true
		return
	}
	if d := t.Sub(b.last); d > 0 {
		drained := new(big.Rat).Mul(b.perNs, new(big.Rat).SetInt64(int64(d)))
		b.level.Sub(b.level, drained)
		if b.level.Sign() < 0 {
			b.level.SetInt64(0)
		}
		b.last = t
	}
}

// admit counts amount admitted at t, and says if the bucket overflows.
func (b *exactBucket) admit(t time.Time, amount float64) error {
	b.drainTo(t)
	b.level.Add(b.level, new(big.Rat).SetFloat64(amount))
	if b.level.Cmp(b.maxRate) > 0 {
		over, _ := new(big.Rat).Sub(b.level, b.maxRate).Float64()
		return fmt.Errorf("the bucket holds %v units over its %v after %v", over, b.maxRate.FloatString(6), amount)
	}
	return nil
}

// setRate drains the bucket at the old rate up to t, and at the new one
// from then on, keeping its units.
func (b *exactBucket) setRate(t time.Time, maxRate float64, period time.Duration) {
	if !t.IsZero() {
		b.drainTo(t)
	}
	b.maxRate = new(big.Rat).SetFloat64(maxRate)
	b.perNs = new(big.Rat).Quo(b.maxRate, new(big.Rat).SetInt64(int64(period)))
}
