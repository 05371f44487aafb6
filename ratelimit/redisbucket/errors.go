package redisbucket

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dripgo/drip/internal/bucket"
	"github.com/dripgo/drip/ratelimit"
)

// ErrUnavailable is returned, wrapped with the operation, the key and the
// cause, when Redis cannot be reached or does not answer within the
// limiter's timeout. errors.Is finds the cause too, for example
// syscall.ECONNREFUSED.
//
// An error that wraps ErrUnavailable never matches context.DeadlineExceeded,
// which is kept for the caller's own deadline (and an error for that does
// not match ErrUnavailable). When a timeout cut the round trip short, the
// limiter's (WithTimeout) or the client's, the message says so, and the
// cause has a Timeout method, as net.Error has, that reports true:
// errors.As finds it with a target of type interface{ Timeout() bool }.
var ErrUnavailable = errors.New("redisbucket: redis unavailable")

// redisError reports a failed round trip: the operation, the key, and the
// cause, preceded by ErrUnavailable or the caller's context error when one
// of them explains it.
type redisError struct {
	op, key string
	reason  error // ErrUnavailable, ctx.Err(), or nil
	err     error
}

func (e *redisError) Error() string {
	if e.reason != nil {
		return fmt.Sprintf("redisbucket: %s on key %q: %s: %v", e.op, e.key,
			strings.TrimPrefix(e.reason.Error(), "redisbucket: "), e.err)
	}
	return fmt.Sprintf("redisbucket: %s on key %q: %v", e.op, e.key, e.err)
}

func (e *redisError) Unwrap() []error {
	if e.reason != nil {
		return []error{e.reason, e.err}
	}
	return []error{e.err}
}

// fail wraps the error of a round trip made for ctx.
func (l *Limiter) fail(ctx context.Context, op string, err error) error {
	e := &redisError{op: op, key: l.key, err: err}
	switch reason := ended(ctx); {
	case reason != nil:
		if !errors.Is(err, reason) { // else err says it already
			e.reason = reason
		}
	case unavailable(err):
		e.reason, e.err = ErrUnavailable, timedOut(err)
	}
	return e
}

// timedOut returns the cause of a failed round trip whose caller's context
// is still alive. A context deadline in it is then the limiter's timeout
// (or a timeout of the client's), not the caller's deadline, so timedOut
// keeps what it says but not what it is: to errors.Is,
// context.DeadlineExceeded means the caller's deadline.
func timedOut(err error) error {
	switch {
	case err == context.DeadlineExceeded:
		return timeoutError("no reply within the limiter's timeout")
	case errors.Is(err, context.DeadlineExceeded):
		return timeoutError(err.Error())
	}
	return err
}

// timeoutError is the cause of a round trip that a timeout other than the
// caller's deadline cut short.
type timeoutError string

func (e timeoutError) Error() string { return string(e) }

// Timeout reports true, as net.Error's method does for a timeout.
func (timeoutError) Timeout() bool { return true }

// ended returns the error of a context that has ended, or whose deadline
// has passed: a socket deadline set from it may fire before the context's
// own timer does.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// unavailable reports whether err, from a round trip whose caller's context
// is still alive, means that Redis cannot serve the limiter now, rather than
// that it refused the request: no reply or a late one, or one of the
// replies a server gives while it cannot serve.
func unavailable(err error) bool {
	var bad *replyError
	if errors.Is(err, redis.ErrClosed) || errors.As(err, &bad) {
		return false // a closed client is a mistake, not an outage
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return true // no reply: refused, reset, timed out
	}
	for _, p := range [...]string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "NOREPLICAS"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return strings.HasPrefix(re.Error(), "ERR max number of clients")
}

var amounts = bucket.Amounts{Pkg: "redisbucket", Invalid: ratelimit.ErrInvalidAmount, Exceeds: ratelimit.ErrExceedsCapacity}

// checkAmount returns the error for an amount a bucket of the given
// capacity can never admit, or nil.
func checkAmount(amount, capacity float64) error { return amounts.Check(amount, capacity) }
