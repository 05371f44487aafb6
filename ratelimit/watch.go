package ratelimit

import "context"

// Waiting for a context costs: a goroutine parked in a select on two
// channels holds a runtime record per channel. Callers that share a context,
// such as the workers of a pool, need not each watch it. A run of waiters
// queued one after another with the same ctx.Done() forms a group: its
// first waiter, the owner, selects on its result and on ctx.Done(); the
// others wait for their result alone. When ctx ends, the owner cancels the
// whole group at once. If the owner is admitted first, a context.AfterFunc
// takes over its watch until the group is gone.
//
// A waiter whose context no one else shares is the owner of a group of one,
// and no watcher is made for it.
type watcher struct {
	ctx      context.Context
	ownerSeq uint64
	owner    bool     // the owner still waits, and watches ctx itself
	members  []uint64 // sequence numbers of the group, some of them gone
	live     int      // members still waiting, the owner included
	stop     func() bool
}

// join puts the waiter seq, just pushed, in the group of the waiter before
// it if they share ctx, and reports whether it must watch ctx itself. It
// requires the limiter's lock.
func (q *queue) join(ctx context.Context, seq uint64) (watch bool) {
	s := q.at(seq)
	if s.done == nil {
		return false
	}
	prev := q.at(seq - 1)
	if seq == q.headSeq || prev == nil || prev.done != s.done {
		return true
	}
	w := prev.w
	if w == nil {
		w = &watcher{ctx: ctx, ownerSeq: seq - 1, owner: true, members: []uint64{seq - 1}, live: 1}
		prev.w = w
	}
	if len(w.members) >= 2*w.live+16 {
		// Forget the members that have left.
		kept := w.members[:0]
		for _, m := range w.members {
			if ms := q.at(m); ms != nil && ms.w == w {
				kept = append(kept, m)
			}
		}
		w.members = kept
	}
	w.members = append(w.members, seq)
	w.live++
	s.w = w
	return false
}

// A canceller is a limiter that holds a queue of waiters.
type canceller interface {
	// cancelGroup takes the limiter's lock, hands ctx's error to the
	// members of w still waiting (with queue.cancel), admits whoever may
	// then go, and unlocks.
	cancelGroup(w *watcher)
	// withdraw does the same for the waiter seq, which gets its result on
	// ch, and its group: its context has ended.
	withdraw(ctx context.Context, seq uint64, ch chan error)
}

// awaitTurn waits for the result of the waiter seq, just queued in l: on
// ch, or, if watch is set, until ctx ends, when it withdraws the waiter.
func awaitTurn(ctx context.Context, l canceller, seq uint64, ch chan error, watch bool) error {
	if !watch {
		return <-ch
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
	}
	l.withdraw(ctx, seq, ch)
	return <-ch // the cancellation, or a result that came first
}

// left updates the group of a waiter that left the queue admitted or
// refused; l is the queue's limiter. It requires the limiter's lock.
func (q *queue) left(l canceller, s slot, seq uint64) {
	w := s.w
	if w == nil {
		return
	}
	w.live--
	if w.owner && seq == w.ownerSeq {
		w.owner = false
		if w.live > 0 {
			w.stop = context.AfterFunc(w.ctx, func() { l.cancelGroup(w) })
		}
	}
	if w.live == 0 && w.stop != nil {
		w.stop()
	}
}

// cancel hands ctx's error to every member of w still waiting. It
// requires the limiter's lock; the limiter then admits whoever may go.
func (q *queue) cancel(w *watcher) {
	err := w.ctx.Err()
	for _, m := range w.members {
		if s := q.at(m); s != nil && s.w == w {
			q.leave(s, err)
		}
	}
	w.live, w.members = 0, nil
	if w.stop != nil {
		w.stop()
	}
}
