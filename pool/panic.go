package pool

import "fmt"

// A PanicError is what Wait panics with when a task or the limiter panicked.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's, from runtime/debug.Stack
}

// Error returns the panic value followed by the task's stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("pool: task panicked: %v\n\ntask goroutine stack:\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value if it is an error, for errors.Is and As.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
