// Package ratelimit provides two rate limiters with the same methods and
// the same waiting guarantees: Limiter, a leaky bucket, the Go counterpart
// of Python's aiolimiter, with FIFO fairness, exact cancellation and a
// lock-free fast path; and Window, an exact sliding window, which admits at
// most MaxRate units in any window of time of length Period.
//
// # Which limiter?
//
//   - Limiter, the leaky bucket, spreads work smoothly: after a burst of up
//     to MaxRate units it admits one unit every Period/MaxRate. In a window
//     of length Period it may admit up to twice MaxRate (the burst, then
//     what drains meanwhile).
//   - Window is what an API means by "100 requests per 60 seconds": never
//     more than MaxRate in any window of length Period, so a client that
//     uses it is never answered 429 for going too fast. It admits in
//     bursts: MaxRate at once, then nothing until the first of them leaves
//     the window, a Period later.
//
// Ten callers that arrive 10 ms apart are admitted, in seconds, at
//
//	caller                          0     1     2     3     4     5     6     7     8     9
//	New(4, 8*time.Second)        0.00  0.01  0.02  0.03  2.00  4.00  6.00  8.00 10.00 12.00
//	NewWindow(4, 8*time.Second)  0.00  0.01  0.02  0.03  8.00  8.01  8.02  8.03 16.00 16.01
//
// Both are Acquirers, and pool and every throttle wrapper take either.
//
// # The model
//
// A Limiter is a bucket that holds at most MaxRate units and leaks
// continuously at MaxRate units per Period. An acquisition of amount units is
// admitted when level+amount <= MaxRate, and then adds amount to the level.
// A new limiter is empty, so the first MaxRate units pass at once (the
// burst); after that, units pass at the steady rate MaxRate/Period. So in
// any window of time of length t, a limiter admits at most
// MaxRate + MaxRate*t/Period units: New(20, time.Second) may admit 30 in
// half a second (the burst of 20, and the 10 that drain meanwhile), but
// never 31. That bound is exact: no rounding lets more through.
//
// For example, New(4, 8*time.Second) leaks one unit every 2 seconds. Ten
// callers that arrive 10 ms apart are admitted at
//
//	0, 0.01, 0.02, 0.03 s   the burst: the bucket fills up
//	2, 4, 6, 8, 10, 12 s    one more each time a unit has leaked out
//
// and New(1, 1500*time.Millisecond) admits one caller every 1.5 s, with no
// burst. Amounts are float64: a request may weigh 0.5 or 10 units, and a
// caller that needs 3 units waits only until 3 units of room have leaked,
// not for a whole period.
//
// # Using a Limiter
//
// Most callers want Acquire (or Wait, for one unit), which blocks until the
// caller is admitted or its context ends:
//
//	lim := ratelimit.New(100, time.Minute) // 100 a minute, in bursts of up to 100
//	if err := lim.Wait(ctx); err != nil {
//		return err
//	}
//
// TryAcquire takes capacity only if it is there now, and HasCapacity asks
// without taking. SetRate changes the rate at run time and Pause holds
// everyone back, for example on an HTTP 429 with Retry-After.
//
// # A limiter per key
//
// A [Keyed] is a bucket per key (a client's address or API key, a host, a
// tenant), each with a Limiter's contract, in one value:
//
//	limits := ratelimit.NewKeyed[string](10, time.Second) // 10 a second per client
//	if !limits.TryAcquire(clientIP, 1) {
//		// answer 429; Allow also says when to come back
//	}
//
// It holds a key only while its bucket has not drained (a 64-bit hash and a
// time, about 20 bytes), drops the others as calls come, with no goroutine,
// and can be capped ([WithMaxKeys]). [Keyed.Key] is one key's bucket as an
// [Acquirer], for the pool and throttle packages.
//
// # Guarantees
//
//   - Fairness: waiters are admitted strictly in arrival order, whatever
//     their amounts, so a large request is never starved by small ones (the
//     caveat aiolimiter documents). While anyone waits, TryAcquire and
//     HasCapacity report false, so no one jumps the queue.
//   - Cancellation loses nothing: a waiter whose context ends takes no
//     capacity, and those behind it move up as if it had never queued.
//   - Deadlines fail fast: if a context's deadline falls at or before the
//     time at which the caller would be admitted (it would get its units
//     with no time left to use them), Acquire returns at once with a
//     *DeadlineError, which unwraps to context.DeadlineExceeded and says
//     how long the wait would have been. A deadline after that time waits
//     and is met, unless SetRate or Pause push the admission back.
//   - Cost: a limiter with no waiters holds no goroutine and no timer; all
//     waiters share one timer. The fast path (TryAcquire, and Acquire when no
//     wait is needed) is one clock read and one compare-and-swap, with no
//     allocation.
//
// Time is kept in ticks of a fraction of a nanosecond (down to 1/1024 ns),
// chosen for each rate so that a unit costs a whole number of ticks where
// that is possible: then whole amounts cost exactly their share of the
// period, and a burst of MaxRate units fits exactly (New(3, time.Second)
// charges a third of a second a unit). Any cost that is not a whole number
// of ticks is rounded up, and the clock's reading down, so a limiter may
// admit a tick later than the exact model, never earlier. Clocks count
// whole nanoseconds, so a waiter is admitted on the first whole nanosecond
// at which it fits, and charged from then: a waiter that empties the
// bucket (its amount within a nanosecond's drain of MaxRate) may leave
// the queue behind it up to a nanosecond behind the exact model. The
// deadline check counts the queue the same way, to the nanosecond. New
// refuses rates it cannot count that way (a unit of no finite time, or of
// less than 1/1024 ns that is no whole number of ticks).
//
// SetRate keeps the units in the bucket, however long they take to drain
// at the new rate, and a Pause keeps its end; both may reach far beyond
// the ticks' range, and are kept in nanoseconds, up to about 146 years.
//
// # The window
//
// A Window admits an acquisition of amount units at time t when the units
// admitted in (t-Period, t], plus amount, are at most MaxRate; each
// admission frees its units exactly Period after it was admitted. It keeps
// a log of the admissions in the window, one entry each (16 bytes), or, with
// WithResolution(r), one per r of time at most, merging those that fall
// within r into the latest of their times: still never more than MaxRate in
// any window, at the price of admissions up to r later. Amounts are counted
// in fractions 2^-k of a unit, rounded up, k chosen for each MaxRate so that
// MaxRate units are just below 2^62 of them: whole amounts, and those with
// few binary digits after the point, are exact. After SetRate, the
// admissions made at each earlier rate count together in the new
// fractions, rounded up (exactly, for whole amounts, and whenever the new
// MaxRate is the lower); SetRate never rounds the admissions themselves,
// so a rate that goes down and up again finds them as they were. Every Limiter guarantee
// below holds for a Window too, except the lock-free fast path: a Window
// takes a mutex on every call, and its log moves with every admission.
//
// Pause on a Window admits nothing for its time, and then only the window
// rule applies: if nothing was admitted in the last Period, MaxRate units
// may pass at the end of the pause, as a windowed server has reset by then.
// SetRate keeps the admissions still in the window, and frees them at
// their admission time plus the new Period.
//
// # Clocks and tests
//
// The limiter reads time only through the clock.Clock it is given
// (WithClock), from New on, so tests can drive it with a mocked clock, or
// run it inside a testing/synctest bubble with the default clock. A
// limiter may be made anywhere, for example at package level, and used in
// any bubble, or in several bubbles in turn: the limiter keeps no timer
// while no one waits, and the one it makes for waiters belongs to the
// bubble they wait in.
//
// If the clock moves backwards (a bubble starts at its own time, or a
// clock.Mock is set to an earlier time), the limiter may get stricter,
// never looser: it keeps the bucket as it last saw it, and drains it from
// the new time on, so the units taken before the move still count.
package ratelimit
