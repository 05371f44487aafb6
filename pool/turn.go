package pool

import "sync/atomic"

// turnstile makes the tasks that must wait for the limiter call Acquire one
// at a time, in the order they were submitted: their goroutines start in no
// particular order, and a limiter can only be fair to the order it is
// called in.
//
// Each such task takes a ticket when it is submitted, after it has got a
// worker, and calls Acquire once every earlier ticket has been served. Only
// tasks holding a worker hold tickets, so at most workers tickets are
// outstanding, and a ring of that many slots can hold one parked goroutine
// per ticket without two tickets ever sharing a slot.
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

func newTurnstile(workers int) turnstile {
	return turnstile{ring: make([]atomic.Pointer[turnWaiter], workers)}
}

// idle reports whether every ticket handed out has been served, so that a
// task submitted now would have no one ahead of it. Reading served first
// makes a true result exact for a single submitter.
func (ts *turnstile) idle() bool {
	s := ts.served.Load()
	return s == ts.issued.Load()
}

// take hands out the next ticket. The caller must hold a worker.
func (ts *turnstile) take() uint64 { return ts.issued.Add(1) - 1 }

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
