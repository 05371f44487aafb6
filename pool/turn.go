package pool

import (
	"sync"
	"sync/atomic"
)

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
// most workers+1 are outstanding.
//
// A goroutine parked for its ticket waits in a slot of a ring. With a ring
// of as many slots as there may be outstanding tickets, no two tickets
// ever share a slot; but the ring is made up front, and a pool may have
// far more workers than tasks (up to math.MaxInt), so the ring has at most
// maxRing slots. Beyond that, two parked tickets may map to one slot: the
// later one to find it taken parks in the overflow map instead, which
// grows only with the goroutines actually parked there.
type turnstile struct {
	issued atomic.Uint64 // tickets handed out
	served atomic.Uint64 // tickets whose turn has come and gone
	ring   []atomic.Pointer[turnWaiter]

	// overflow holds, by ticket, the parked waiters whose slot was taken;
	// spilled counts them, so that pass takes mu only when there are any.
	mu       sync.Mutex
	overflow map[uint64]*turnWaiter
	spilled  atomic.Int64
}

// maxRing is the most slots a turnstile's ring has: 8 KiB of pointers,
// made when the pool is.
const maxRing = 1024

// A turnWaiter is a goroutine parked until its ticket is served.
type turnWaiter struct {
	ticket uint64
	ch     chan struct{}
}

// newTurnstile returns a turnstile for at most n outstanding tickets (n >=
// 1). Its ring has min(n, maxRing) slots.
func newTurnstile(n int) turnstile {
	return turnstile{ring: make([]atomic.Pointer[turnWaiter], min(n, maxRing))}
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
// wake-up is lost. A slot holds nothing but a parked waiter, which leaves
// it when woken, so a slot found taken holds another ticket's waiter.
func (ts *turnstile) wait(t uint64) {
	if ts.served.Load() == t {
		return
	}
	slot := &ts.ring[t%uint64(len(ts.ring))]
	w := &turnWaiter{ticket: t, ch: make(chan struct{}, 1)}
	if !slot.CompareAndSwap(nil, w) {
		ts.waitSpilled(w)
		return
	}
	if ts.served.Load() == t && slot.CompareAndSwap(w, nil) {
		return
	}
	<-w.ch
}

// waitSpilled is wait for a waiter whose slot is taken: it parks in the
// overflow map, on the same terms as in a slot, with mu in place of the
// compare-and-swap.
func (ts *turnstile) waitSpilled(w *turnWaiter) {
	ts.mu.Lock()
	if ts.overflow == nil {
		ts.overflow = make(map[uint64]*turnWaiter)
	}
	ts.overflow[w.ticket] = w
	ts.spilled.Add(1)
	ts.mu.Unlock()
	if ts.served.Load() == w.ticket && ts.unspill(w.ticket) != nil {
		return
	}
	<-w.ch
}

// unspill removes and returns the waiter parked in the overflow map for
// ticket t, or nil if there is none.
func (ts *turnstile) unspill(t uint64) *turnWaiter {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	w := ts.overflow[t]
	if w != nil {
		delete(ts.overflow, t)
		ts.spilled.Add(-1)
	}
	return w
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
		return
	}
	if ts.spilled.Load() > 0 {
		if w := ts.unspill(next); w != nil {
			w.ch <- struct{}{}
		}
	}
}

// passLast ends the turn of t, the last ticket handed out: no goroutine can
// be parked for the next, which no one holds yet.
func (ts *turnstile) passLast(t uint64) { ts.served.Store(t + 1) }
