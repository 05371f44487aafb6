package pool

import (
	"fmt"
	"sync"
	"testing"
)

// The plain alternatives to the pool's own synchronisation, kept here so
// that the benchmarks below can show what each of the pool's own buys.

// mutexTurns is the turnstile's baseline: a mutex around the turn, and a
// map of parked goroutines, each woken by closing its channel.
type mutexTurns struct {
	mu      sync.Mutex
	issued  uint64
	served  uint64
	holding bool
	parked  map[uint64]chan struct{}
}

func (m *mutexTurns) take() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.issued++
	return m.issued - 1
}

func (m *mutexTurns) hold(t uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.holding = m.served == t
	return m.holding
}

func (m *mutexTurns) passed(t uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.served > t
}

func (m *mutexTurns) wait(t uint64) {
	m.mu.Lock()
	if m.served > t || m.served == t && !m.holding {
		m.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	if m.parked == nil {
		m.parked = make(map[uint64]chan struct{})
	}
	m.parked[t] = ch
	m.mu.Unlock()
	<-ch
}

func (m *mutexTurns) pass(t uint64)     { m.advance(t+1, t+1) }
func (m *mutexTurns) passHeld(t uint64) { m.advance(t+1, t) }

func (m *mutexTurns) advance(served, wake uint64) {
	m.mu.Lock()
	m.served, m.holding = served, false
	ch := m.parked[wake]
	delete(m.parked, wake)
	m.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

type turns interface {
	take() uint64
	hold(t uint64) bool
	passed(t uint64) bool
	wait(t uint64)
	pass(t uint64)
	passHeld(t uint64)
}

var turnImpls = []struct {
	name string
	make func(workers int) turns
}{
	{"turnstile", func(int) turns { return new(turnstile) }},
	{"mutex", func(int) turns { return &mutexTurns{} }},
}

// BenchmarkTurns times a ticket's way through the turns, the turnstile's
// against mutexTurns'. With pattern=queued, as for a pool's tasks that
// wait for a limiter: a ticket is taken before a worker (a slot of a
// semaphore), and the task's goroutine, started in no particular order,
// waits for its turn and passes it. With pattern=held, as for every task
// of a pool whose limiter admits at once: the submitter takes and holds
// the turn, then passes it, and the task's goroutine (here the same one)
// finds it passed.
func BenchmarkTurns(b *testing.B) {
	for _, impl := range turnImpls {
		b.Run("pattern=held/impl="+impl.name, func(b *testing.B) {
			ts := impl.make(8)
			for b.Loop() {
				t := ts.take()
				if !ts.hold(t) {
					b.Fatal("hold refused")
				}
				ts.passHeld(t)
				ts.wait(t)
				if !ts.passed(t) {
					b.Fatal("turn not passed")
				}
			}
		})
	}
	for _, workers := range []int{8, 64} {
		for _, impl := range turnImpls {
			b.Run(fmt.Sprintf("pattern=queued/workers=%d/impl=%s", workers, impl.name), func(b *testing.B) {
				ts := impl.make(workers)
				sem := make(chan struct{}, workers)
				var wg sync.WaitGroup
				for b.Loop() {
					t := ts.take()
					sem <- struct{}{}
					wg.Go(func() {
						ts.wait(t)
						ts.pass(t)
						<-sem
					})
				}
				wg.Wait()
			})
		}
	}
}

// chanLock is submitLock's baseline: a channel of one token, which a
// synctest bubble, like submitLock, sees as durably blocking (a sync.Mutex
// it does not, so TestSubmittersBlockDurably hangs with one).
type chanLock chan struct{}

func (l chanLock) lock()   { l <- struct{}{} }
func (l chanLock) unlock() { <-l }

// BenchmarkSubmitLock times a lock and an unlock, uncontended, as a pool
// with one submitter takes them for every task: submitLock against
// chanLock.
func BenchmarkSubmitLock(b *testing.B) {
	b.Run("impl=submitLock", func(b *testing.B) {
		l := newSubmitLock()
		for b.Loop() {
			l.lock()
			l.unlock()
		}
	})
	b.Run("impl=chan", func(b *testing.B) {
		l := make(chanLock, 1)
		for b.Loop() {
			l.lock()
			l.unlock()
		}
	})
}
