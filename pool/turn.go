package pool

import (
	"sync"
	"sync/atomic"
)

// turnstile puts the tasks that reach the limiter in submission order: their
// goroutines start in no particular order, and a limiter can only be fair to
// the order it is called in (TestStartOrder; TestDripSchedule counts the
// callers in the limiter; TestTurnstileOrder and TestTurnstileManyParked
// test the turnstile alone).
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
// and calls the limiter itself (TestTurnstileHold).
//
// The turn is an atomic word, and a count of the goroutines parked lets
// whoever passes the turn skip the mutex when there are none, so that a
// task that never waits costs a few atomic operations, not locks
// (BenchmarkTurns, pattern=held, against mutexTurns, a mutex around the
// turn). A goroutine that must wait parks in a map under a mutex, as in
// mutexTurns, and costs within a few percent of what it costs there
// (pattern=queued).
type turnstile struct {
	issued atomic.Uint64 // tickets handed out
	served atomic.Uint64 // the ticket whose turn it is, with held while a submitter holds it

	// parked holds, by ticket, the channels of the goroutines waiting for
	// their turn; nparked counts them.
	mu      sync.Mutex
	parked  map[uint64]chan struct{}
	nparked atomic.Int64
}

// held marks served while a submitter holds the turn of the ticket it
// stores.
const held = 1 << 63

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
// Once true, it stays true.
func (ts *turnstile) due(t uint64) bool {
	s := ts.served.Load()
	return s == t || s&^held > t
}

// wait blocks until ticket t is due. One goroutine at a time may wait for
// a ticket.
//
// A waiter counts itself parked before it rereads served, and a waker
// stores served before it reads the count: with Go's sequentially
// consistent atomics, at least one of them sees the other's write, so no
// wake-up is lost. Whichever of the two takes the waiter out of the map
// decides: the waiter returns, or the waker wakes it.
func (ts *turnstile) wait(t uint64) {
	if ts.due(t) {
		return
	}
	ch := make(chan struct{})
	ts.mu.Lock()
	if ts.parked == nil {
		ts.parked = make(map[uint64]chan struct{})
	}
	ts.parked[t] = ch
	ts.nparked.Add(1)
	ts.mu.Unlock()
	if ts.due(t) && ts.unpark(t) != nil {
		return
	}
	<-ch
}

// unpark takes the goroutine waiting for ticket t out of the map and
// returns its channel, or nil if it is not there.
func (ts *turnstile) unpark(t uint64) chan struct{} {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ch := ts.parked[t]
	if ch != nil {
		delete(ts.parked, t)
		ts.nparked.Add(-1)
	}
	return ch
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

// advance stores served and wakes the goroutine of ticket wake, if it is
// parked.
func (ts *turnstile) advance(served, wake uint64) {
	ts.served.Store(served)
	if ts.nparked.Load() > 0 {
		if ch := ts.unpark(wake); ch != nil {
			close(ch)
		}
	}
}
