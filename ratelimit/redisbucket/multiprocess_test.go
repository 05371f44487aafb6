package redisbucket

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// childEnv, when set, makes the test binary a child of TestMultiProcess:
// it holds the path of the child's config, and TestMain runs runChild
// instead of the tests.
const childEnv = "DRIP_REDISBUCKET_CHILD"

type childConfig struct {
	Addr, Key string
	Workers   int
	Report    string // path of the childReport to write
}

type childReport struct {
	FirstSend int64   // when the child's first reservation left, UnixNano
	Admitted  []int64 // when each Acquire returned nil, UnixNano
	Errors    []string
}

// runChild is a process of TestMultiProcess. Once connected it prints
// "ready", reads the start and end of the run (UnixNano) from stdin, and
// from start to end its workers call Acquire(ctx, 1) in a loop on
// New(100, 1s); then it reports when each was admitted.
func runChild(path string) int {
	var cfg childConfig
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Addr, ContextTimeoutEnabled: true, PoolSize: cfg.Workers})
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	lim := New(rdb, cfg.Key, 100, time.Second)
	fmt.Println("ready")
	var start, end int64
	if _, err := fmt.Scan(&start, &end); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	time.Sleep(time.Until(time.Unix(0, start)))

	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, end))
	defer cancel()
	var mu sync.Mutex
	rep := childReport{FirstSend: time.Now().UnixNano()}
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Go(func() {
			for {
				err := lim.Acquire(ctx, 1)
				now := time.Now().UnixNano()
				mu.Lock()
				if err == nil {
					rep.Admitted = append(rep.Admitted, now)
				} else if !errors.Is(err, context.DeadlineExceeded) {
					rep.Errors = append(rep.Errors, err.Error())
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if b, err = json.Marshal(rep); err == nil {
		err = os.WriteFile(cfg.Report, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	return 0
}

// TestMultiProcess runs four processes (this test binary, re-executed) on
// one key of New(100, 1s) for 3 seconds of real time, and checks what they
// admitted together.
//
// The upper bound is the limiter's invariant and must hold exactly: the
// key starts empty, no reservation reached Redis before T0 (the earliest
// moment a child started calling), and each unit moves the tat by 10ms, so
// the k-th unit's turn is at T0 + (k-100)·10ms or later by the server's
// clock, and an admission is seen locally only after its turn. The slack
// of one unit covers the difference between the wall clock (Redis TIME)
// and the monotonic clock of the sleeps, which NTP may slew.
//
// The lower bound is 95% of the most the rate allows from T0 to the end.
// It holds on a busy machine because Acquire books turns ahead: with 64
// callers waiting, the schedule is reserved 640ms into the future, so the
// bucket only goes unused if no process gets to run for that long; and the
// burst of 100 is there from the start. The run starts once every child
// has started and connected, so that starting processes (slow under -race)
// do not starve the first ones.
func TestMultiProcess(t *testing.T) {
	addr := redisAddr(t)
	rdb := newClient(t, addr)
	key := testKey(t, rdb)
	const (
		procs   = 4
		workers = 16
		run     = 3 * time.Second
	)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmds := make([]*exec.Cmd, procs)
	stdins := make([]io.WriteCloser, procs)
	ready := make(chan error, procs)
	for i := range cmds {
		cfg := childConfig{Addr: addr, Key: key, Workers: workers,
			Report: filepath.Join(dir, fmt.Sprintf("report%d.json", i))}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("config%d.json", i))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err == nil {
			stdins[i], err = cmd.StdinPipe()
		}
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
		go func() {
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err == nil && line != "ready\n" {
				err = fmt.Errorf("child %d said %q", i, line)
			}
			ready <- err
			_, _ = io.Copy(io.Discard, stdout)
		}()
	}
	for range procs {
		if err := <-ready; err != nil {
			t.Fatalf("waiting for the children: %v", err)
		}
	}
	start := time.Now().Add(200 * time.Millisecond)
	end := start.Add(run)
	for _, w := range stdins {
		if _, err := fmt.Fprintln(w, start.UnixNano(), end.UnixNano()); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	var all []int64
	t0 := int64(0)
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		var rep childReport
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("report%d.json", i)))
		if err == nil {
			err = json.Unmarshal(b, &rep)
		}
		if err != nil {
			t.Fatalf("child %d report: %v", i, err)
		}
		for _, e := range rep.Errors {
			t.Errorf("child %d: %s", i, e)
		}
		if t0 == 0 || rep.FirstSend < t0 {
			t0 = rep.FirstSend
		}
		t.Logf("child %d admitted %d, started %v after the planned start", i, len(rep.Admitted), time.Duration(rep.FirstSend-start.UnixNano()))
		all = append(all, rep.Admitted...)
	}
	slices.Sort(all)

	unit := int64(10 * time.Millisecond)
	worst := int64(-1 << 62) // most admissions beyond the allowance, in units
	for i, at := range all {
		allowed := 100 + (at-t0)/unit
		worst = max(worst, int64(i+1)-allowed)
	}
	if worst > 1 {
		t.Errorf("admissions ran %d units ahead of 100 + 100/s from T0; at most 1 allowed", worst)
	}
	ideal := 100 + 100*time.Duration(end.UnixNano()-t0).Seconds()
	t.Logf("%d admitted in %v; the rate allows %.0f; closest to the limit: %d units beyond it", len(all), time.Duration(end.UnixNano()-t0), ideal, worst)
	if float64(len(all)) < 0.95*ideal {
		t.Errorf("%d admitted; want at least 95%% of %.0f", len(all), ideal)
	}
	if float64(len(all)) > ideal+1 {
		t.Errorf("%d admitted; want at most %.0f", len(all), ideal+1)
	}
}
