package pool_test

import (
	"context"
	"errors"
	"iter"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/pool"
	"github.com/dripgo/drip/ratelimit"
)

// TestMapOrder has the later items finish first and checks that the
// results come back in input order, and when the calls started.
func TestMapOrder(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(2, time.Second, ratelimit.WithClock(c))
		items := []int{0, 1, 2, 3, 4, 5, 6, 7}
		var finished []int
		var starts [8]time.Duration
		finishedCh := make(chan int, len(items))
		var results []int
		var err error
		mapped := make(chan struct{})
		go func() {
			defer close(mapped)
			results, err = pool.Map(context.Background(), lim, items, func(_ context.Context, i int) (int, error) {
				starts[i] = c.Elapsed()
				c.Sleep(time.Duration(len(items)-i) * time.Second)
				finishedCh <- i
				return i * i, nil
			}, pool.Workers(8))
		}()
		for range items {
			for len(finishedCh) == 0 {
				c.Advance(100 * ms)
			}
			finished = append(finished, <-finishedCh)
		}
		<-mapped
		if err != nil {
			t.Fatalf("Map: %v", err)
		}
		if want := []int{0, 1, 4, 9, 16, 25, 36, 49}; !slices.Equal(results, want) {
			t.Errorf("Map results %v, want %v", results, want)
		}
		if slices.IsSorted(finished) {
			t.Errorf("calls finished in input order %v; the test wants them out of order", finished)
		}
		// Two at once, then one every half second.
		want := []time.Duration{0, 0, 500 * ms, 1000 * ms, 1500 * ms, 2000 * ms, 2500 * ms, 3000 * ms}
		for i := range want {
			if starts[i] != want[i] {
				t.Errorf("item %d started at %v, want %v", i, starts[i], want[i])
			}
		}
	})
}

// TestMapError checks that Map returns the results it has, in place, with
// the first error; the failure stops the items not yet started.
func TestMapError(t *testing.T) {
	lim := ratelimit.New(1e6, time.Second)
	bad := errors.New("bad item")
	var calls atomic.Int64
	results, err := pool.Map(context.Background(), lim, []int{1, 2, 3, 4, 5, 6}, func(_ context.Context, i int) (string, error) {
		calls.Add(1)
		if i == 4 {
			return "ignored", bad
		}
		return string(rune('a' + i - 1)), nil
	}, pool.Workers(1))
	if err != bad {
		t.Errorf("Map error %v, want %v", err, bad)
	}
	if want := []string{"a", "b", "c", "", "", ""}; !slices.Equal(results, want) {
		t.Errorf("Map results %q, want %q", results, want)
	}
	if calls.Load() != 4 {
		t.Errorf("fn called %d times, want 4", calls.Load())
	}
}

// TestMapCollect checks Map with CollectErrors: every item runs, and
// every error comes back.
func TestMapCollect(t *testing.T) {
	lim := ratelimit.New(1e6, time.Second)
	results, err := pool.Map(context.Background(), lim, []int{1, 2, 3, 4}, func(_ context.Context, i int) (int, error) {
		if i%2 == 0 {
			return 0, errors.New("even")
		}
		return i * 10, nil
	}, pool.Workers(2), pool.CollectErrors())
	if err == nil || err.Error() != "even\neven" {
		t.Errorf("Map error %v, want two joined", err)
	}
	if want := []int{10, 0, 30, 0}; !slices.Equal(results, want) {
		t.Errorf("Map results %v, want %v", results, want)
	}
}

// TestMapPanic checks that a panic in fn reaches the caller of Map.
func TestMapPanic(t *testing.T) {
	lim := ratelimit.New(1e6, time.Second)
	v, _ := waitPanic(func() error {
		_, err := pool.Map(context.Background(), lim, []int{1, 2, 3}, func(_ context.Context, i int) (int, error) {
			if i == 2 {
				panic("two")
			}
			return i, nil
		})
		return err
	})
	if pe, ok := v.(*pool.PanicError); !ok || pe.Value != "two" {
		t.Errorf("Map panicked with %v, want a *pool.PanicError with value \"two\"", v)
	}
}

// countingSeq yields 0, 1, 2, ... up to n (or without end if n < 0),
// counting the items pulled, and records whether more than limit items
// were ever pulled before fn finished with them.
type countingSeq struct {
	pulled, finished atomic.Int64
	limit            int64
	overrun          atomic.Bool
	stopped          atomic.Bool // the consumer broke out of the loop
}

func (s *countingSeq) seq(n int) iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := 0; n < 0 || i < n; i++ {
			if s.pulled.Add(1)-s.finished.Load() > s.limit {
				s.overrun.Store(true)
			}
			if !yield(i) {
				s.stopped.Store(true)
				return
			}
		}
	}
}

// TestForEachLazy checks that ForEach pulls an item only once a worker is
// free for it: with 3 workers busy it has pulled exactly 3 items, and each
// finished item lets it pull one more.
func TestForEachLazy(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(100, time.Second, ratelimit.WithClock(c))
		s := &countingSeq{limit: 3}
		release := make(chan struct{})
		var sum atomic.Int64
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			err = pool.ForEach(context.Background(), lim, s.seq(10), func(_ context.Context, i int) error {
				<-release
				sum.Add(int64(i))
				s.finished.Add(1)
				return nil
			}, pool.Workers(3))
		}()
		c.Settle()
		if got := s.pulled.Load(); got != 3 {
			t.Fatalf("with 3 workers busy, ForEach pulled %d items, want 3", got)
		}
		for k := range 7 {
			release <- struct{}{}
			c.Settle()
			if got, want := s.pulled.Load(), int64(4+k); got != want {
				t.Fatalf("after %d items finished, ForEach pulled %d, want %d", k+1, got, want)
			}
		}
		close(release)
		<-done
		if err != nil {
			t.Fatalf("ForEach: %v", err)
		}
		if sum.Load() != 45 || s.overrun.Load() {
			t.Errorf("sum %d (want 45), overrun %v", sum.Load(), s.overrun.Load())
		}
		c.Settle()
		checkNoLeaks(t)
	})
}

