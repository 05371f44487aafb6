package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

var (
	// ErrExceedsCapacity is returned, wrapped with the values involved, for
	// an amount larger than the limiter's maximum rate: a bucket of that
	// size can never hold it, so waiting would never end.
	ErrExceedsCapacity = errors.New("ratelimit: amount exceeds capacity")

	// ErrInvalidAmount is returned, wrapped with the value, for an amount
	// that is negative, NaN or infinite.
	ErrInvalidAmount = errors.New("ratelimit: invalid amount")
)

// amountError reports an amount the limiter refuses, naming the amount and
// the capacity, and unwraps to ErrExceedsCapacity or ErrInvalidAmount.
type amountError struct {
	amount, capacity float64
	err              error
}

func (e *amountError) Error() string {
	if e.err == ErrInvalidAmount {
		return fmt.Sprintf("ratelimit: acquire %v: amount must be a finite number >= 0", e.amount)
	}
	return fmt.Sprintf("ratelimit: acquire %v exceeds capacity %v", e.amount, e.capacity)
}

func (e *amountError) Unwrap() error { return e.err }

// checkAmount returns the error for an amount a limiter of the given
// capacity can never admit, or nil. NaN fails both comparisons.
func checkAmount(amount, capacity float64) error {
	if !(amount >= 0) || amount > maxFloat {
		return &amountError{amount: amount, capacity: capacity, err: ErrInvalidAmount}
	}
	if amount > capacity {
		return &amountError{amount: amount, capacity: capacity, err: ErrExceedsCapacity}
	}
	return nil
}

const maxFloat = 1.7976931348623157e308

// deadlineError reports that a context's deadline falls before the time at
// which the limiter could admit the caller. It unwraps to
// context.DeadlineExceeded, so errors.Is finds it.
type deadlineError struct {
	amount          float64
	wait, remaining time.Duration
}

func (e *deadlineError) Error() string {
	return fmt.Sprintf("ratelimit: acquire %v would wait %v, but the context deadline is in %v",
		e.amount, e.wait, e.remaining)
}

func (e *deadlineError) Unwrap() error { return context.DeadlineExceeded }
