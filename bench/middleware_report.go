package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"testing"
)

// middlewareSection prints the HTTP middlewares' table: the report's
// section 7. It sets the benchmark time it uses, so it runs as well on its
// own as within report.
func middlewareSection(w io.Writer, cfg config) error {
	benchtime := "200ms"
	switch {
	case cfg.smoke:
		benchtime = "2000x"
	case cfg.long:
		benchtime = "1s"
	}
	if err := setBenchtime(benchtime); err != nil {
		return err
	}
	cols := middlewarePeers()
	labels := make([]string, len(cols))
	for i, p := range cols {
		labels[i] = p.label
	}
	if dripMiddleware == nil {
		labels = append([]string{"drip"}, labels...)
	}
	fmt.Fprintf(w, "7. HTTP middleware: a limit per client address, requests from %s addresses (every one admitted)\n", thousands(middlewareKeys))
	fmt.Fprintln(w)
	overName, allocName := "overhead per request", "allocations per request"
	t := newTable(w, []string{overName, allocName}, 9, 15, labels...)

	bare := medianPerRequest(middlewareBench(bareHandler))
	allocs := make([]float64, len(labels))
	t.ratioRow(overName, func(v float64) string { return fmt.Sprintf("%.0f ns", v) }, func(i int) float64 {
		if dripMiddleware == nil {
			if i == 0 {
				return -1
			}
			i--
		}
		p := cols[i]
		wrap, closeFn := p.make(middlewareLimit)
		if closeFn != nil {
			defer closeFn()
		}
		h := wrap(bareHandler)
		warmMiddleware(h)
		r := medianPerRequest(middlewareBench(h))
		allocs[i] = r.allocs - bare.allocs
		return r.ns - bare.ns
	})
	t.ratioRow(allocName, func(v float64) string { return fmt.Sprintf("%.1f", v) }, func(i int) float64 {
		if dripMiddleware == nil {
			if i == 0 {
				return -1
			}
			i--
		}
		return allocs[i]
	})
	line := "   Rate-limit headers on an admitted response:"
	for i, p := range cols {
		item := fmt.Sprintf(" %s, %s", p.label, p.headers)
		if i < len(cols)-1 {
			item += ";"
		} else {
			item += "."
		}
		if len(line)+len(item) > 100 {
			fmt.Fprintln(w, line)
			line = "  "
		}
		line += item
	}
	fmt.Fprintln(w, line)
	fmt.Fprintf(w, "   Overhead is the time and allocations of ServeHTTP through the middleware less those of the\n")
	fmt.Fprintf(w, "   handler alone (%.0f ns), the run of median time of 3, on a ResponseWriter whose header map\n", bare.ns)
	fmt.Fprintf(w, "   is cleared and reused, each library keying by RemoteAddr and holding every address before the\n")
	fmt.Fprintf(w, "   timing starts. go -C bench test -bench Middleware -count 10 and benchstat compare them better.\n")
	fmt.Fprintln(w)
	return nil
}

// medianPerRequest runs a benchmark three times and returns the run of
// median time: one run on a shared machine can be off by half.
func medianPerRequest(f func(*testing.B)) perRequestResult {
	var rs []perRequestResult
	for range 3 {
		rs = append(rs, perRequest(testing.Benchmark(f)))
	}
	slices.SortFunc(rs, func(a, b perRequestResult) int { return cmp.Compare(a.ns, b.ns) })
	return rs[1]
}

// perRequestResult is a benchmark's time and allocations per request.
type perRequestResult struct{ ns, allocs float64 }

func perRequest(r testing.BenchmarkResult) perRequestResult {
	n := float64(max(r.N, 1))
	return perRequestResult{float64(r.T.Nanoseconds()) / n, math.Round(float64(r.MemAllocs)/n*100) / 100}
}
