package main

import (
	"context"
	"hash/maphash"
	"math/rand/v2"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/didip/tollbooth/v8"
	"github.com/go-chi/httprate"
	"github.com/sethvargo/go-limiter/memorystore"
	"github.com/throttled/throttled/v2"
	throttledmem "github.com/throttled/throttled/v2/store/memstore"
	ulule "github.com/ulule/limiter/v3"
	ululemem "github.com/ulule/limiter/v3/drivers/store/memory"
	"golang.org/x/time/rate"
)

// Keyed limiters: a limiter per key (client IP, host, tenant), against the
// libraries that keep one for their users.

// A keyedConfig is the limit every key gets, the same for every library:
// maxRate units per period, in bursts of up to maxRate.
type keyedConfig struct {
	maxRate float64
	period  time.Duration
	// keys is how many distinct keys the run uses; a library whose store is
	// always bounded (throttled's LRU) is sized to hold them all.
	keys int
	// maxKeys, if > 0, caps the keys held by the libraries that have a cap.
	maxKeys int
}

var (
	// hotLimit admits every call on one key: a burst of 2^40 that refills
	// over a year, so that the bucket never fills up during a run, and, for
	// a limiter that drops a drained key, never drains between calls
	// either (a unit takes 29 µs to drain).
	hotLimit = keyedConfig{maxRate: 1 << 40, period: 365 * 24 * time.Hour}
	// spreadLimit admits every call of a run over many keys, and keeps
	// every key that was hit holding state for the run: a burst of 1000 a
	// key, one unit draining every 36 s.
	spreadLimit = keyedConfig{maxRate: 1000, period: 10 * time.Hour}
)

// floodCap is the cap on keys, for the libraries that have one, in the
// flood of distinct keys.
const floodCap = 100_000

// A keyedPeer is a library that keeps a limiter per key.
type keyedPeer struct {
	name  string // as in benchmark names
	label string // as in the report
	// capped says whether the library can bound the keys it holds.
	capped bool
	make   func(c keyedConfig) keyedLimiter
}

type keyedLimiter struct {
	// try takes one unit for key if it is there now.
	try func(key string) bool
	// close releases what the limiter holds (a goroutine), or is nil.
	close func()
}

func (l keyedLimiter) release() {
	if l.close != nil {
		l.close()
	}
}

// dripKeyed is drip's ratelimit.Keyed, when the build has it (see
// keyed_drip.go); nil otherwise.
var dripKeyed *keyedPeer

// keyedPeers returns the libraries, drip's first when the build has it.
func keyedPeers() []keyedPeer {
	if dripKeyed == nil {
		return otherKeyedPeers
	}
	return append([]keyedPeer{*dripKeyed}, otherKeyedPeers...)
}

var (
	// sethvargo/go-limiter's memorystore: a map of buckets, swept every 6
	// hours by a goroutine of its own (Close stops it).
	goLimiterPeer = keyedPeer{"golimiter", "go-limiter", false, func(c keyedConfig) keyedLimiter {
		store, err := memorystore.New(&memorystore.Config{Tokens: uint64(c.maxRate), Interval: c.period})
		if err != nil {
			panic(err)
		}
		ctx := context.Background()
		return keyedLimiter{
			try: func(key string) bool {
				_, _, _, ok, err := store.Take(ctx, key)
				return ok && err == nil
			},
			close: func() { _ = store.Close(ctx) },
		}
	}}
	// go-chi/httprate's RateLimiter on its default local counter (a
	// sliding window counter keyed by 64-bit hashes), asked through
	// OnLimit, its per-key check, with the response headers omitted.
	httpratePeer = keyedPeer{"httprate", "httprate", false, func(c keyedConfig) keyedLimiter {
		rl := httprate.NewRateLimiter(int(c.maxRate), c.period, httprate.WithResponseHeaders(httprate.ResponseHeaders{}))
		w := discardWriter{http.Header{}}
		r, err := http.NewRequest(http.MethodGet, "/", nil)
		if err != nil {
			panic(err)
		}
		return keyedLimiter{try: func(key string) bool { return !rl.OnLimit(w, r, key) }}
	}}
	// throttled's GCRA rate limiter on its memstore, bounded by an LRU of
	// maxKeys keys, or of as many keys as the run uses.
	throttledPeer = keyedPeer{"throttled", "throttled", true, func(c keyedConfig) keyedLimiter {
		size := c.maxKeys
		if size <= 0 {
			size = max(c.keys, 1)
		}
		rl := newThrottledGCRA(c, size)
		ctx := context.Background()
		return keyedLimiter{try: func(key string) bool {
			limited, _, err := rl.RateLimitCtx(ctx, key, 1)
			return !limited && err == nil
		}}
	}}
	// tollbooth's limiter, through LimitByKeys, with its default expiry of
	// token buckets (10 years).
	tollboothPeer = keyedPeer{"tollbooth", "tollbooth", false, func(c keyedConfig) keyedLimiter {
		lmt := tollbooth.NewLimiter(c.maxRate/c.period.Seconds(), nil)
		lmt.SetBurst(int(c.maxRate))
		return keyedLimiter{try: func(key string) bool { return tollbooth.LimitByKeys(lmt, []string{key}) == nil }}
	}}
	// ulule/limiter's memory store, whose goroutine deletes expired keys
	// every 30 s.
	ululePeer = keyedPeer{"ulule", "ulule/limiter", false, func(c keyedConfig) keyedLimiter {
		lim := ulule.New(ululemem.NewStore(), ulule.Rate{Period: c.period, Limit: int64(c.maxRate)})
		ctx := context.Background()
		return keyedLimiter{try: func(key string) bool {
			lc, err := lim.Get(ctx, key)
			return err == nil && !lc.Reached
		}}
	}}
	// The map of x/time/rate limiters that users write themselves, with no
	// eviction.
	rateMapPeer = keyedPeer{"ratemap", "map+x/time/rate", false, func(c keyedConfig) keyedLimiter {
		m := &rateMap{m: make(map[string]*rate.Limiter), r: rate.Limit(c.maxRate / c.period.Seconds()), b: int(c.maxRate)}
		return keyedLimiter{try: m.allow}
	}}
)

