package redisbucket

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dripgo/drip/internal/clocktest"
	"github.com/redis/go-redis/v9"
)

// holdHook lets a test order two calls: a command whose op is hold runs on
// the server, reports that on ran, and its reply reaches its caller only
// once a command whose op is after has been sent.
type holdHook struct {
	hold, after string
	ran, sent   chan struct{}
	ranOnce     sync.Once
	sentOnce    sync.Once
}

func hasOp(cmd redis.Cmder, op string) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && s == op {
			return true
		}
	}
	return false
}

func (h *holdHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if hasOp(cmd, h.after) {
			h.sentOnce.Do(func() { close(h.sent) })
			return next(ctx, cmd)
		}
		err := next(ctx, cmd)
		if hasOp(cmd, h.hold) {
			h.ranOnce.Do(func() { close(h.ran) })
			<-h.sent
		}
		return err
	}
}

func (h *holdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestOrdinaryGiveBackThenExpiry: no key is lost and the server's clock does
// not step. A Level call runs on the server while a reservation is in the
// bucket; the reservation is given back (its caller's context ends) while
// the Level's reply is on its way. The bucket then drains and its key
// expires, as any key does. A burst on the empty bucket must pass. When
// calls in flight together were ordered by their sends alone, the sighting
// kept the Level's end beside the give-back's, the script took the expired
// key for a lost one, and wrote it back full: every call refused for 10s.
func TestOrdinaryGiveBackThenExpiry(t *testing.T) {
	addr := redisAddr(t)
	clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
		admin := newClient(t, addr)
		key := testKey(t, admin)
		rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		t.Cleanup(func() { rdb.Close() })
		h := &holdHook{hold: "level", after: "cancel", ran: make(chan struct{}), sent: make(chan struct{})}
		rdb.AddHook(h)
		ctx := context.Background()

		// 100 units per 10s: a unit is 100ms.
		l := onMockTime(New(rdb, key, 100, 10*time.Second, WithClock(c)), c)
		if ok, err := l.TryAcquire(ctx, 5); !ok || err != nil {
			t.Fatalf("TryAcquire(5) = %v, %v; want true, nil", ok, err)
		}
		// A full burst now waits 500ms behind the 5 units: a reservation
		// that holds the bucket for 10.5s.
		actx, cancel := context.WithCancel(ctx)
		defer cancel()
		acquired := make(chan error, 1)
		go func() { acquired <- l.Acquire(actx, 100) }()
		c.Settle() // reserved, and sleeping until its turn
		leveled := make(chan error, 1)
		go func() {
			_, err := l.Level(ctx)
			leveled <- err
		}()
		<-h.ran
		c.Advance(time.Microsecond) // the server's TIME moves on between two scripts
		cancel()                    // the reservation goes back
		if err := <-acquired; !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire(100) = %v, want context.Canceled", err)
		}
		if err := <-leveled; err != nil {
			t.Fatalf("Level: %v", err)
		}
		// The 5 units drain by 0.5s, and the key expires: nothing was lost.
		// (The mock script keeps keys an hour; the test deletes it, as its
		// expiry would.)
		c.Advance(600 * time.Millisecond)
		if err := admin.Del(ctx, key).Err(); err != nil {
			t.Fatal(err)
		}
		if ok, err := l.TryAcquire(ctx, 100); !ok || err != nil {
			lvl, _ := l.Level(ctx)
			t.Fatalf("TryAcquire(100) on a bucket that drained and expired = %v, %v (the key is back, level %.1f); want true, nil", ok, err, lvl)
		}
	})
}
