package redisbucket

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dripgo/drip/ratelimit"
	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server that a test starts on a port of its own,
// so that it can stop and restart it without disturbing other tests.
type redisServer struct {
	t    *testing.T
	bin  string
	port int
	cmd  *exec.Cmd
}

// newRedisServer starts redis-server on a free loopback port, or skips
// (fails in CI) if there is no redis-server on PATH. It stops the server
// when the test ends.
func newRedisServer(t *testing.T) *redisServer {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if inCI() {
			t.Fatalf("redis-server is not on PATH: %v", err)
		}
		t.Skipf("redis-server is not on PATH: %v", err)
	}
	// A port below Linux's ephemeral range (32768 on): while the server is
	// down for a restart, no client connection can take its port as the
	// local end, which would keep it from binding again.
	s := &redisServer{t: t, bin: bin}
	for s.port == 0 {
		port := 20000 + rand.IntN(12000)
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			ln.Close()
			s.port = port
		}
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// start runs the server and waits until it answers, making sure that the
// server answering is the one it started: another process on the port
// (which a restart could find there) would make a test read another
// server's keys.
func (s *redisServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(s.port),
		"--save", "", "--appendonly", "no", "--loglevel", "warning")
	s.cmd.Stderr = os.Stderr // a failure to bind, say
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1})
	defer rdb.Close()
	pid := fmt.Sprintf("process_id:%d\r\n", s.cmd.Process.Pid)
	for range 200 {
		if info, err := rdb.Info(context.Background(), "server").Result(); err == nil {
			if !strings.Contains(info, pid) {
				s.t.Fatalf("the server answering on %s is not the redis-server this test started (pid %d)", s.addr(), s.cmd.Process.Pid)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s did not answer within 10s", s.addr())
}

// stop kills the server, as a crash would.
func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// tally counts the outcomes of calls made while Redis goes away.
type tally struct {
	ok, refused, unavailable, deadline atomic.Int64
	mu                                 sync.Mutex
	unexpected                         []error
}

func (ta *tally) add(ok bool, err error) {
	switch {
	case err == nil && ok:
		ta.ok.Add(1)
	case err == nil:
		ta.refused.Add(1)
	case errors.Is(err, ErrUnavailable):
		ta.unavailable.Add(1)
	case errors.Is(err, context.DeadlineExceeded):
		ta.deadline.Add(1)
	default:
		ta.mu.Lock()
		ta.unexpected = append(ta.unexpected, err)
		ta.mu.Unlock()
	}
}

// TestRedisRestart stops Redis while callers use it and starts it again:
// callers get ErrUnavailable (or the fallback) and never hang, a caller
// who had reserved its turn is admitted without Redis, and the limiters
// limit again once Redis is back (the callers stop first, so that the
// count after the restart is exact). The waits on the real clock here wait
// for the server and for the callers to notice; nothing is timed.
func TestRedisRestart(t *testing.T) {
	srv := newRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), ContextTimeoutEnabled: true, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	ctx := context.Background()

	plain := New(rdb, "plain", 10, time.Hour, WithTimeout(300*time.Millisecond))
	var mu sync.Mutex
	var switches []switchEvent
	fb := New(rdb, "fallback", 10, time.Hour, WithTimeout(300*time.Millisecond),
		WithProbeInterval(50*time.Millisecond),
		WithFallback(0.5, func(local bool, cause error) {
			mu.Lock()
			switches = append(switches, switchEvent{local, cause})
			mu.Unlock()
		}))
	switched := func() []switchEvent {
		mu.Lock()
		defer mu.Unlock()
		return append([]switchEvent(nil), switches...)
	}

	// A caller whose turn is reserved sleeps through the outage.
	sleeper := New(rdb, "sleeper", 1, 300*time.Millisecond)
	if err := sleeper.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	reserved := make(chan error, 1)
	go func() { reserved <- sleeper.Acquire(ctx, 1) }()
	for lv, _ := sleeper.Level(ctx); lv < 1.5; lv, _ = sleeper.Level(ctx) {
		time.Sleep(time.Millisecond) // until the reservation is in
	}

	var plainTally, fbTally tally
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				switch i {
				case 0:
					plainTally.add(plain.TryAcquire(cctx, 1))
				case 1:
					plainTally.add(true, plain.Acquire(cctx, 1))
				case 2:
					fbTally.add(fb.TryAcquire(cctx, 1))
				case 3:
					fbTally.add(true, fb.Acquire(cctx, 1))
				}
				cancel()
				time.Sleep(time.Millisecond) // refusals come fast: spare the CPU
			}
		})
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for range 1000 {
			if cond() {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("gave up waiting for %s", what)
	}

	waitUntil("calls while Redis is up", func() bool {
		return plainTally.ok.Load() >= 10 && plainTally.deadline.Load()+plainTally.refused.Load() > 0
	})
	srv.stop()
	if err := <-reserved; err != nil {
		t.Errorf("reserved caller: %v; want admitted at its turn, without Redis", err)
	}
	waitUntil("ErrUnavailable from the plain limiter", func() bool { return plainTally.unavailable.Load() >= 10 })
	waitUntil("the switch to the fallback", func() bool { return len(switched()) > 0 })
	close(stop)
	returns(t, wg.Wait)
	srv.start()
	waitUntil("the switch back to Redis", func() bool {
		_, err := fb.HasCapacity(ctx, 1) // the probe takes nothing
		return err == nil && len(switched()) > 1
	})

	t.Logf("plain: %d admitted, %d refused, %d deadline, %d unavailable", plainTally.ok.Load(), plainTally.refused.Load(), plainTally.deadline.Load(), plainTally.unavailable.Load())
	t.Logf("fallback: %d admitted, %d refused, %d deadline, %d unavailable", fbTally.ok.Load(), fbTally.refused.Load(), fbTally.deadline.Load(), fbTally.unavailable.Load())
	for _, err := range append(plainTally.unexpected, fbTally.unexpected...) {
		t.Errorf("unexpected error: %v", err)
	}
	if n := fbTally.unavailable.Load(); n != 0 {
		t.Errorf("the limiter with a fallback returned ErrUnavailable %d times; want 0", n)
	}
	if s := switched(); len(s) != 2 || !s[0].local || s[0].cause == nil || s[1].local || s[1].cause != nil {
		t.Errorf("switches %v; want one to local, with its cause, and one back", s)
	} else {
		t.Logf("switched to local because of: %v", s[0].cause)
	}

	// The restarted server kept nothing, but each limiter saw its bucket
	// full for the next hour: the first call writes it back full, and
	// nothing passes.
	for name, lim := range map[string]*Limiter{"plain": plain, "fallback": fb} {
		if ok, err := lim.TryAcquire(ctx, 1); ok || err != nil {
			t.Errorf("%s after the restart: TryAcquire(1) = %v, %v; want false, the bucket restored full", name, ok, err)
		}
	}
}

