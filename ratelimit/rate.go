package ratelimit

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"time"
)

// Time inside a limiter is counted in ticks, a fixed fraction 1/scale of a
// nanosecond chosen for each rate so that one unit costs a whole number of
// ticks whenever that is possible. Then the cost of every whole (or
// dyadic) amount is exact: New(3, time.Second) charges 1/3 s a unit, three
// units fill the bucket exactly, and no sequence of acquisitions can slip
// through a rounding. Costs that are not a whole number of ticks round up,
// and readings of the clock round down, so every error makes the bucket
// look fuller than it is: a limiter may admit a tick later than the exact
// model, never earlier.
//
// The tat field of the state word holds 62 bits. The epoch moves once the
// clock is rebaseTicks past it, and a tat lies at most a period and
// spanTicks more ahead (a bucket that SetRate left fuller than that holds
// the rest as a block, in nanoseconds, and so does a pause), so that a tat
// stays below 2^61.
const (
	maxScale    = 1024                   // ticks per nanosecond, at most
	maxPeriod   = time.Duration(1) << 55 // about 417 days
	spanTicks   = int64(1) << 59
	rebaseTicks = int64(1) << 59
)

// rate is one setting of a limiter, as New and SetRate take it, in ticks.
type rate struct {
	maxRate     float64
	period      time.Duration
	scale       int64   // ticks per nanosecond
	capacity    int64   // ticks in a period: the cost of maxRate units
	unit        float64 // ticks per unit, rounded up if not whole
	unitInt     int64   // ticks per unit if that is a whole number, else 0
	oneDown     int64   // ticks of min(1, maxRate) units, rounded down
	rebaseAfter int64   // nanoseconds after the epoch at which it moves
}

// newRate checks maxRate and period and works out their ticks. fn names
// the caller in its panics.
func newRate(fn string, maxRate float64, period time.Duration) rate {
	if !(maxRate > 0) || math.IsInf(maxRate, 1) {
		panic(fmt.Sprintf("ratelimit: %s: maxRate %v must be a finite number > 0", fn, maxRate))
	}
	if period <= 0 || period > maxPeriod {
		panic(fmt.Sprintf("ratelimit: %s: period %v must be > 0 and at most %v", fn, period, maxPeriod))
	}
	r := rate{maxRate: maxRate, period: period}
	// The time a unit takes, period/maxRate nanoseconds, as an exact
	// fraction num/den: with den ticks to the nanosecond, a unit is num
	// ticks.
	perUnit := new(big.Rat).SetInt64(int64(period))
	perUnit.Quo(perUnit, new(big.Rat).SetFloat64(maxRate))
	num, den := perUnit.Num(), perUnit.Denom()
	// The finest ticks that a period fits in; as a multiple of den, if
	// there is one, so that a unit is a whole number of ticks.
	r.scale = min(maxScale, spanTicks/int64(period))
	if den.IsInt64() && den.Int64() <= r.scale {
		k := r.scale / den.Int64()
		r.scale = k * den.Int64()
		if num.IsInt64() && num.Int64() <= spanTicks/k {
			r.unitInt = num.Int64() * k
		}
	}
	r.capacity = int64(period) * r.scale
	unit := new(big.Rat).Mul(perUnit, new(big.Rat).SetInt64(r.scale))
	// What a pause leaves room for at its end: a unit (or the capacity),
	// rounded down, so that the bucket is never emptier than exact.
	r.oneDown = r.capacity
	if maxRate > 1 {
		r.oneDown = new(big.Int).Quo(unit.Num(), unit.Denom()).Int64()
	}
	f, _ := unit.Float64()
	if !math.IsInf(f, 0) && new(big.Rat).SetFloat64(f).Cmp(unit) < 0 {
		f = math.Nextafter(f, math.Inf(1))
	}
	r.unit = f
	if math.IsInf(r.unit, 1) {
		panic(fmt.Sprintf("ratelimit: %s: maxRate %v per %v: a unit would take longer than any time the limiter can count", fn, maxRate, period))
	}
	if r.unit < 1 {
		panic(fmt.Sprintf("ratelimit: %s: maxRate %v per %v: a unit would take %v ns, less than the limiter's resolution of 1/%d ns",
			fn, maxRate, period, float64(period)/maxRate, maxScale))
	}
	r.rebaseAfter = min(1<<56, rebaseTicks/r.scale)
	return r
}

// cost returns the ticks that amount takes, rounded up: exact for whole
// amounts when a unit is a whole number of ticks, and for an amount at or
// above the capacity, which costs the whole period.
func (r *rate) cost(amount float64) int64 {
	if amount >= r.maxRate {
		return r.capacity
	}
	if r.unitInt != 0 {
		if n := int64(amount); float64(n) == amount {
			return n * r.unitInt // n < maxRate, so below capacity
		}
	}
	return min(ceilProduct(amount, r.unit), r.capacity)
}

// remaining returns the most units that room ticks admit: the largest
// amount whose cost is at most room, as TryAcquire counts it, to within a
// few ulps, never above.
func (r *rate) remaining(room int64) float64 {
	if room >= r.capacity {
		return r.maxRate
	}
	if room <= 0 {
		return 0
	}
	x := min(float64(room)/r.unit, r.maxRate)
	for i := 0; x > 0 && r.cost(x) > room; i++ {
		if i < 4 {
			x = math.Nextafter(x, 0)
		} else {
			x *= 1 - 0x1p-40
		}
	}
	return x
}

// ceilProduct returns a*b rounded up to a whole number, exactly: the
// product rounded to a float64 may have lost a fraction just above a whole
// number, which FMA recovers.
func ceilProduct(a, b float64) int64 {
	x := a * b
	if x >= math.MaxInt64 {
		return math.MaxInt64
	}
	n := int64(math.Ceil(x))
	// A product that rounded to a whole number may have lost a fraction,
	// or, from 2^53 on, whole ticks.
	if float64(n) == x {
		if r := math.FMA(a, b, -x); r > 0 {
			n += int64(math.Ceil(r))
		}
	}
	return n
}

// convert returns the ticks, at rate to, of units that take t ticks at
// rate from, rounded up, and at most limit.
func convert(t int64, from, to *rate, limit int64) int64 {
	if t <= 0 {
		return 0
	}
	if from.scale == to.scale && from.unit == to.unit && from.unitInt == to.unitInt {
		return min(t, limit)
	}
	if from.unitInt != 0 && to.unitInt != 0 {
		hi, lo := bits.Mul64(uint64(t), uint64(to.unitInt))
		if hi >= uint64(from.unitInt) {
			return limit
		}
		q, rem := bits.Div64(hi, lo, uint64(from.unitInt))
		if rem != 0 {
			q++
		}
		return int64(min(q, uint64(limit)))
	}
	// Four roundings (from.unit was rounded up, and may be the larger by
	// an ulp) of at most an ulp each: a margin of 2^-49 keeps the result
	// at or above the exact one.
	x := float64(t) / from.unit * to.unit
	return min(ceilProduct(x, 1+0x1p-49), limit)
}
