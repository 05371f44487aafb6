package pool

import "fmt"

// A PanicError is what Wait panics with when a task or the limiter panicked.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's, from runtime/debug.Stack
	// Limiter is true if the limiter panicked, in Acquire or TryAcquire,
	// rather than the task: the task then counts as failed, and did not run.
	Limiter bool
}

// Error returns the panic value followed by the stack of the goroutine
// that panicked.
func (e *PanicError) Error() string {
	if e.Limiter {
		return fmt.Sprintf("pool: the limiter panicked: %v\n\nstack of the goroutine that called it:\n%s", e.Value, e.Stack)
	}
	return fmt.Sprintf("pool: task panicked: %v\n\ntask goroutine stack:\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value if it is an error, for errors.Is and As.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
