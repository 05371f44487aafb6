package pool

// Stats counts a pool's tasks, for progress reports. Every submitted task
// is in exactly one of Waiting, Running, Done, Failed and Skipped.
type Stats struct {
	// Submitted counts the tasks that Go and GoWeighted accepted, and those
	// TryGo accepted. A call still blocked waiting for a worker is not
	// counted yet.
	Submitted int
	// Waiting counts the tasks that hold a worker and wait for the limiter.
	Waiting int
	// Running counts the tasks that the limiter admitted and that have not
	// returned.
	Running int
	// Done counts the tasks that returned nil.
	Done int
	// Failed counts the tasks that returned an error or panicked, and
	// those whose weight the limiter refused.
	Failed int
	// Skipped counts the tasks that never started because the pool's
	// context ended first (or the limiter could not admit them before its
	// deadline). They took nothing from the limiter.
	Skipped int
}

// Stats returns the pool's counts. They are read one after another while
// tasks move on, so they may be a moment apart, but each is exact, none is
// negative, and after Wait they add up: Submitted = Done + Failed + Skipped.
func (p *Pool) Stats() Stats {
	// Each task increments the counters in the order submitted, admitted
	// or skipped, succeeded or failed; reading them in the reverse order
	// means a task seen in a later stage is also seen in the earlier ones.
	done := p.succeeded.Load()
	failed := p.failed.Load()
	admitted := p.admitted.Load()
	skipped := p.skipped.Load()
	submitted := p.submitted.Load()
	return Stats{
		Submitted: int(submitted),
		Waiting:   int(submitted - admitted - skipped),
		Running:   int(admitted - done - failed),
		Done:      int(done),
		Failed:    int(failed),
		Skipped:   int(skipped),
	}
}
