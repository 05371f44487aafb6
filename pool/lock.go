package pool

import "sync/atomic"

// submitLock is a lock that costs one atomic add to take and one to
// release when no one else wants it, and that hands itself over through a
// channel when someone does. A goroutine waiting for it is durably blocked
// in a testing/synctest bubble, as it would not be on a sync.Mutex
// (TestSubmittersBlockDurably hangs with one). A plain channel of one token
// would be too, but costs more: BenchmarkSubmitLock, and BenchmarkPoolTask
// in bench/ is slower with it.
type submitLock struct {
	n       atomic.Int64  // the holder and those waiting
	handoff chan struct{} // the lock, passed from its holder to a waiter
}

func newSubmitLock() submitLock { return submitLock{handoff: make(chan struct{}, 1)} }

func (l *submitLock) lock() {
	if l.n.Add(1) > 1 {
		<-l.handoff
	}
}

// tryLock takes the lock if no one holds it, and reports whether it did.
func (l *submitLock) tryLock() bool { return l.n.CompareAndSwap(0, 1) }

// unlock releases the lock, or hands it to one of those waiting. The
// handoff never blocks: until the token is taken, no one else can unlock.
func (l *submitLock) unlock() {
	if l.n.Add(-1) > 0 {
		l.handoff <- struct{}{}
	}
}
