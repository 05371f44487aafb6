package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// A DeadlineError reports that a context's deadline falls at or before the
// time at which the limiter could admit the caller, so Acquire refused at
// once instead of waiting in vain. Wait is how long the caller would have
// waited, which is what a server puts in Retry-After and a client in its
// logs or backoff. It unwraps to context.DeadlineExceeded:
//
//	var de *ratelimit.DeadlineError
//	if errors.As(err, &de) {
//		retryAfter := de.Wait
//	}
//
// The limiters of ratelimit/redisbucket return it too, wrapped with the key.
type DeadlineError struct {
	Amount    float64       // the amount asked for
	Wait      time.Duration // how long the caller would have waited
	Remaining time.Duration // how long was left before the deadline
}

// Error names the amount, the wait and the time left before the deadline.
func (e *DeadlineError) Error() string {
	return fmt.Sprintf("ratelimit: acquire %v would wait %v, but the context deadline is in %v",
		e.Amount, e.Wait, e.Remaining)
}

// Unwrap returns context.DeadlineExceeded.
func (e *DeadlineError) Unwrap() error { return context.DeadlineExceeded }
