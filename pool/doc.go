// Package pool runs tasks on a bounded number of goroutines, each task
// starting only once a rate limiter admits it: the errgroup-plus-limiter
// glue that rate-limited clients otherwise write by hand, with the order,
// cancellation and panic handling done once.
//
// A pool is built on golang.org/x/sync/errgroup and keeps its contract: the
// tasks run on an errgroup.Group made by errgroup.WithContext and limited
// by SetLimit, the first error cancels the pool's context and is what Wait
// returns, and Go blocks while the limit is reached, as errgroup's Go does.
// On top of it the pool takes each task's weight from the limiter, in
// submission order, and adds collected errors, panics raised in the caller
// of Wait, and progress counts.
//
// # The model
//
// A [Pool] has a fixed number of workers ([Workers]) and a limiter (any
// [ratelimit.Acquirer], such as a [*ratelimit.Limiter]). A task takes a
// worker when it is submitted and keeps it until it returns:
//
//   - [Pool.Go] blocks while every worker is taken, so memory stays bounded
//     however many tasks a loop submits; [Pool.TryGo] does not block.
//   - With its worker, the task waits for the limiter, in submission order,
//     and runs once the limiter admits its weight (1 for Go, any for
//     [Pool.GoWeighted]).
//   - [Pool.Wait] waits for every task. The first error cancels the pool's
//     context and is what Wait returns, as with errgroup; [CollectErrors]
//     keeps the pool going and joins every error instead.
//
// Tasks that have not started when the context ends never start, and the
// capacity they waited for is never taken from the limiter; a failure
// cancels the pool before its task gives its worker back, so no task that
// gets that worker starts. As with errgroup, a Go that is waiting for a
// worker when the context ends goes on waiting until a task returns (tasks
// see their context end, and normally return at once); its task is then
// skipped. A task's panic is recovered, cancels the pool, and is raised
// again by Wait in the caller's goroutine as a [*PanicError] with the
// original value and stack. After Wait returns, nothing the pool started is
// running. [Pool.Stats] counts the tasks waiting, running and done, for
// progress reports.
//
// The limiter is required: New panics on a nil one rather than run
// unlimited. Misuse (Workers(0), a nil task, submitting after Wait)
// panics at the call, with a message that says what was wrong.
//
// [Map] and [ForEach] wrap a pool for the common loops: Map returns its
// results in input order; ForEach pulls an iter.Seq lazily, never more than
// Workers items ahead of the tasks that have finished.
//
// # A worked schedule
//
// Take a pool of 4 workers on ratelimit.New(4, 8*time.Second), which admits
// a burst of 4 and then one every 2 seconds, and ten short tasks submitted
// by one loop that calls Go every 10 ms:
//
//	lim := ratelimit.New(4, 8*time.Second)
//	p, ctx := pool.New(ctx, lim, pool.Workers(4))
//	for i := range 10 {
//		p.Go(func(ctx context.Context) error { return drip(ctx, i) })
//		time.Sleep(10 * time.Millisecond)
//	}
//	err := p.Wait()
//
// The tasks start on the seed schedule of aiolimiter's Drip! example:
//
//	task           0     1     2     3     4     5     6     7     8     9
//	Go returns at  0     0.01  0.02  0.03  0.04  0.05  0.06  0.07  2     4
//	starts at      0     0.01  0.02  0.03  2     4     6     8     10    12
//
// Tasks 0 to 3 use the limiter's burst and finish at once. Tasks 4 to 7
// take the four workers and wait for the limiter, in order. Go for task 8
// blocks until task 4 has run and given its worker back at 2 s; task 9's
// Go waits likewise until 4 s. Each task starts 2 s after the one before,
// as the limiter drains.
//
// # Cost
//
// When the limiter admits a task at once and no task waits before it, the
// submitting goroutine admits it with one call to the limiter's TryAcquire
// and passes its turn for it: the task then costs what errgroup's Go costs
// (a goroutine and a closure) plus the pool's own closure and a few atomic
// operations, about as much as errgroup.SetLimit with x/time/rate's Wait
// in each task written by hand (the bench module measures both, and conc's
// pool, side by side). Only tasks that must wait for the limiter go
// through the ordered queue, which costs them a goroutine hand-off when
// their turn comes.
package pool
