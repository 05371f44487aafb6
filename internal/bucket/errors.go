// Package bucket holds what drip's leaky buckets share: the local one in
// ratelimit and the one on Redis in ratelimit/redisbucket check amounts and
// report refusals the same way.
package bucket

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// The sentinel errors, exported by ratelimit as ErrExceedsCapacity and
// ErrInvalidAmount.
var (
	ErrExceedsCapacity = errors.New("ratelimit: amount exceeds capacity")
	ErrInvalidAmount   = errors.New("ratelimit: invalid amount")
)

// amountError reports an amount a bucket refuses, naming the amount and the
// capacity, and unwraps to ErrExceedsCapacity or ErrInvalidAmount.
type amountError struct {
	pkg              string
	amount, capacity float64
	err              error
}

func (e *amountError) Error() string {
	if e.err == ErrInvalidAmount {
		return fmt.Sprintf("%s: acquire %v: amount must be a finite number >= 0", e.pkg, e.amount)
	}
	return fmt.Sprintf("%s: acquire %v exceeds capacity %v", e.pkg, e.amount, e.capacity)
}

func (e *amountError) Unwrap() error { return e.err }

// CheckAmount returns the error, naming pkg, for an amount that a bucket of
// the given capacity can never admit, or nil. NaN fails both comparisons.
func CheckAmount(pkg string, amount, capacity float64) error {
	if !(amount >= 0) || amount > math.MaxFloat64 {
		return &amountError{pkg: pkg, amount: amount, capacity: capacity, err: ErrInvalidAmount}
	}
	if amount > capacity {
		return &amountError{pkg: pkg, amount: amount, capacity: capacity, err: ErrExceedsCapacity}
	}
	return nil
}

// DeadlineError reports that a context's deadline falls before the time at
// which a bucket could admit the caller. It unwraps to
// context.DeadlineExceeded, so errors.Is finds it.
type DeadlineError struct {
	Pkg             string
	Amount          float64
	Wait, Remaining time.Duration
}

func (e *DeadlineError) Error() string {
	return fmt.Sprintf("%s: acquire %v would wait %v, but the context deadline is in %v",
		e.Pkg, e.Amount, e.Wait, e.Remaining)
}

func (e *DeadlineError) Unwrap() error { return context.DeadlineExceeded }
