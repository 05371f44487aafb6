package ratelimit_test

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/dripgo/drip/ratelimit"
)

// exactBucket is the leaky bucket of the package documentation, in exact
// rational arithmetic: the reference a Limiter is held to.
type exactBucket struct {
	maxRate *big.Rat
	perNs   *big.Rat // units drained per nanosecond
	level   *big.Rat // units in the bucket at time at
	at      int64    // nanoseconds
	until   int64    // nothing is admitted before it
	paused  bool     // the pause until until has not been accounted yet
	unit    float64  // what a pause leaves room for at its end: min(1, maxRate)
}

func rat(f float64) *big.Rat { return new(big.Rat).SetFloat64(f) }

func newExactBucket(maxRate float64, period time.Duration) *exactBucket {
	b := &exactBucket{level: new(big.Rat)}
	b.setRate(maxRate, period)
	return b
}

func (b *exactBucket) setRate(maxRate float64, period time.Duration) {
	b.maxRate, b.unit = rat(maxRate), min(1, maxRate)
	b.perNs = new(big.Rat).Quo(b.maxRate, new(big.Rat).SetInt64(int64(period)))
}

// drain brings the level to time now. At the end of a pause, the bucket
// has room for one unit (or the capacity) at the rate of that time.
func (b *exactBucket) drain(now int64) {
	if b.paused && now >= b.until {
		b.paused = false
		b.drain(b.until)
		if f := new(big.Rat).Sub(b.maxRate, rat(b.unit)); f.Cmp(b.level) > 0 {
			b.level = f
		}
	}
	if now <= b.at {
		return
	}
	d := new(big.Rat).Mul(b.perNs, new(big.Rat).SetInt64(now-b.at))
	b.level.Sub(b.level, d)
	if b.level.Sign() <= 0 {
		b.level.SetInt64(0)
	}
	b.at = now
}

func (b *exactBucket) levelFloat() float64 {
	f, _ := b.level.Float64()
	return f
}

// room returns how far level+amount stays below the capacity (negative if
// it does not fit), at time now.
func (b *exactBucket) room(now int64, amount float64) *big.Rat {
	b.drain(now)
	r := new(big.Rat).Sub(b.maxRate, b.level)
	return r.Sub(r, rat(amount))
}

// TestDifferentialAgainstExactBucket drives limiters of tiny, huge, odd and
// ordinary rates through random TryAcquire, HasCapacity, SetRate, Pause
// and clock steps, and holds every answer to the exact bucket: the limiter
// never admits what the exact bucket refuses (which is what "never more
// than MaxRate + rate*t in any window of length t" comes to), and refuses
// what it admits only within the rounding it documents: a tick an
// acquisition, for rates whose unit is not a whole number of ticks.
func TestDifferentialAgainstExactBucket(t *testing.T) {
	settings := []setting{
		{4, 8 * time.Second}, {3, time.Second}, {7, time.Second}, {999, time.Minute},
		{2.5, 100 * time.Millisecond}, {0.5, time.Second}, {2.7, time.Second}, {1e9 / 1.5, time.Second},
		{1e12, time.Second}, {1, time.Nanosecond}, {2, 3 * time.Nanosecond}, {1024, time.Nanosecond},
		{1e-6, time.Second}, {1e-200, time.Hour}, {5000, 400 * 24 * time.Hour}, {1e6, time.Microsecond},
	}
	opsPerRun := 64000
	if testing.Short() {
		opsPerRun = 4000
	}
	total := 0
	for i, s := range settings {
		t.Run(fmt.Sprintf("%v per %v", s.maxRate, s.period), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			total += differentialRun(t, rng, s.maxRate, s.period, settings, opsPerRun)
		})
	}
	t.Logf("%d random operations", total)
	if !testing.Short() && total < 1000000 {
		t.Fatalf("only %d operations", total)
	}
}

// setting is the two arguments of New.
type setting struct {
	maxRate float64
	period  time.Duration
}

