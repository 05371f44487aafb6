package pool

import (
	"sync"
	"sync/atomic"
)

// turnstile puts the tasks that reach the limiter in submission order: their
// goroutines start in no particular order, and a limiter can only be fair to
// the order it is called in (TestStartOrder; TestDripSchedule counts the
// callers in the limiter).
//
// Each task takes a ticket when it is submitted, just before errgroup gives
// it a worker. The holder of the ticket whose turn has come calls the
// limiter and then passes the turn. Tickets are held by tasks holding a
// worker and by the one submitter that may be waiting for a worker, so at
// most workers+1 are outstanding.
//
// A submitter may hold the turn of the ticket it has just taken (hold),
// when no ticket before it is outstanding, while it asks the limiter for
// the task itself. The ticket's own goroutine, which errgroup may start
// before that, waits until the submitter lets go: with passHeld if the
// limiter admitted the task, so that the goroutine finds its turn passed
// and runs the task; or with release, so that the goroutine takes the turn
// and calls the limiter itself.
//
// The turn is an atomic word, so that a task that never waits costs a few
// atomic operations, not locks (BenchmarkTurns, pattern=held, against
// mutexTurns). A goroutine that must wait parks in a slot of a ring,
// indexed by ticket; BenchmarkTurns (pattern=queued) finds that no faster
// than mutexTurns' map. The ring is made up front and a pool may have far
// more workers than tasks (up to math.MaxInt), so it has at most maxRing
// slots; a waiter that finds its slot taken by another ticket parks in the
// overflow map, which grows only with the goroutines parked there.
type turnstile struct {
	issued atomic.Uint64 // tickets handed out
	served atomic.Uint64 // the ticket whose turn it is, with held while a submitter holds it
	ring   []atomic.Pointer[turnWaiter]

	// overflow holds, by ticket, the parked waiters whose slot was taken;
	// spilled counts them, so that the wakers take mu only when there are
	// any.
	mu       sync.Mutex
	overflow map[uint64]*turnWaiter
	spilled  atomic.Int64
}

// held marks served while a submitter holds the turn of the ticket it
// stores.
const held = 1 << 63

// maxRing is the most slots a turnstile's ring has: 8 KiB of pointers,
// made when the pool is.
const maxRing = 1024

// A turnWaiter is a goroutine parked until its ticket is due.
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

// hold holds the turn of t, the ticket just taken, if it has come, and
// reports whether it did. The caller must then end the hold with passHeld
// or release (or untake).
func (ts *turnstile) hold(t uint64) bool { return ts.served.CompareAndSwap(t, t|held) }

// untake gives back t, the ticket just taken, and its turn if held, before
// any goroutine has seen it.
func (ts *turnstile) untake(t uint64, holding bool) {
	if holding {
		ts.served.Store(t)
	}
	ts.issued.Add(^uint64(0))
}

// head reports whether ticket t's turn has come and is not held.
func (ts *turnstile) head(t uint64) bool { return ts.served.Load() == t }

// passed reports whether ticket t's turn has come and gone.
func (ts *turnstile) passed(t uint64) bool { return ts.served.Load()&^held > t }

// due reports whether the goroutine of ticket t may go on: its turn has
// come and no one holds it, or its turn has gone (its submitter passed it).
func (ts *turnstile) due(t uint64) bool {
	s := ts.served.Load()
	return s == t || s&^held > t
}

// wait blocks until ticket t is due.
//
// A parked waiter publishes itself before it rereads served, and a waker
// stores served before it looks for a waiter: with Go's sequentially
// consistent atomics, at least one of them sees the other's write, so no
// wake-up is lost. A slot holds nothing but a parked waiter, which leaves
// it when woken, so a slot found taken holds another ticket's waiter.
func (ts *turnstile) wait(t uint64) {
	if ts.due(t) {
		return
	}
	slot := &ts.ring[t%uint64(len(ts.ring))]
	w := &turnWaiter{ticket: t, ch: make(chan struct{}, 1)}
	if !slot.CompareAndSwap(nil, w) {
		ts.waitSpilled(w)
		return
	}
	if ts.due(t) && slot.CompareAndSwap(w, nil) {
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
	if ts.due(w.ticket) && ts.unspill(w.ticket) != nil {
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
// is parked.
func (ts *turnstile) pass(t uint64) { ts.advance(t+1, t+1) }

// passHeld ends the held turn of t, for a task its submitter admitted, and
// wakes t's own goroutine if it is parked: it finds its turn passed.
func (ts *turnstile) passHeld(t uint64) { ts.advance(t+1, t) }

// release lets go of the held turn of t, and wakes t's own goroutine if it
// is parked: the turn is now its own.
func (ts *turnstile) release(t uint64) { ts.advance(t, t) }

// advance stores served and wakes the waiter for ticket wake, if it is
// parked. A waiter found in wake's slot with another ticket (one that
// shares the slot) is left alone.
func (ts *turnstile) advance(served, wake uint64) {
	ts.served.Store(served)
	slot := &ts.ring[wake%uint64(len(ts.ring))]
	if w := slot.Load(); w != nil && w.ticket == wake && slot.CompareAndSwap(w, nil) {
		w.ch <- struct{}{}
		return
	}
	if ts.spilled.Load() > 0 {
		if w := ts.unspill(wake); w != nil {
			w.ch <- struct{}{}
		}
	}
}
