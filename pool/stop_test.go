package pool

import (
	"context"
	"errors"
	"testing"

	"github.com/dripgo/drip/ratelimit"
)

// refuser is a limiter with TryAcquire that admits nothing at once and
// answers Acquire with err, or panics with it if panicky.
type refuser struct {
	err     error
	panicky bool
}

func (r refuser) TryAcquire(float64) bool { return false }

func (r refuser) Acquire(context.Context, float64) error {
	if r.panicky {
		panic(r.err)
	}
	return r.err
}

// TestStopBeforeTurnPasses checks the order that keeps the task behind a
// failed one from reaching the limiter: a task that fails before it runs
// (its weight refused, or the limiter panicking) cancels the pool's
// context while it still holds its turn, so the next ticket, whose turn
// comes after, finds the pool stopped.
func TestStopBeforeTurnPasses(t *testing.T) {
	bad := errors.New("bad")
	for _, tt := range []struct {
		name string
		lim  ratelimit.Acquirer
	}{{"limiter refuses", refuser{err: bad}}, {"limiter panics", refuser{err: bad, panicky: true}}} {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := New(context.Background(), tt.lim, Workers(1))
			cancel := p.cancel
			passed := make(chan bool, 1)
			p.cancel = func(cause error) {
				select {
				case passed <- p.turns.passed(0):
				default:
				}
				cancel(cause)
			}
			ran := false
			p.Go(func(context.Context) error { ran = true; return nil })
			func() {
				defer func() { _ = recover() }()
				_ = p.Wait()
			}()
			select {
			case early := <-passed:
				if early {
					t.Error("the task passed its turn before it cancelled the pool")
				}
			default:
				t.Error("the task did not cancel the pool")
			}
			if ran {
				t.Error("the task ran")
			}
		})
	}
}
