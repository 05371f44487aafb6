// Package usable checks, where drip's packages take a limiter, that it was
// made by its constructor: a nil pointer, or a zero ratelimit.Limiter or
// Window, is refused with a panic that names it when the pool or server is
// built, not on every task or request.
package usable

import (
	"fmt"
	"reflect"
	"time"
)

// A rated limiter reports its rate, as ratelimit's limiters do.
type rated interface {
	MaxRate() float64
	Period() time.Duration
}

// Check panics, naming prefix (such as "pool: New"), if l is nil or a nil
// pointer, or if l reports its rate (MaxRate and Period) and reading it
// panics, as it does on a zero ratelimit.Limiter or Keyed. With rates set,
// it also panics if MaxRate or Period is not > 0, as on a zero Window.
func Check(prefix string, l any, rates bool) {
	if l == nil {
		panic(prefix + ": nil limiter")
	}
	switch v := reflect.ValueOf(l); v.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Chan, reflect.Slice, reflect.UnsafePointer:
		if v.IsNil() {
			panic(fmt.Sprintf("%s: nil %T", prefix, l))
		}
	}
	r, ok := l.(rated)
	if !ok {
		return
	}
	q, w, failure := readRate(r)
	if failure != nil {
		panic(fmt.Sprintf("%s: %T's MaxRate or Period panics (not made by its constructor?): %v", prefix, l, failure))
	}
	if rates && (!(q > 0) || w <= 0) {
		panic(fmt.Sprintf("%s: %T has MaxRate %v and Period %v; both must be > 0 (not made by its constructor?)", prefix, l, q, w))
	}
}

// readRate returns l's MaxRate and Period, or what they panicked with.
func readRate(l rated) (q float64, w time.Duration, failure any) {
	defer func() { failure = recover() }()
	return l.MaxRate(), l.Period(), nil
}
