// Package redisbucket is ratelimit's leaky bucket kept in Redis, so that
// every process of a fleet draws from the same bucket.
//
// When the replicas of a service call one API that allows 100 requests a
// minute, a limiter in each process lets through 100 per replica. A
// [Limiter] on a shared key lets through 100 in all:
//
//	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379", ContextTimeoutEnabled: true})
//	lim := redisbucket.New(rdb, "{partner-api}:calls", 100, time.Minute)
//	if err := lim.Acquire(ctx, 1); err != nil {
//		return err
//	}
//
// A [Keyed] keeps a bucket per key (per client, host or tenant), each in a
// Redis key of its own under a prefix, so that a fleet shares per-client
// limits rather than multiplying them by its replicas:
//
//	perClient := redisbucket.NewKeyed(rdb, "api:client:", 100, time.Minute)
//	if ok, err := perClient.TryAcquire(ctx, clientIP, 1); err != nil || !ok {
//		http.Error(w, "slow down", http.StatusTooManyRequests)
//		return
//	}
//
// Each key's bucket is a Limiter's, made on the spot for each call and
// expiring from Redis once it has drained, so that both Redis and the
// process hold only keys in use; [Keyed.Key] returns one key's Limiter,
// for pool and the throttle wrappers.
//
// [Keyed.Allow] and [Limiter.Allow] answer what an HTTP middleware asks,
// in the one round trip of TryAcquire: whether the amount was taken, and
// the bucket's state after it, as a [ratelimit.Decision]. A Decision with
// an Err says nothing of the rate: Redis failed (the Err wraps
// [ErrUnavailable]), or the amount can never fit.
//
//	d := perClient.Allow(ctx, clientIP, 1)
//	if d.Err != nil {
//		http.Error(w, "rate limit unavailable", http.StatusServiceUnavailable)
//		return
//	}
//	if !d.OK {
//		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.RetryAfter.Seconds()))))
//		http.Error(w, "slow down", http.StatusTooManyRequests)
//		return
//	}
//
// # The model
//
// The bucket is [ratelimit.Limiter]'s: it holds at most MaxRate units,
// drains at MaxRate units per Period, starts empty (so MaxRate units pass
// at once), and admits an amount when the level plus the amount is at most
// MaxRate. In any window of time of length t, it admits at most MaxRate +
// MaxRate*t/Period units. Pause and SetRate are ratelimit's too: a pause
// is kept as its end, before which nothing is admitted, and at which one
// unit fits at the rate in force then, whatever SetRate did in between,
// and then the steady rate. Amounts are float64s, and the errors are
// ratelimit's: [ratelimit.ErrExceedsCapacity], [ratelimit.ErrInvalidAmount],
// and a deadline that cannot be met fails at once with a
// *[ratelimit.DeadlineError], which says how long the wait would have been
// and unwraps to [context.DeadlineExceeded].
//
// The state is one number, the tat: the time at which the bucket will be
// empty. It lives in one Redis key of 56 bytes, beside the rate it was
// written at and the end of a pause in progress, and a Lua script moves it
// in one atomic step per call, reading the time from the server's TIME, so
// that the clocks of the clients never matter. TryAcquire, HasCapacity,
// Level, Pause and SetRate each make one round trip, and so does Acquire:
// it moves the tat past its own units, which reserves its turn, and then
// sleeps locally until that turn. Turns are thus given in the order in
// which the reservations reach Redis, whatever process they come from. The
// key expires when the bucket has drained, so an idle limiter costs
// nothing, and a key that was never written is an empty bucket.
//
// Times are whole nanoseconds, and every cost is rounded up to a whole
// number of them, so that no sequence of acquisitions slips through a
// rounding: a unit that takes a whole number of nanoseconds costs exactly
// that, as in ratelimit.Limiter, and any other cost at most a nanosecond
// more, so that an admission may come that much later than the exact
// schedule, never earlier. ratelimit.Limiter counts finer ticks; [New]
// panics on a rate whose unit takes less than a nanosecond. The script
// counts in float64s, exact to the nanosecond while the tat is within 2^53
// ns (about 104 days) of the key's time origin; beyond, as with long
// periods or turns reserved far ahead, every sum is rounded up to the next
// float64 (2, 4, 8 ns apart...), so that no cost is ever lost: there too
// an admission may come a few nanoseconds late, never early. The pause's
// end leaves room for one unit rounded down to a whole nanosecond, so
// that no more than one unit passes at it.
//
// # The server's clock
//
// The schedule follows the wall clock of the Redis host, as TIME reads it.
// If that clock steps (a manual change, NTP stepping rather than slewing,
// a failover to a replica whose clock differs), the schedule steps with
// it: a step back by s delays admissions by s; a step forward by s drains
// s's worth of units at once, so that up to that many more pass early, at
// most the units in the bucket and those that waiting callers hold. Turns
// already reserved are slept on the clients' clocks, and are not moved.
//
// # Lost state
//
// Redis may lose the key: a restart without persistence, FLUSHALL, an
// eviction under maxmemory, a failover to a replica that missed the last
// writes. Each Limiter remembers, from the last reply it had, until when
// the key holds the bucket and at what rate (the key itself lives a few
// milliseconds longer, so that its expiry is never taken for a loss). A
// reply replaces those received before its call was sent, whatever the
// server's time says; of calls in flight together, the reply of the later
// server time replaces the other. A call that finds the key missing before then
// writes it back full, and no emptier than the most of those: the units
// taken before the loss, also at a faster rate before a SetRate that
// slowed it, and the turns that callers waiting in this process or seen by
// it hold, still count, and no burst passes. The
// memory is each process's own (Redis, which lost the key, cannot keep
// it), so what may still pass beyond the rate after a loss is bounded by
// one burst (MaxRate units) plus the units that callers had reserved and
// not yet been admitted for: the burst only if the first call after the
// loss comes from a limiter that had not seen the bucket hold units (a
// process started since, or one that last saw the bucket drain), and the
// reserved units only those that the limiter making that call had not
// seen. With one process, or when the process that made the last
// reservation calls first, nothing passes beyond the rate but for the
// units of the calls in flight at the loss: a call whose reply had not
// come is in no memory yet (its process counts the turns it reserves
// while the bucket holds units, but not what it takes from a bucket that
// had drained), and a call built before another's reply came carries what
// was known then; and if the server's clock stepped back between two calls
// in flight together, the one from before the step, of the later time, is
// taken for the later state, and what the other took may pass again. A
// pause in
// progress ends with the loss of the key, but the bucket still comes back
// full. Coming back full errs on the strict side: a bucket that another
// process emptied sooner than this one saw (a reservation given back, a
// SetRate to a faster rate) and that expired may come back full once,
// under-using the rate for up to a period.
//
// # A worked example
//
// Take New(rdb, "{api}:calls", 4, 8*time.Second) in two processes, A and
// B: 4 units at once, then one every 2 seconds. At 0s, A takes 3 with
// TryAcquire and B takes 1 with Acquire, which returns at once: the bucket
// is full. Still at 0s, B calls Acquire(ctx, 1): the script reserves the
// unit that fits at 2s and B sleeps for 2 seconds, without Redis. At 0.5s,
// A calls Acquire(ctx, 1) and gets the turn after B's, at 4s; a TryAcquire
// from either process before then reports false, since the callers that
// wait come first. Level at 1s reports 5.5: the 3.5 units in the bucket and
// the 2 that B and A have reserved.
//
// If A's context is cancelled at 1s, its Acquire gives its reservation
// back, because no later call has changed the bucket: the next caller gets
// A's turn at 4s. Had B reserved after A, B's turn would have rested on
// A's, so A's units would stay in the bucket and drain unused: the rate is
// then under-used by them, never exceeded, and no caller loses its turn.
//
// # What differs from ratelimit.Limiter
//
// Every call that reads the bucket can fail, so the methods take a context
// and return an error. Level counts the units that waiting callers have
// reserved. SetRate rescales the bucket for everyone, but other processes
// keep their own rate and rescale it back when they call, so processes
// that share a key should share a rate. Within one process, a SetRate
// waits for the calls already on their way to Redis, and every call after
// it carries the new rate, also the give-back of a reservation made
// before it: no call rescales the bucket back to a rate that SetRate
// replaced. Across processes with different rates, the key is at the rate
// of the call that reached it last; each rescaling keeps the units, so
// the bucket's level is never lowered by it, but its drain follows
// whichever rate the latest caller carries. Callers who wait keep their
// turns when another process pauses the bucket or changes its rate.
//
// The units in the bucket survive any SetRate, however long they take to
// drain at the new rate, as ratelimit.Limiter's do, so that a SetRate
// there and back lets no more through than before it: ratelimit.Limiter
// keeps them as long as 2^62 ns, about 146 years, and this package as
// long as 10^292 years. What differs beyond 146 years: a turn reserved
// further ahead is slept for 146 years, Redis keeps the key for at most
// 317 years, and a limiter remembers that the key holds the bucket for at
// most 142 years (see Lost state).
//
// # Failures
//
// A round trip is bounded by the caller's context and by [WithTimeout]
// (one second by default). If Redis is down or slow, calls return an error
// that wraps [ErrUnavailable] and the cause. go-redis applies context
// deadlines to its sockets only with Options.ContextTimeoutEnabled, which
// is why the client above sets it; without it, the client's ReadTimeout
// bounds a round trip instead. With [WithFallback], a limiter admits
// through a local ratelimit.Limiter with its share of the rate while Redis
// is unreachable, tries Redis again once per [WithProbeInterval], and
// reports each switch. A limiter never panics on a Redis failure and never
// waits without bound: its only sleep is until a reserved turn, which ends,
// or until the caller's context does.
//
// Two more go-redis options matter here. A round trip that fails after the
// script ran (a reply lost to a timeout, or a command that go-redis
// retries, see Options.MaxRetries) may leave its units in the bucket
// without admitting anyone: here too the rate can only be under-used. A
// cancel that go-redis runs twice gives its reservation back once, and
// never another's: each reservation carries a random nonce, and only the
// one whose nonce the key holds can be given back. A reserve that go-redis
// runs again finds its own nonce in the key and adds nothing more; a
// cancel then gives back its units once, but not the reservation before
// it, whose units drain unused. And
// go-redis retries a refused connection Options.DialerRetries times (5 by
// default, 100ms apart), which delays the switch to the fallback.
package redisbucket
