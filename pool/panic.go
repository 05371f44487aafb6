package pool

import "fmt"

// A PanicError is the value Wait panics with when a task panicked. It
// carries what the task passed to panic and the stack of the task's
// goroutine at that moment, so that the panic raised in the caller of Wait
// still shows where it happened.
type PanicError struct {
	// Value is the value the task passed to panic.
	Value any
	// Stack is the panicking goroutine's stack, as runtime/debug.Stack
	// formats it.
	Stack []byte
}

// Error returns the panic value followed by the task's stack.
func (e *PanicError) Error() string {
	return fmt.Sprintf("pool: task panicked: %v\n\ntask goroutine stack:\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value if it is an error, so that errors.Is and
// errors.As see through a recovered PanicError.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}
