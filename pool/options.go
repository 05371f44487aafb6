package pool

import (
	"fmt"
	"runtime"
)

// An Option configures a Pool in New, Map or ForEach.
type Option func(*config)

type config struct {
	workers int
	collect bool
}

func newConfig(opts []Option) config {
	c := config{workers: runtime.GOMAXPROCS(0)}
	for _, opt := range opts {
		if opt != nil {
			opt(&c)
		}
	}
	return c
}

// Workers sets how many tasks may hold a worker at once: the tasks running
// plus those waiting for the limiter. The default is runtime.GOMAXPROCS(0),
// which suits CPU-bound tasks; tasks that wait on the network want more.
// A worker costs nothing until a task holds it, so a large n (up to
// math.MaxInt, for no bound but the limiter's) costs memory only for the
// tasks actually held. Workers panics if n < 1, since a pool with no worker
// would block forever.
func Workers(n int) Option {
	if n < 1 {
		panic(fmt.Sprintf("pool: Workers(%d): a pool needs at least 1 worker", n))
	}
	return func(c *config) { c.workers = n }
}

// CollectErrors makes a task's error leave the other tasks running: Wait
// then returns every error, joined with errors.Join in the order the tasks
// were submitted. By default the first error cancels the pool's context and
// is the one Wait returns, as with errgroup.
func CollectErrors() Option {
	return func(c *config) { c.collect = true }
}
