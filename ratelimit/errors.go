package ratelimit

import "github.com/dripgo/drip/internal/bucket"

var (
	// ErrExceedsCapacity is returned, wrapped with the values involved, for
	// an amount larger than the limiter's maximum rate: a bucket of that
	// size can never hold it, so waiting would never end.
	ErrExceedsCapacity = bucket.ErrExceedsCapacity

	// ErrInvalidAmount is returned, wrapped with the value, for an amount
	// that is negative, NaN or infinite.
	ErrInvalidAmount = bucket.ErrInvalidAmount
)

// checkAmount returns the error for an amount a limiter of the given
// capacity can never admit, or nil.
func checkAmount(amount, capacity float64) error {
	return bucket.CheckAmount("ratelimit", amount, capacity)
}
