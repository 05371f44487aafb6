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

// Workers sets how many tasks may hold a worker at once, running or waiting
// for the limiter: runtime.GOMAXPROCS(0) by default, more for network calls,
// up to math.MaxInt (a worker costs only while held). It panics if n < 1.
func Workers(n int) Option {
	if n < 1 {
		panic(fmt.Sprintf("pool: Workers(%d): a pool needs at least 1 worker", n))
	}
	return func(c *config) { c.workers = n }
}

// CollectErrors makes a task's error leave the other tasks running: Wait
// then returns every error, in submission order, joined with errors.Join.
func CollectErrors() Option {
	return func(c *config) { c.collect = true }
}
