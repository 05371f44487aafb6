package ratelimit

// queue is the FIFO of blocked Acquire calls. It is a ring of slots in which
// every waiter keeps its place, numbered by a sequence number, so that a
// cancelled waiter finds its slot in O(1) and leaves a tombstone there, and a
// waiter costs the limiter one slot and one channel: no node, no timer.
//
// The queue is guarded by Limiter.mu.
type queue struct {
	buf     []slot
	head    int     // index in buf of the slot numbered headSeq
	n       int     // slots in use, tombstones included
	headSeq uint64  // sequence number of the front slot
	live    int     // waiters still waiting
	sum     float64 // sum of the live waiters' amounts
}

type slot struct {
	// ch receives the waiter's result: nil once admitted, an error if it
	// can no longer be admitted. A nil ch marks a cancelled waiter.
	ch     chan error
	amount float64
}

// minShrink is the ring size above which an emptied queue frees its ring.
const minShrink = 1024

func (q *queue) empty() bool { return q.live == 0 }

// push appends a waiter for amount and returns its sequence number and the
// channel on which it will get its result.
func (q *queue) push(amount float64) (uint64, chan error) {
	if q.n == len(q.buf) {
		q.grow()
	}
	ch := make(chan error, 1)
	q.buf[(q.head+q.n)%len(q.buf)] = slot{ch: ch, amount: amount}
	seq := q.headSeq + uint64(q.n)
	q.n++
	q.live++
	q.sum += amount
	return seq, ch
}

func (q *queue) grow() {
	buf := make([]slot, max(16, 2*len(q.buf)))
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

// front returns the first live waiter, dropping the tombstones before it, or
// nil if no one waits.
func (q *queue) front() *slot {
	for q.live > 0 {
		s := &q.buf[q.head]
		if s.ch != nil {
			return s
		}
		q.drop()
	}
	return nil
}

// pop removes the front waiter, which front has just returned, and hands it
// its result.
func (q *queue) pop(err error) {
	s := &q.buf[q.head]
	s.ch <- err
	q.live--
	q.sum -= s.amount
	q.drop()
}

// drop removes the front slot, live or tombstone, and resets the queue once
// no one waits.
func (q *queue) drop() {
	q.buf[q.head] = slot{}
	q.head = (q.head + 1) % len(q.buf)
	q.headSeq++
	q.n--
	if q.live == 0 {
		q.reset()
	}
}

// reset empties a queue left with tombstones only, so that rounding in sum
// does not build up and a ring grown by a crowd of waiters is given back.
func (q *queue) reset() {
	q.headSeq += uint64(q.n)
	clear(q.buf)
	q.n, q.head, q.sum = 0, 0, 0
	if len(q.buf) > minShrink {
		q.buf = nil
	}
}

// cancel turns the waiter seq into a tombstone if it is still waiting on ch,
// and reports whether it was and whether it stood at the front.
func (q *queue) cancel(seq uint64, ch chan error) (cancelled, wasFront bool) {
	i := seq - q.headSeq
	if seq < q.headSeq || i >= uint64(q.n) {
		return false, false
	}
	s := &q.buf[(q.head+int(i))%len(q.buf)]
	if s.ch != ch {
		return false, false
	}
	s.ch = nil
	q.live--
	q.sum -= s.amount
	if q.live == 0 {
		q.reset()
		return true, true
	}
	return true, i == 0
}