// newThrottledGCRA returns throttled's GCRA rate limiter for limit c on
// its memstore, an LRU of size keys.
func newThrottledGCRA(c keyedConfig, size int) *throttled.GCRARateLimiterCtx {
	store, err := throttledmem.NewCtx(size)
	if err != nil {
		panic(err)
	}
	n := int(c.maxRate)
	rl, err := throttled.NewGCRARateLimiterCtx(store, throttled.RateQuota{
		MaxRate: throttled.PerDuration(n, c.period), MaxBurst: n - 1,
	})
	if err != nil {
		panic(err)
	}
	return rl
}

// otherKeyedPeers are the libraries beside drip, in the report's order.
var otherKeyedPeers = []keyedPeer{goLimiterPeer, httpratePeer, throttledPeer, tollboothPeer, ululePeer, rateMapPeer}

// rateMap is the hand-rolled keyed limiter: a map of x/time/rate limiters
// under a mutex.
type rateMap struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
	r  rate.Limit
	b  int
}

func (m *rateMap) allow(key string) bool {
	m.mu.Lock()
	lim, ok := m.m[key]
	if !ok {
		lim = rate.NewLimiter(m.r, m.b)
		m.m[key] = lim
	}
	m.mu.Unlock()
	return lim.Allow()
}

// discardWriter is the http.ResponseWriter httprate's OnLimit sets its
// headers on (none, here).
type discardWriter struct{ h http.Header }

func (w discardWriter) Header() http.Header       { return w.h }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// ipKey returns the i-th of 2^24 distinct keys like "10.1.2.3".
func ipKey(i int) string {
	var buf [16]byte
	b := append(buf[:0], "10."...)
	b = strconv.AppendUint(b, uint64(i>>16&255), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(i>>8&255), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(i&255), 10)
	return string(b)
}

// keyedFloor returns a try for n keys that does, on each call, what every
// exact limiter must and nothing else: it hashes the key (hash/maphash, as
// drip does; a map of keys hashes them too), reads the monotonic clock
// once, to know how much has drained, and updates the key's state, one
// 64-bit word in a table with room for n keys at 16 bytes each (a 64-bit
// hash to tell keys apart, and the word), with one atomic add. It finds no
// key, stores no hash, checks nothing, and admits every call.
func keyedFloor(n int) func(string) bool {
	size := 2
	for size < 2*n {
		size *= 2
	}
	seed, base, state := maphash.MakeSeed(), time.Now(), make([]atomic.Int64, size)
	mask := uint64(size - 1)
	return func(key string) bool {
		state[maphash.String(seed, key)&mask].Add(int64(time.Since(base)))
		return true
	}
}

// maxSpreadKeys is the number of keys the benchmarks spread their calls
// over.
const maxSpreadKeys = 1_000_000

// spreadKeys are the keys ipKey(0) to ipKey(maxSpreadKeys-1), made once:
// the runs that use them never count them in a library's heap.
var spreadKeys = sync.OnceValue(func() []string {
	keys := make([]string, maxSpreadKeys)
	for i := range keys {
		keys[i] = ipKey(i)
	}
	return keys
})

