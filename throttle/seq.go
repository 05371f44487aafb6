package throttle

import (
	"context"
	"iter"
)

// Seq returns an iterator over the values of seq, in order, each yielded
// only once the limiter has admitted its cost, paired with a nil error.
//
// If the limiter refuses a value (ctx ended, its deadline cannot be met, or
// the cost is invalid), Seq yields that value, which was not admitted,
// paired with the limiter's error, and ends: the error is the last pair, so
// a loop that checks it needs no other way to learn why the sequence
// stopped short.
//
//	for v, err := range th.Seq(ctx, values) {
//		if err != nil {
//			return err // v was not admitted
//		}
//		use(v)
//	}
//
// Seq drives seq from the caller's own goroutine: it starts no goroutine,
// and it draws a value from seq only when the loop asks for the next one.
// When the loop stops early with break or return, seq's yield returns false
// at once, so seq stops without producing another value (a panic in the
// loop unwinds through seq in the same way). After the first value, Seq
// allocates nothing per value. Seq panics if seq is nil.
func (t *Throttled[T]) Seq(ctx context.Context, seq iter.Seq[T]) iter.Seq2[T, error] {
	if seq == nil {
		panic("throttle: Seq: nil iter.Seq")
	}
	return func(yield func(T, error) bool) {
		for v := range seq {
			if err := t.Wait(ctx, v); err != nil {
				yield(v, err)
				return
			}
			if !yield(v, nil) {
				return
			}
		}
	}
}