// TestForEachStops checks that ForEach stops pulling an endless sequence
// when a call fails, or when the parent context ends, and returns why. The
// limiter admits 4 at once and then one every 250 ms, so item k > 3 runs at
// (k-3)/4 s; with 2 workers, ForEach has pulled two items past the last
// one that ran, one waiting for the limiter and one for its turn.
func TestForEachStops(t *testing.T) {
	bad := errors.New("bad")
	stop := errors.New("stop")
	tests := []struct {
		name          string
		fail          bool // item 10 fails, at 1.75 s; else cancel at 2 s
		want          error
		calls, pulled int64
	}{{"error", true, bad, 11, 12}, {"cancel", false, stop, 12, 14}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				lim := ratelimit.New(4, time.Second, ratelimit.WithClock(c))
				ctx, cancel := context.WithCancelCause(context.Background())
				defer cancel(nil)
				s := &countingSeq{limit: 2}
				var err error
				done := make(chan struct{})
				go func() {
					defer close(done)
					err = pool.ForEach(ctx, lim, s.seq(-1), func(_ context.Context, i int) error {
						defer s.finished.Add(1)
						if tt.fail && i == 10 {
							return bad
						}
						return nil
					}, pool.Workers(2))
				}()
				c.AdvanceTo(t, 2*time.Second)
				if !tt.fail {
					cancel(stop)
				}
				<-done
				if err != tt.want {
					t.Errorf("ForEach() = %v, want %v", err, tt.want)
				}
				if !s.stopped.Load() || s.overrun.Load() {
					t.Errorf("iterator stopped %v, overrun %v", s.stopped.Load(), s.overrun.Load())
				}
				if got := s.pulled.Load(); got != tt.pulled {
					t.Errorf("pulled %d items, want %d", got, tt.pulled)
				}
				if got := s.finished.Load(); got != tt.calls {
					t.Errorf("%d calls, want %d", got, tt.calls)
				}
				c.Settle()
				checkNoLeaks(t)
			})
		})
	}
}

// TestForEachSeqPanics checks that a panicking sequence cancels the calls
// in flight and leaves no goroutine behind it.
func TestForEachSeqPanics(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(100, time.Second, ratelimit.WithClock(c))
		var cancelled atomic.Int64
		seq := func(yield func(int) bool) {
			for i := range 3 {
				if !yield(i) {
					return
				}
			}
			panic("seq broke")
		}
		v, _ := waitPanic(func() error {
			return pool.ForEach(context.Background(), lim, seq, func(ctx context.Context, i int) error {
				<-ctx.Done()
				cancelled.Add(1)
				return ctx.Err()
			}, pool.Workers(4))
		})
		if v != "seq broke" {
			t.Errorf("ForEach panicked with %v, want the sequence's panic", v)
		}
		if cancelled.Load() != 3 {
			t.Errorf("%d calls saw the cancellation, want 3", cancelled.Load())
		}
		c.Settle()
		checkNoLeaks(t)
	})
}

// cancelOnTry is a limiter whose TryAcquire cancels a context on its nth
// call, and then admits as the limiter inside it would.
type cancelOnTry struct {
	*ratelimit.Limiter
	n      int
	calls  int
	cancel context.CancelCauseFunc
	cause  error
}

func (l *cancelOnTry) TryAcquire(amount float64) bool {
	if l.calls++; l.calls == l.n {
		l.cancel(l.cause)
	}
	return l.Limiter.TryAcquire(amount)
}

// TestForEachCancelledWhilePulling ends the context between two steps of
// ForEach's loop, with workers free: while seq produces an item, so that
// ForEach submits it to a pool that has stopped and the item is skipped;
// and while ForEach submits an item, which the limiter admits, so that the
// item runs and ForEach pulls no other.
func TestForEachCancelledWhilePulling(t *testing.T) {
	stop := errors.New("stop")
	for _, tt := range []struct {
		name          string
		inSeq         bool // else in the limiter's second TryAcquire
		calls, pulled int64
	}{{"in seq", true, 2, 3}, {"in submit", false, 2, 2}} {
		t.Run(tt.name, func(t *testing.T) {
			clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
				ctx, cancel := context.WithCancelCause(context.Background())
				defer cancel(nil)
				lim := &cancelOnTry{Limiter: ratelimit.New(100, time.Second, ratelimit.WithClock(c)), cancel: cancel, cause: stop}
				if !tt.inSeq {
					lim.n = 2
				}
				s := &countingSeq{limit: 4}
				seq := func(yield func(int) bool) {
					for i := range s.seq(-1) {
						if tt.inSeq && i == 2 {
							cancel(stop)
						}
						if !yield(i) {
							return
						}
					}
				}
				err := pool.ForEach(ctx, lim, seq, func(context.Context, int) error {
					s.finished.Add(1)
					return nil
				}, pool.Workers(4))
				if err != stop {
					t.Errorf("ForEach() = %v, want %v", err, stop)
				}
				if got := s.pulled.Load(); got != tt.pulled || !s.stopped.Load() {
					t.Errorf("pulled %d items (iterator stopped: %v), want %d", got, s.stopped.Load(), tt.pulled)
				}
				if got := s.finished.Load(); got != tt.calls {
					t.Errorf("%d calls, want %d", got, tt.calls)
				}
				c.Settle()
				checkNoLeaks(t)
			})
		})
	}
}
