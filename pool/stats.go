package pool

// Stats counts a pool's tasks. Each submitted task is in one of the others.
type Stats struct {
	Submitted int // given a worker (a Go still waiting for one is not counted)
	Waiting   int // holding a worker, waiting for the limiter
	Running   int // admitted, not returned
	Done      int // returned nil
	Failed    int // returned an error, panicked (or its limiter did), or had its weight refused
	Skipped   int // never started: the pool stopped, or its deadline was out of reach
}

// Stats returns the pool's counts, which may be a moment apart while tasks
// move on; after Wait, Submitted = Done + Failed + Skipped.
func (p *Pool) Stats() Stats {
	// Each task increments the counters in the order submitted, admitted
	// or skipped, succeeded or failed; reading them in the reverse order
	// means a task seen in a later stage is also seen in the earlier ones.
	done := p.succeeded.Load()
	failed := p.failed.Load()
	admitted := p.admitted.Load()
	skipped := p.skipped.Load()
	// A task's goroutine may count it admitted, even done, before its
	// submitter counts it submitted (TestPoolStatsTaskBeforeSubmitted).
	submitted := max(p.submitted.Load(), admitted+skipped)
	return Stats{
		Submitted: int(submitted),
		Waiting:   int(submitted - admitted - skipped),
		Running:   int(admitted - done - failed),
		Done:      int(done),
		Failed:    int(failed),
		Skipped:   int(skipped),
	}
}