func differentialRun(t *testing.T, rng *rand.Rand, maxRate float64, period time.Duration, settings []setting, ops int) int {
	mock := &stepClock{}
	lim := ratelimit.New(maxRate, period, ratelimit.WithClock(mock))
	ref := newExactBucket(maxRate, period)
	var now int64
	unitNs := float64(period) / maxRate // nanoseconds a unit takes
	var log []admission
	// The rounding the limiter may have added since its bucket was last
	// empty, in units: a tick an acquisition, Pause or SetRate.
	rounding := 0.0
	tick := func() float64 { return maxRate / float64(period) / ticksPerNs(maxRate, period) }
	for op := range ops {
		// The limiter's bucket is never emptier than the exact one, but for
		// the rounding of Level itself (a tick): it may only be stricter.
		ref.drain(now)
		if lv, rv := lim.Level(), ref.levelFloat(); lv < rv*(1-1e-12)-2*tick()-rounding {
			t.Fatalf("op %d at %v: level %v, below the exact bucket's %v", op, time.Duration(now), lv, rv)
		}
		switch k := rng.IntN(100); {
		case k < 30: // let time pass: about a unit's time, or a whole nanosecond
			var d int64
			switch rng.IntN(3) {
			case 0:
				d = 1
			case 1:
				d = int64(min(rng.Float64()*3*unitNs, float64(10*period)))
			default:
				d = int64(min(rng.Float64()*float64(period), 1e15))
			}
			now += d
			mock.now += d
		case k < 33: // SetRate, to one of the settings of similar scale
			s := settings[rng.IntN(len(settings))]
			// Any other: a level that would take longer than ticks can
			// count to drain at the new rate becomes a block.
			if debug {
				fmt.Printf("%v SetRate(%v, %v) level %v\n", time.Duration(now), s.maxRate, s.period, lim.Level())
			}
			lim.SetRate(s.maxRate, s.period)
			ref.drain(now)
			ref.setRate(s.maxRate, s.period)
			maxRate, period, unitNs = s.maxRate, s.period, float64(s.period)/s.maxRate
			rounding += tick() + 1e-12*ref.levelFloat()
			log = append(log, admission{at: -1}) // a new segment
		case k < 35: // Pause for up to two periods
			d := time.Duration(rng.Int64N(int64(min(2*period, 24*time.Hour)) + 1))
			if debug {
				fmt.Printf("%v Pause(%v) level %v\n", time.Duration(now), d, lim.Level())
			}
			lim.Pause(d)
			if d > 0 {
				// Nothing passes for d; then one unit (or the capacity)
				// fits, at the rate of then, and the level never goes
				// down.
				ref.drain(now)
				if until := now + int64(d); until > ref.until {
					ref.until, ref.paused = until, true
				}
				rounding += tick()
			}
		default: // TryAcquire, HasCapacity
			var amount float64
			switch rng.IntN(5) {
			case 0:
				amount = maxRate
			case 1:
				amount = min(1, maxRate)
			case 2:
				amount = maxRate / float64(rng.IntN(8)+1)
			case 3:
				amount = maxRate * 1e-9
			default:
				amount = maxRate * rng.Float64()
			}
			if debug {
				fmt.Printf("%v Try(%v) level %v ref %v\n", time.Duration(now), amount, lim.Level(), ref.level.FloatString(6))
			}
			if lim.Level() == 0 {
				rounding = 0
			}
			has := lim.HasCapacity(amount)
			got := lim.TryAcquire(amount)
			if has != got {
				t.Fatalf("op %d: HasCapacity(%v) = %v but TryAcquire = %v", op, amount, has, got)
			}
			room := ref.room(now, amount)
			fits := room.Sign() >= 0 && now >= ref.until
			if got && !fits {
				t.Fatalf("op %d at %v: admitted %v beyond the exact bucket (level %v of %v, paused until %v)",
					op, time.Duration(now), amount, ref.level.FloatString(12), maxRate, time.Duration(ref.until))
			}
			if got {
				ref.level.Add(ref.level, rat(amount))
				rounding += tick()
				log = append(log, admission{at: time.Duration(now), amount: amount})
				continue
			}
			if fits {
				// Refused although it fits: only by the rounding of the
				// acquisitions in the bucket, a tick each.
				slack, _ := room.Float64()
				if allowed := rounding + 2*tick() + 1e-12*maxRate; slack > allowed {
					t.Fatalf("op %d at %v: refused %v with %v units of room (allowed rounding %v)",
						op, time.Duration(now), amount, slack, allowed)
				}
			}
		}
	}
	checkWindows(t, log, lim.MaxRate(), lim.Period())
	return ops
}

// checkWindows checks, within the last segment of the log, that no window
// of length w holds more than maxRate + rate*w units.
func checkWindows(t *testing.T, log []admission, maxRate float64, period time.Duration) {
	t.Helper()
	for i := len(log) - 1; i >= 0; i-- {
		if log[i].at < 0 {
			log = log[i+1:]
			break
		}
	}
	limit := func(w time.Duration) *big.Rat {
		r := new(big.Rat).Mul(rat(maxRate), new(big.Rat).SetFrac64(int64(w), int64(period)))
		return r.Add(r, rat(maxRate))
	}
	for i := range log {
		sum := new(big.Rat)
		for j := i; j < len(log) && j < i+64; j++ {
			sum.Add(sum, rat(log[j].amount))
			if w := log[j].at - log[i].at; sum.Cmp(limit(w)) > 0 {
				t.Fatalf("%v units admitted in %v, more than %v + %v per %v", sum.FloatString(9), w, maxRate, maxRate, period)
			}
		}
	}
}

// stepClock is a clock that moves only when told, and has no timers: the
// differential test never waits. Unlike clock.Mock, moving it costs
// nothing.
type stepClock struct {
	clock.Clock // nil: calling anything else panics
	now         int64
}

func (c *stepClock) Now() time.Time                  { return time.Unix(0, c.now) }
func (c *stepClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

const debug = false

// ticksPerNs is the limiter's resolution for a rate: the finest ticks a
// period fits in, as a multiple of the denominator of period/maxRate if
// that fits.
func ticksPerNs(maxRate float64, period time.Duration) float64 {
	scale := min(1024, int64(1<<59)/int64(period))
	perUnit := new(big.Rat).Quo(new(big.Rat).SetInt64(int64(period)), rat(maxRate))
	if den := perUnit.Denom(); den.IsInt64() && den.Int64() <= scale {
		scale -= scale % den.Int64()
	}
	return float64(scale)
}
