// Package bucket holds what drip's leaky buckets share: the local one in
// ratelimit and the one on Redis in ratelimit/redisbucket check amounts and
// report refusals the same way.
package bucket

import (
	"fmt"
	"math"
)

// Amounts checks the amounts a bucket is asked for, and names its package
// and its sentinel errors in the errors it returns.
type Amounts struct {
	Pkg     string
	Invalid error // for a negative, NaN or infinite amount
	Exceeds error // for an amount above the capacity
}

// amountError reports an amount a bucket refuses, naming the amount and the
// capacity, and unwraps to the sentinel error.
type amountError struct {
	pkg              string
	amount, capacity float64
	err              error
	invalid          bool
}

func (e *amountError) Error() string {
	if e.invalid {
		return fmt.Sprintf("%s: acquire %v: amount must be a finite number >= 0", e.pkg, e.amount)
	}
	return fmt.Sprintf("%s: acquire %v exceeds capacity %v", e.pkg, e.amount, e.capacity)
}

func (e *amountError) Unwrap() error { return e.err }

// Check returns the error for an amount that a bucket of the given capacity
// can never admit, or nil. NaN fails both comparisons.
func (a Amounts) Check(amount, capacity float64) error {
	if !(amount >= 0) || amount > math.MaxFloat64 {
		return &amountError{pkg: a.Pkg, amount: amount, capacity: capacity, err: a.Invalid, invalid: true}
	}
	if amount > capacity {
		return &amountError{pkg: a.Pkg, amount: amount, capacity: capacity, err: a.Exceeds}
	}
	return nil
}
