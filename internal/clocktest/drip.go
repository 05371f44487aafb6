package clocktest

import "time"

// A Drip is one of aiolimiter's documented examples, the acceptance cases
// that every package's tests check: callers arrive Gap apart at a limiter
// of MaxRate per Period and are admitted at Want, measured from the first
// arrival.
type Drip struct {
	Name    string
	MaxRate float64
	Period  time.Duration
	Gap     time.Duration
	Want    []time.Duration
}

const ms = time.Millisecond

// Drips are the examples: bursting (the first four pass at once, then one
// every 2 s) and no burst (one every 1.5 s).
var Drips = []Drip{
	{"burst", 4, 8 * time.Second, 10 * ms,
		[]time.Duration{0, 10 * ms, 20 * ms, 30 * ms, 2 * time.Second, 4 * time.Second,
			6 * time.Second, 8 * time.Second, 10 * time.Second, 12 * time.Second}},
	{"no burst", 1, 1500 * ms, 10 * ms,
		[]time.Duration{0, 1500 * ms, 3000 * ms, 4500 * ms, 6000 * ms}},
}
