package ratelimit

import (
	"iter"
	"math/bits"
)

// queue is the FIFO of blocked Acquire calls. It is a ring of slots in which
// every waiter keeps its place, numbered by a sequence number, so that a
// cancelled waiter is found in O(1) and leaves a tombstone there, and a
// waiter costs the limiter one slot and one channel: no node, no timer.
//
// The queue is guarded by Limiter.mu.
type queue struct {
	buf     []slot
	head    int    // index in buf of the slot numbered headSeq
	n       int    // slots in use, tombstones included
	headSeq uint64 // sequence number of the front slot
	live    int    // waiters still waiting
	costHi  uint64 // the sum of the live waiters' costs, in ticks,
	costLo  uint64 // as a 128-bit number: it cannot overflow
	// nearFull counts the live waiters whose cost is within a nanosecond
	// of the capacity: admitted on a whole nanosecond, they may find the
	// bucket empty, which the wait estimate must follow.
	nearFull int
	// nearAbove is the cost above which a waiter is near full: capacity
	// less a nanosecond's ticks, at the rate its cost was worked out at.
	nearAbove int64
	// tail is where the wait estimate left the queue, while nearFull > 0,
	// for tailP; a waiter that leaves other than admitted, or one
	// admitted late, makes it stale.
	tail   sim
	tailP  *params
	tailOK bool
}

type slot struct {
	// ch receives the waiter's one result: nil once admitted, or an error.
	// A nil ch marks a tombstone: the waiter left.
	ch     chan error
	amount float64
	cost   int64           // the ticks amount takes at the current rate
	done   <-chan struct{} // the waiter's ctx.Done(), nil if it has none
	w      *watcher        // the watcher of its context, if it shares one
}

// minShrink is the ring size above which an emptied queue frees its ring.
const minShrink = 1024

func (q *queue) empty() bool { return q.live == 0 }

// push appends a waiter and returns its sequence number and the channel on
// which it will get its result.
func (q *queue) push(amount float64, cost int64, done <-chan struct{}) (uint64, chan error) {
	if q.n == len(q.buf) {
		q.grow()
	}
	ch := make(chan error, 1)
	q.buf[(q.head+q.n)%len(q.buf)] = slot{ch: ch, amount: amount, cost: cost, done: done}
	seq := q.headSeq + uint64(q.n)
	q.n++
	q.live++
	q.add(&q.buf[(q.head+q.n-1)%len(q.buf)])
	return seq, ch
}

// add counts the live waiter in s in the sums.
func (q *queue) add(s *slot) {
	var carry uint64
	q.costLo, carry = bits.Add64(q.costLo, uint64(s.cost), 0)
	q.costHi += carry
	if s.cost > q.nearAbove {
		q.nearFull++
	}
}

// waiters yields the live waiters, front first. The queue must not change
// meanwhile.
func (q *queue) waiters() iter.Seq[*slot] {
	return func(yield func(*slot) bool) {
		for i := range q.n {
			if s := &q.buf[(q.head+i)%len(q.buf)]; s.ch != nil && !yield(s) {
				return
			}
		}
	}
}

func (q *queue) grow() {
	buf := make([]slot, max(16, 2*len(q.buf)))
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

// at returns the slot of waiter seq if it is still waiting, or nil. The
// pointer is valid until the next push.
func (q *queue) at(seq uint64) *slot {
	i := seq - q.headSeq
	if seq < q.headSeq || i >= uint64(q.n) {
		return nil
	}
	if s := &q.buf[(q.head+int(i))%len(q.buf)]; s.ch != nil {
		return s
	}
	return nil
}

// front returns the first waiter and its sequence number, dropping the
// tombstones before it, or nil if no one waits.
func (q *queue) front() (*slot, uint64) {
	for q.live > 0 {
		if s := &q.buf[q.head]; s.ch != nil {
			return s, q.headSeq
		}
		q.drop()
	}
	return nil, 0
}

// pop removes the front waiter, which front has just returned, handing it
// its result, and returns what its slot held.
func (q *queue) pop(err error) slot {
	s := q.buf[q.head]
	q.leave(&q.buf[q.head], err)
	q.drop()
	return s
}

// leave hands the waiter in s its result and turns s into a tombstone.
func (q *queue) leave(s *slot, err error) {
	if err != nil {
		q.tailOK = false
	}
	s.ch <- err
	s.ch, s.done, s.w = nil, nil, nil
	q.live--
	var borrow uint64
	q.costLo, borrow = bits.Sub64(q.costLo, uint64(s.cost), 0)
	q.costHi -= borrow
	if s.cost > q.nearAbove {
		q.nearFull--
	}
	if q.live == 0 {
		q.reset()
	}
}

// drop removes the front slot, a tombstone by now.
func (q *queue) drop() {
	if q.n == 0 {
		return // leave emptied the queue
	}
	q.buf[q.head] = slot{}
	q.head = (q.head + 1) % len(q.buf)
	q.headSeq++
	q.n--
}

// reset empties a queue left with tombstones only, so that a ring grown by
// a crowd of waiters is given back.
func (q *queue) reset() {
	q.headSeq += uint64(q.n)
	clear(q.buf)
	q.n, q.head, q.costHi, q.costLo, q.nearFull = 0, 0, 0, 0, 0
	q.tailOK = false
	if len(q.buf) > minShrink {
		q.buf = nil
	}
}
