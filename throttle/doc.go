// Package throttle puts a rate limit on code that already exists: a
// function, an iterator, a channel or an HTTP client keeps its shape, and
// each call, value or request waits its turn in a limiter first.
//
// # The model
//
// A [Throttled] is a limiter (any [ratelimit.Acquirer], usually a
// [ratelimit.Limiter]) together with what each value costs: one unit by
// default, or what a function of the value says ([WithCost]), such as the
// bytes of an upload or the tokens of a prompt. Every wrapper does the same
// thing for each value, and nothing more: it acquires the value's cost,
// waiting as long as the limiter says, and then lets the value through. If
// the limiter refuses, because the context ended, because its deadline
// cannot be met, or because the cost is more than the limiter can ever hold,
// the value does not go through and the limiter's error comes back
// unchanged.
//
//   - [Func] wraps func(context.Context, A) (R, error) into a function with
//     the same signature that acquires the cost of its argument before
//     calling the original; on an error the original is not called.
//   - [Throttled.Seq] wraps an [iter.Seq] into an [iter.Seq2] of values and
//     errors: the values in order, each once admitted, and at most one error,
//     last, paired with the value that was not admitted.
//   - [Throttled.Chan] turns a receive channel into another that passes on
//     the values once admitted, with a function that tells why it closed.
//   - [NewTransport] wraps an [net/http.RoundTripper]: each request waits for
//     its cost, and a response that asks the client to back off pauses the
//     limiter, so that every goroutine sharing it backs off together (every
//     process, for a limiter kept in Redis): a 429 or 503 with Retry-After,
//     or a quota field (RateLimit, X-RateLimit-Remaining and the like) that
//     says nothing remains, until the quota resets. [AdoptPolicy] also sets
//     the limiter's rate to the server's RateLimit-Policy. It pauses
//     limiters that have a Pause method ([Pauser] or [ContextPauser]); see
//     [Transport]. With [PerHost], each host has a bucket of its own in a
//     [ratelimit.Keyed], and a pause stops that host alone.
//   - [Throttled.Wait] is that one step on its own, for code of another shape.
//
// Wrappers made from the same limiter share it: a Func, a Seq and a
// Transport on one Limiter together stay within its rate.
//
// # A worked example
//
// With ratelimit.New(4, 8*time.Second) the limiter holds 4 units and drains
// one every 2 seconds. Wrap a function and call it ten times, the callers
// arriving 10 ms apart:
//
//	lim := ratelimit.New(4, 8*time.Second)
//	fetch := throttle.Func(throttle.New[string](lim), fetchPage)
//	page, err := fetch(ctx, "https://example.com/") // ten such calls
//
// The first four run as they arrive, at 0, 0.01, 0.02 and 0.03 s; the
// bucket is then full, and the next six run as it drains, at 2, 4, 6, 8, 10
// and 12 s: the "Drip!" schedule of the limiter, now applied to fetchPage.
//
// Weights change what fills the bucket. For a model API that allows 10,000
// tokens a minute:
//
//	lim := ratelimit.New(10000, time.Minute)
//	th := throttle.New(lim, throttle.WithCost(func(p Prompt) float64 {
//		return float64(p.Tokens)
//	}))
//	for p, err := range th.Seq(ctx, prompts) {
//		if err != nil {
//			return err // p was not sent
//		}
//		send(p)
//	}
//
// A prompt of 4,000 tokens waits until 4,000 tokens' worth of room is free;
// a prompt of more than 10,000 tokens can never pass, and ends the loop at
// once with an error that wraps [ratelimit.ErrExceedsCapacity] rather than
// waiting forever.
//
// # Servers
//
// The other side of an HTTP API is a [Middleware]: it limits the requests
// a server takes, per client address by default, and answers those it
// refuses with 429 Too Many Requests, Retry-After and a problem+json body,
// with the RateLimit-Policy and RateLimit headers of the IETF draft on
// every response. It does not wait for room, as the wrappers above do,
// unless [WithMaxWait] lets it:
//
//	limits := ratelimit.NewKeyed[string](100, time.Minute, ratelimit.WithMaxKeys(1_000_000))
//	mw := throttle.NewMiddleware(throttle.PerKey(limits))
//	http.ListenAndServe(":8080", mw.Handler(mux))
//
// Each client then has a bucket of 100 requests that drains 100 a minute.
// [KeyByIP] reads X-Forwarded-For from trusted proxies only, [KeyByHeader]
// and [KeyBy] key by an API key or a user, [Global] holds the whole server
// to one limiter, and the Redis-backed redisbucket.Keyed is a [Limit] as
// it is, for a fleet of servers that share each client's bucket.
//
// # Cost
//
// The wrappers add little to the limiter's own cost: Seq and Func call the
// cost function (if any) and the limiter, which comes to a few nanoseconds
// per value beyond an Acquire that does not wait, and allocate nothing per
// value. Chan hands each value from one goroutine to another, which costs
// what two channel handoffs do, a few hundred nanoseconds. Transport reads a
// few headers of each response: about 60 ns when none is there, without
// allocating. A Middleware adds well under a microsecond and two
// allocations (the RateLimit value, and one array holding both fields'
// slices) to a request it admits.
package throttle