// seqLen is the length of the sequence of random indexes that the runs
// over many keys walk through, so that drawing a random number costs them
// nothing: a read of the next element.
const seqLen = 1 << 22

// spreadSeq returns seqLen indexes drawn uniformly from [0, n), the same
// for every library.
func spreadSeq(n int) []uint32 {
	r := rand.New(rand.NewPCG(uint64(n), 11))
	seq := make([]uint32, seqLen)
	for i := range seq {
		seq[i] = uint32(r.IntN(n))
	}
	return seq
}

// tryKeys calls try n times, on keys chosen by walking seq from start, and
// returns how many it refused.
func tryKeys(try func(string) bool, keys []string, seq []uint32, start, n int) (refused int) {
	for i := range n {
		if !try(keys[seq[(start+i)&(seqLen-1)]]) {
			refused++
		}
	}
	return refused
}

// prefill makes a limiter of p with the spread limit for n keys and hits
// each of the first n keys once, and returns it with the heap it added per
// key, beyond the limiter when empty; the keys themselves were made before
// and are not counted.
func prefill(p keyedPeer, n int) (keyedLimiter, float64) {
	keys := spreadKeys()[:n]
	c := spreadLimit
	c.keys = n
	lim := p.make(c)
	before := heapInUse()
	for _, k := range keys {
		lim.try(k)
	}
	after := heapInUse()
	return lim, (float64(after) - float64(before)) / float64(n)
}

// floodResult is what a flood of distinct keys cost a library.
type floodResult struct {
	keys      int
	peakAlloc uint64 // the most HeapAlloc reached above the baseline, sampled every floodSample keys
	peakLive  uint64 // the most the last GC found live above the baseline, sampled likewise
	retained  uint64 // the heap still held once the flood ended, after a GC
	admitted  int
	took      time.Duration
}

const floodSample = 100_000

// flood hits n distinct keys once each on a limiter of p with the spread
// limit and cap keys at most, if the library has a cap; each key is made
// as the call is, so that what the library keeps of it counts.
func flood(p keyedPeer, n, maxKeys int) floodResult {
	c := spreadLimit
	c.keys, c.maxKeys = n, maxKeys
	lim := p.make(c)
	defer lim.release()
	base := heapInUse()
	var ms runtime.MemStats
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	r := floodResult{keys: n}
	sample := func() {
		runtime.ReadMemStats(&ms)
		metrics.Read(live)
		r.peakAlloc = max(r.peakAlloc, ms.HeapAlloc-min(ms.HeapAlloc, base))
		v := live[0].Value.Uint64()
		r.peakLive = max(r.peakLive, v-min(v, base))
	}
	start := time.Now()
	for i := range n {
		if i%floodSample == 0 {
			sample()
		}
		if lim.try(ipKey(i)) {
			r.admitted++
		}
	}
	r.took = time.Since(start)
	sample()
	after := heapInUse()
	r.retained = after - min(after, base)
	runtime.KeepAlive(lim.try)
	return r
}

// keyedSetup makes a limiter of p for a run on one hot key (n = 1), or on n
// keys, all of which it holds, and the sequence of indexes into spreadKeys
// that the run walks through.
func keyedSetup(p keyedPeer, n int) (keyedLimiter, []uint32) {
	if n == 1 {
		c := hotLimit
		c.keys = 1
		return p.make(c), make([]uint32, seqLen) // all key 0
	}
	lim, _ := prefill(p, n)
	return lim, spreadSeq(n)
}

// keyedBench measures try on the keys that seq picks, in one goroutine or
// in parallel, each goroutine walking seq from a random place. A call that
// try refuses shows as the refused/op metric: with the limits of these
// runs, there should be none.
func keyedBench(try func(string) bool, keys []string, seq []uint32, parallel bool) func(b *testing.B) {
	return func(b *testing.B) {
		b.ReportAllocs()
		var refused atomic.Int64
		if parallel {
			b.RunParallel(func(pb *testing.PB) {
				i, r := rand.IntN(seqLen), 0
				for pb.Next() {
					if !try(keys[seq[i&(seqLen-1)]]) {
						r++
					}
					i++
				}
				refused.Add(int64(r))
			})
		} else {
			i, r := rand.IntN(seqLen), 0
			for b.Loop() {
				if !try(keys[seq[i&(seqLen-1)]]) {
					r++
				}
				i++
			}
			refused.Add(int64(r))
		}
		if r := refused.Load(); r > 0 {
			b.ReportMetric(float64(r)/float64(b.N), "refused/op")
		}
	}
}
