package pool

import "sync/atomic"

// turnstile makes the tasks that must wait for the limiter call Acquire one
// at a time, in the order they were submitted: their goroutines start in no
// particular order, and a limiter can only be fair to the order it is
// called in.
//
// Each task takes a ticket when it is submitted, just before errgroup gives
// it a worker. The holder of the ticket whose turn has come reaches the
// limiter and then passes the turn: the submitter, for a task it admits at
// once, or else the task's goroutine. Tickets are held by tasks holding a
// worker and by the one submitter that may be waiting for a worker, so at
// most workers+1 are outstanding, and a ring of that many slots can hold
// one parked goroutine per ticket without two tickets ever sharing a slot.
type turnstile struct {
	issued atomic.Uint64 // tickets handed out
	served atomic.Uint64 // tickets whose turn has come and gone
	ring   []atomic.Pointer[turnWaiter]
}

// A turnWaiter is a goroutine parked until its ticket is served.
type turnWaiter struct {
	ticket uint64
	ch     chan struct{}
}

// newTurnstile returns a turnstile for at most n outstanding tickets.
func newTurnstile(n int) turnstile {
	return turnstile{ring: make([]atomic.Pointer[turnWaiter], n)}
}

// take hands out the next ticket. Callers take tickets one at a time, and
// each must then get a worker or give the ticket back with untake.
func (ts *turnstile) take() uint64 { return ts.issued.Add(1) - 1 }

// untake gives back the ticket just taken, before anyone has seen it.
func (ts *turnstile) untake() { ts.issued.Add(^uint64(0)) }

// head reports whether ticket t's turn has come.
func (ts *turnstile) head(t uint64) bool { return ts.served.Load() == t }

// passed reports whether ticket t's turn has come and gone.
func (ts *turnstile) passed(t uint64) bool { return ts.served.Load() > t }

// wait blocks until ticket t's turn has come.
//
// A parked waiter publishes itself before it rereads served, and pass
// stores served before it looks for a waiter: with Go's sequentially
// consistent atomics, at least one of them sees the other's write, so no
// wake-up is lost.
func (ts *turnstile) wait(t uint64) {
	if ts.served.Load() == t {
		return
	}
	slot := &ts.ring[t%uint64(len(ts.ring))]
	w := &turnWaiter{ticket: t, ch: make(chan struct{}, 1)}
	slot.Store(w)
	if ts.served.Load() == t && slot.CompareAndSwap(w, nil) {
		return
	}
	<-w.ch
}

// pass ends ticket t's turn and wakes the holder of the next ticket if it
// is parked. A late pass for an older ticket that maps to the same slot
// finds a waiter with another ticket there and leaves it alone.
func (ts *turnstile) pass(t uint64) {
	next := t + 1
	ts.served.Store(next)
	slot := &ts.ring[next%uint64(len(ts.ring))]
	if w := slot.Load(); w != nil && w.ticket == next && slot.CompareAndSwap(w, nil) {
		w.ch <- struct{}{}
	}
}

// passLast ends the turn of t, the last ticket handed out: no goroutine can
// be parked for the next, which no one holds yet.
func (ts *turnstile) passLast(t uint64) { ts.served.Store(t + 1) }
