// Package pool runs tasks on a bounded number of workers, each task starting
// only once a rate limiter admits it: errgroup and a limiter, glued together
// once.
//
// A [Pool] has [Workers] and a limiter (a [ratelimit.Acquirer]). Each task,
// in order:
//
//  1. takes a worker ([Pool.Go] blocks while all are taken: memory is bounded);
//  2. waits, holding it, for the limiter to admit it, in submission order;
//  3. runs, and gives the worker back when it returns.
//
// The pool stops when its context ends: when the parent context does, when a
// task returns an error (unless [CollectErrors]), or when a task panics. A
// task not yet admitted by then never starts, and takes nothing from the
// limiter. [Pool.Wait] waits for every task and returns the first error, as
// errgroup's Wait does (or every error, with CollectErrors); it raises a
// task's panic again in its caller.
//
// For example, 4 workers on ratelimit.New(4, 8*time.Second), which admits 4
// at once and then one every 2 s, and ten tasks submitted 10 ms apart:
//
//	p, ctx := pool.New(ctx, ratelimit.New(4, 8*time.Second), pool.Workers(4))
//	for i := range 10 {
//		p.Go(func(ctx context.Context) error { return drip(ctx, i) })
//		time.Sleep(10 * time.Millisecond)
//	}
//	err := p.Wait()
//
//	task            0     1     2     3     4     5     6     7     8     9
//	Go returns at   0     0.01  0.02  0.03  0.04  0.05  0.06  0.07  2     4
//	starts at       0     0.01  0.02  0.03  2     4     6     8     10    12
//
// Tasks 0 to 3 start at once. Tasks 4 to 7 take the four workers and wait
// for the limiter, in order. Go for task 8 waits for task 4's worker, at 2 s.
//
// [Map] and [ForEach] wrap a pool for the common loops. A task costs what
// errgroup's Go and x/time/rate's Wait do, or up to a quarter more (bench/).
package pool
