package ratelimit

import (
	"errors"

	"github.com/dripgo/drip/internal/bucket"
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

var amounts = bucket.Amounts{Pkg: "ratelimit", Invalid: ErrInvalidAmount, Exceeds: ErrExceedsCapacity}

// checkAmount returns the error for an amount a limiter of the given
// capacity can never admit, or nil.
func checkAmount(amount, capacity float64) error { return amounts.Check(amount, capacity) }