// TestStateLoss loses the key while callers hold reservations, by a flush
// and by a restart without persistence, and checks that no burst passes on
// top of them: the limiter that saw the bucket writes it back full, and
// behind the reservations it knows of. The periods are long, so that the
// checks hold however long the restart takes.
func TestStateLoss(t *testing.T) {
	for _, loss := range []string{"flush", "restart"} {
		t.Run(loss, func(t *testing.T) {
			srv := newRedisServer(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), ContextTimeoutEnabled: true})
			defer rdb.Close()
			ctx := context.Background()
			lim := New(rdb, "calls", 2, 2*time.Minute) // a unit a minute
			if ok, err := lim.TryAcquire(ctx, 2); !ok || err != nil {
				t.Fatalf("TryAcquire(2) = %v, %v", ok, err)
			}
			wctx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			defer func() {
				cancel()
				returns(t, wg.Wait)
			}()
			for range 3 { // turns at 1, 2 and 3 minutes
				wg.Go(func() {
					if err := lim.Acquire(wctx, 1); !errors.Is(err, context.Canceled) {
						t.Errorf("waiter returned %v; want context.Canceled when the test ends", err)
					}
				})
			}
			for lv, _ := lim.Level(ctx); lv < 4.5; lv, _ = lim.Level(ctx) {
				time.Sleep(time.Millisecond) // until the reservations are in
			}

			switch loss {
			case "flush":
				if err := rdb.FlushAll(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			case "restart":
				srv.stop()
				srv.start()
			}
			if n := rdb.Exists(ctx, "calls").Val(); n != 0 {
				t.Fatal("the key survived")
			}

			if ok, err := lim.TryAcquire(ctx, 0.001); ok || err != nil {
				t.Errorf("TryAcquire(0.001) after the %s = %v, %v; want false", loss, ok, err)
			}
			if lv, err := lim.Level(ctx); lv < 4.5 || err != nil {
				t.Errorf("Level after the %s = %v, %v; want about 5, as before it", loss, lv, err)
			}
			// A newcomer's turn comes after the three held ones, at 4
			// minutes: a deadline a minute later cannot be met.
			dctx, cancel2 := context.WithTimeout(ctx, time.Minute)
			defer cancel2()
			var de *ratelimit.DeadlineError
			if err := lim.Acquire(dctx, 1); !errors.As(err, &de) || de.Wait < 3*time.Minute {
				t.Errorf("Acquire after the %s = %v; want a DeadlineError with a wait past the 3 minutes the waiters hold", loss, err)
			}
		})
	}
}
