package pool

import (
	"context"
	"sync"
	"sync/atomic"
)

// workers hands out a pool's worker slots: errgroup's SetLimit semaphore,
// turned around so that a submitter blocked for a slot wakes when the
// pool's context ends, without paying for a select on every submission.
//
// Slots are made on demand up to the limit, then handed back through free
// and taken from it again; a submitter with no slot to take blocks on a
// plain receive. When the context ends, one extra token goes into free to
// wake such a submitter, which finds the context ended, puts the token
// back for the next one, and gives up. free has room for every slot plus
// that token, so handing back never blocks.
type workers struct {
	fresh atomic.Int64 // slots not made yet
	free  chan struct{}

	done      <-chan struct{} // the pool's context's
	stopWake  func() bool     // unregisters the wake-up before it has run
	woken     chan struct{}   // closed once the wake-up has run
	closeOnce sync.Once
}

func newWorkers(ctx context.Context, n int) *workers {
	w := &workers{free: make(chan struct{}, n+1), done: ctx.Done(), woken: make(chan struct{})}
	w.fresh.Store(int64(n))
	w.stopWake = context.AfterFunc(ctx, func() {
		select {
		case w.free <- struct{}{}:
		default: // not empty, so no one is blocked on it
		}
		close(w.woken)
	})
	return w
}

// take gets a slot, blocking for one if block is set, and reports whether
// it did. It fails once the context has ended, even when a slot is free.
func (w *workers) take(block bool) bool {
	if closed(w.done) {
		return false
	}
	if !w.takeFresh() {
		select {
		case <-w.free:
		default:
			if !block {
				return false
			}
			<-w.free
		}
	}
	if closed(w.done) {
		w.free <- struct{}{}
		return false
	}
	return true
}

func (w *workers) takeFresh() bool {
	for n := w.fresh.Load(); n > 0; n = w.fresh.Load() {
		if w.fresh.CompareAndSwap(n, n-1) {
			return true
		}
	}
	return false
}

// give hands a slot back.
func (w *workers) give() { w.free <- struct{}{} }

// close unregisters the wake-up, or waits until it has run, so that
// nothing of the pool outlives Wait. Calls after the first return at once.
func (w *workers) close() {
	w.closeOnce.Do(func() {
		if !w.stopWake() {
			<-w.woken
		}
	})
}

// closed reports whether a context's Done channel is closed, without the
// lock that the context's Err takes.
func closed(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}
