package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/dripgo/drip/ratelimit"
)

// dripTable runs aiolimiter's bursting example live on the real clock, with
// time divided by scale, and prints each task's admission, scaled back,
// beside the exact schedule.
func dripTable(w io.Writer, maxRate float64, period time.Duration, n int, exact []float64, scale float64) {
	fmt.Fprintf(w, "ratelimit.New(%v, %v): %d tasks arriving 10 ms apart (run live at 1/%v of the time)\n",
		maxRate, period, n, scale)
	lim := ratelimit.New(maxRate, time.Duration(float64(period)/scale))
	got := make([]time.Duration, n)
	start := time.Now()
	var wg sync.WaitGroup
	for id := range n {
		time.Sleep(time.Until(start.Add(time.Duration(float64(id) * float64(10*time.Millisecond) / scale))))
		admitted := make(chan struct{})
		queued := lim.Waiting()
		wg.Go(func() {
			if err := lim.Wait(context.Background()); err == nil {
				got[id] = time.Since(start)
			}
			close(admitted)
		})
		// The next task arrives only once this one is admitted or queued,
		// so that they queue in order at any scale.
		for lim.Waiting() == queued {
			select {
			case <-admitted:
			default:
				runtime.Gosched()
				continue
			}
			break
		}
	}
	wg.Wait()
	fmt.Fprintf(w, "  %-4s  %-12s  %-12s  %s\n", "task", "exact", "live", "live, late by (real time)")
	for id := range n {
		live := got[id].Seconds() * scale
		late := got[id] - time.Duration(exact[id]/scale*float64(time.Second))
		fmt.Fprintf(w, "  %2d:   Drip! %5.2f  Drip! %5.2f  %+.2f ms\n", id, exact[id], live, float64(late)/1e6)
	}
	fmt.Fprintln(w)
}
