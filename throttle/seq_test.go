package throttle_test

import (
	"context"
	"errors"
	"iter"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// source is an iter.Seq of 0, 1, ... n-1 that counts the values it has
// produced and notes when it has returned.
type source struct {
	n        int
	pulled   int
	returned bool
}

func (s *source) seq(yield func(int) bool) {
	defer func() { s.returned = true }()
	for i := range s.n {
		s.pulled++
		if !yield(i) {
			return
		}
	}
}

func TestSeqDrip(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(4, 8*time.Second, ratelimit.WithClock(c))
		src := &source{n: 10}
		var got []time.Duration
		var done atomic.Int64
		go func() {
			for v, err := range throttle.New[int](lim).Seq(context.Background(), src.seq) {
				if err != nil || v != len(got) {
					t.Errorf("got %d, %v; want %d, nil", v, err, len(got))
				}
				got = append(got, c.Elapsed())
				// Pace the loop like the Drip! callers, which arrive 10 ms
				// apart: the first four pass as they come.
				if len(got) < 4 {
					c.Sleep(10 * ms)
				}
			}
			done.Add(1)
		}()
		advanceUntil(t, c, &done, 1, time.Minute)
		sameDurations(t, "value", got, dripSchedule)
		if src.pulled != 10 || !src.returned {
			t.Errorf("source pulled %d, returned %v; want 10, true", src.pulled, src.returned)
		}
	})
}

func TestSeqWeights(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(10, time.Second, ratelimit.WithClock(c))
		words := []string{"abcdef", "abcd", "", "abcde", "ab", "abcdefghij"}
		th := throttle.New(lim, throttle.WithCost(func(s string) float64 { return float64(len(s)) }))
		var got []time.Duration
		var seen []string
		var done atomic.Int64
		go func() {
			for w, err := range th.Seq(context.Background(), sliceSeq(words)) {
				if err != nil {
					t.Error(err)
				}
				seen = append(seen, w)
				got = append(got, c.Elapsed())
			}
			done.Add(1)
		}()
		advanceUntil(t, c, &done, 1, time.Minute)
		// 6+4 fill the bucket; "" is free; 5 waits 0.5 s, 2 waits 0.2 s
		// more, and 10 needs the full bucket to drain: 1 s after that.
		sameDurations(t, "word", got, []time.Duration{0, 0, 0, 500 * ms, 700 * ms, 1700 * ms})
		for i := range words {
			if seen[i] != words[i] {
				t.Errorf("word %d is %q, want %q", i, seen[i], words[i])
			}
		}
	})
}

func sliceSeq[T any](s []T) iter.Seq[T] {
	return func(yield func(T) bool) {
		for _, v := range s {
			if !yield(v) {
				return
			}
		}
	}
}

func TestSeqBreakStopsSource(t *testing.T) {
	for _, stopAt := range []int{0, 1, 3, 9} {
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			lim := ratelimit.New(100, time.Hour, ratelimit.WithClock(c))
			src := &source{n: 10}
			for v, err := range throttle.New[int](lim).Seq(context.Background(), src.seq) {
				if err != nil {
					t.Fatal(err)
				}
				if v == stopAt {
					break
				}
			}
			if src.pulled != stopAt+1 || !src.returned {
				t.Errorf("break at %d: source pulled %d, returned %v; want %d, true",
					stopAt, src.pulled, src.returned, stopAt+1)
			}
			// Nothing was acquired for a value the loop did not take.
			if lvl := lim.Level(); lvl != float64(stopAt+1) {
				t.Errorf("break at %d: level %v, want %d", stopAt, lvl, stopAt+1)
			}
			checkNoWorkers(t)
		})
	}
}

func TestSeqBreakWhileAnotherWaits(t *testing.T) {
	// A loop that breaks does not give up a place in the queue it never
	// took, and one that waits keeps its place.
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(1, time.Second, ratelimit.WithClock(c))
		th := throttle.New[int](lim)
		src := &source{n: 5}
		var got []time.Duration
		var done atomic.Int64
		go func() {
			for v, err := range th.Seq(context.Background(), src.seq) {
				if err != nil {
					t.Error(err)
				}
				got = append(got, c.Elapsed())
				if v == 2 {
					break
				}
			}
			done.Add(1)
		}()
		advanceUntil(t, c, &done, 1, time.Minute)
		sameDurations(t, "value", got, []time.Duration{0, time.Second, 2 * time.Second})
		if src.pulled != 3 || !src.returned {
			t.Errorf("source pulled %d, returned %v; want 3, true", src.pulled, src.returned)
		}
		if w := lim.Waiting(); w != 0 {
			t.Errorf("%d callers still queued", w)
		}
	})
}

func TestSeqCancelWhileWaiting(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(2, time.Second, ratelimit.WithClock(c))
		src := &source{n: 10}
		ctx, cancel := context.WithCancel(context.Background())
		type pair struct {
			v   int
			err error
		}
		var got []pair
		var done atomic.Int64
		go func() {
			for v, err := range throttle.New[int](lim).Seq(ctx, src.seq) {
				got = append(got, pair{v, err})
			}
			done.Add(1)
		}()
		c.AdvanceTo(t, 300*ms) // 0 and 1 passed, 2 waits until 0.5 s
		cancel()
		advanceUntil(t, c, &done, 1, time.Minute)
		if len(got) != 3 || got[0] != (pair{0, nil}) || got[1] != (pair{1, nil}) ||
			got[2].v != 2 || !errors.Is(got[2].err, context.Canceled) {
			t.Errorf("got %v, want [{0 <nil>} {1 <nil>} {2 context canceled}]", got)
		}
		if c.Elapsed() != 300*ms {
			t.Errorf("the loop ended at %v, want at the cancellation (300ms)", c.Elapsed())
		}
		if src.pulled != 3 || !src.returned {
			t.Errorf("source pulled %d, returned %v; want 3, true", src.pulled, src.returned)
		}
		if lvl := lim.Level(); lvl > 2 {
			t.Errorf("level %v: the cancelled value took capacity", lvl)
		}
	})
}

func TestSeqRefusedEndsAfterError(t *testing.T) {
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		lim := ratelimit.New(5, time.Second, ratelimit.WithClock(c))
		th := throttle.New(lim, throttle.WithCost(func(n int) float64 { return float64(n) }))
		var vals []int
		var errs []error
		// The loop ignores the error and asks for more: there is no more.
		for v, err := range th.Seq(context.Background(), sliceSeq([]int{2, 6, 1})) {
			vals = append(vals, v)
			errs = append(errs, err)
		}
		if len(vals) != 2 || vals[0] != 2 || vals[1] != 6 || errs[0] != nil ||
			!errors.Is(errs[1], ratelimit.ErrExceedsCapacity) {
			t.Errorf("got %v %v, want [2 6] [<nil> ErrExceedsCapacity]", vals, errs)
		}
		if lvl := lim.Level(); lvl != 2 {
			t.Errorf("level %v, want 2", lvl)
		}
	})
}

func TestSeqAllocsPerValue(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	lim := ratelimit.New(1e12, time.Second)
	th := throttle.New(lim, throttle.WithCost(func(int) float64 { return 1 }))
	ctx := context.Background()
	allocs := func(n int) float64 {
		src := &source{n: n}
		return testing.AllocsPerRun(20, func() {
			src.pulled = 0
			for _, err := range th.Seq(ctx, src.seq) {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	few, many := allocs(1), allocs(1000)
	if many != few {
		t.Errorf("%v allocations for 1 value, %v for 1000: want no allocation per value", few, many)
	}
}
