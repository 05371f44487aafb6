package pool

import (
	"testing"
	"testing/synctest"
)

// TestTurnstileHold checks the submitter's hold on a turn: the held
// ticket's goroutine waits until the hold ends, and then finds its turn
// passed (passHeld) or its own (release); a ticket with another before it
// cannot be held; and holding a later ticket leaves an earlier one due, so
// that its goroutine, parked or not, still goes on.
func TestTurnstileHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ts turnstile
		// started waits for ticket tk on a new goroutine, and returns a
		// channel closed when the wait returns.
		started := func(tk uint64) chan struct{} {
			done := make(chan struct{})
			go func() {
				ts.wait(tk)
				close(done)
			}()
			return done
		}
		returned := func(done chan struct{}) bool {
			synctest.Wait()
			select {
			case <-done:
				return true
			default:
				return false
			}
		}

		a := ts.take()
		if !ts.hold(a) {
			t.Fatal("hold refused with no ticket outstanding before it")
		}
		done := started(a)
		if returned(done) {
			t.Fatal("wait returned while its turn was held")
		}
		ts.passHeld(a)
		if !returned(done) || !ts.passed(a) {
			t.Fatalf("after passHeld: wait returned %v, passed %v; want both", returned(done), ts.passed(a))
		}

		b := ts.take()
		if !ts.hold(b) {
			t.Fatal("hold refused after every ticket before it passed")
		}
		// The earlier ticket stays due while b is held.
		if !returned(started(a)) {
			t.Fatal("holding a later ticket kept an earlier one waiting")
		}
		done = started(b)
		if returned(done) {
			t.Fatal("wait returned while its turn was held")
		}
		ts.release(b)
		if !returned(done) || ts.passed(b) || !ts.head(b) {
			t.Fatalf("after release: wait returned %v, passed %v, head %v; want true, false, true", returned(done), ts.passed(b), ts.head(b))
		}

		c := ts.take()
		if ts.hold(c) {
			t.Fatal("hold succeeded while ticket b held the turn")
		}
		done = started(c)
		ts.pass(b)
		if !returned(done) || !ts.head(c) {
			t.Fatal("the ticket after a released one did not get its turn")
		}
		ts.pass(c)

		d := ts.take()
		if !ts.hold(d) {
			t.Fatal("hold refused with no ticket outstanding before it")
		}
		ts.untake(d, true)
		if e := ts.take(); e != d || !ts.head(e) {
			t.Fatalf("after untake: took ticket %d (head %v), want %d, at its turn", e, ts.head(e), d)
		}
	})
}
