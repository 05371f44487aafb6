package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"testing"
)

// keyedSizes are the amounts of work behind the keyed section's figures.
type keyedSizes struct {
	spread    int // keys the calls spread over, and held for heap per key
	flood     int // distinct keys in the flood
	floodCap  int // the cap in the flood, for the libraries that have one
	benchtime string
}

func (c config) keyedSizes() keyedSizes {
	switch {
	case c.smoke:
		return keyedSizes{2000, 3000, 1000, "2000x"}
	case c.long:
		return keyedSizes{maxSpreadKeys, 5_000_000, floodCap, "1s"}
	}
	return keyedSizes{200_000, 1_000_000, floodCap, "100ms"}
}

// keyedColumns returns the libraries of the keyed table, drip's first: nil
// when this build has no drip keyed limiter (see keyed_drip.go).
func keyedColumns() []*keyedPeer {
	cols := []*keyedPeer{dripKeyed}
	for _, p := range otherKeyedPeers {
		cols = append(cols, &p)
	}
	return cols
}

// keyedSection prints the keyed limiters' table: the report's section 5.
// It sets the benchmark time it uses, so it runs as well on its own as
// within report.
func keyedSection(w io.Writer, cfg config) error {
	ks := cfg.keyedSizes()
	if err := setBenchtime(ks.benchtime); err != nil {
		return err
	}
	cols := keyedColumns()
	var labels []string
	for i, p := range cols {
		if p == nil {
			labels = append(labels, "drip")
			continue
		}
		labels = append(labels, cols[i].label)
	}
	fmt.Fprintln(w, "5. a limiter per key, beside the libraries that keep one per key (every call admitted)")
	fmt.Fprintln(w)

	var (
		hotName         = "one hot key, serial"
		hotParName      = "one hot key, parallel"
		spreadName      = fmt.Sprintf("%s keys, uniform random, serial", thousands(ks.spread))
		spreadParName   = fmt.Sprintf("%s keys, uniform random, parallel", thousands(ks.spread))
		hotAllocName    = "allocations per call, one hot key"
		spreadAllocName = fmt.Sprintf("allocations per call, %s keys", thousands(ks.spread))
		heapName        = fmt.Sprintf("heap per live key (%s keys)", thousands(ks.spread))
		floodName       = fmt.Sprintf("flood of %s new keys: peak heap", thousands(ks.flood))
		retainedName    = "flood: heap still held after it"
		admittedName    = "flood: new keys admitted"
	)
	t := newTable(w, []string{hotName, hotParName, spreadName, spreadParName, hotAllocName, spreadAllocName,
		heapName, floodName, retainedName, admittedName}, 9, 15, labels...)
	ns := func(v float64) string { return fmt.Sprintf("%.1f ns", v) }
	// Allocations are rounded to the hundredth: what the benchmark's own
	// start leaves over its calls is no allocation of the library's.
	perOp := func(r testing.BenchmarkResult) (ns, allocs float64) {
		n := float64(max(r.N, 1))
		return float64(r.T.Nanoseconds()) / n, math.Round(float64(r.MemAllocs)/n*100) / 100
	}
	// Each row's figures come from runs that serve several rows: they are
	// kept for the rows after.
	n := len(cols)
	var (
		hotAllocs, spreadAllocs = make([]float64, n), make([]float64, n)
		spreadParNs, heap       = make([]float64, n), make([]float64, n)
		retained, admitted      = make([]float64, n), make([]float64, n)
	)
	row := func(name string, format func(float64) string, measure func(p keyedPeer, i int) float64) {
		t.ratioRow(name, format, func(i int) float64 {
			if cols[i] == nil {
				return -1
			}
			return measure(*cols[i], i)
		})
	}
	keys := spreadKeys()
	row(hotName, ns, func(p keyedPeer, i int) float64 {
		lim, seq := keyedSetup(p, 1)
		defer lim.release()
		v, a := perOp(testing.Benchmark(keyedBench(lim.try, keys, seq, false)))
		hotAllocs[i] = a
		return v
	})
	row(hotParName, ns, func(p keyedPeer, _ int) float64 {
		lim, seq := keyedSetup(p, 1)
		defer lim.release()
		v, _ := perOp(testing.Benchmark(keyedBench(lim.try, keys, seq, true)))
		return v
	})
	row(spreadName, ns, func(p keyedPeer, i int) float64 {
		lim, h := prefill(p, ks.spread)
		defer lim.release()
		heap[i] = h
		seq := spreadSeq(ks.spread)
		var v float64
		v, spreadAllocs[i] = perOp(testing.Benchmark(keyedBench(lim.try, keys, seq, false)))
		spreadParNs[i], _ = perOp(testing.Benchmark(keyedBench(lim.try, keys, seq, true)))
		runtime.KeepAlive(lim.try)
		return v
	})
	cached := func(vs []float64) func(keyedPeer, int) float64 {
		return func(_ keyedPeer, i int) float64 { return vs[i] }
	}
	row(spreadParName, ns, cached(spreadParNs))
	allocs := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	row(hotAllocName, allocs, cached(hotAllocs))
	row(spreadAllocName, allocs, cached(spreadAllocs))
	row(heapName, func(v float64) string { return fmt.Sprintf("%.0f B", v) }, cached(heap))
	mb := func(v float64) string { return fmt.Sprintf("%.0f MB", v) }
	row(floodName, mb, func(p keyedPeer, i int) float64 {
		r := flood(p, ks.flood, ks.floodCap)
		retained[i] = float64(r.retained) / 1e6
		admitted[i] = float64(r.admitted) / float64(r.keys) * 100
		return float64(r.peakAlloc) / 1e6
	})
	row(retainedName, mb, cached(retained))
	row(admittedName, func(v float64) string { return fmt.Sprintf("%.0f %%", v) }, cached(admitted))

	// The floor: the calls of the four time rows, on keyedFloor.
	var floor []string
	for _, c := range []struct {
		n        int
		parallel bool
	}{{1, false}, {1, true}, {ks.spread, false}, {ks.spread, true}} {
		seq := make([]uint32, seqLen)
		if c.n > 1 {
			seq = spreadSeq(c.n)
		}
		v, _ := perOp(testing.Benchmark(keyedBench(keyedFloor(c.n), keys, seq, c.parallel)))
		floor = append(floor, ns(v))
	}
	if dripKeyed == nil {
		fmt.Fprintln(w, "   drip: this build has no keyed limiter (keyed_drip.go adds it).")
	}
	fmt.Fprintf(w, "   The floor: what every exact limiter does on a call and nothing else (hash the key, read the\n")
	fmt.Fprintf(w, "   clock once, add to one word of state per key): one hot key %s serial, %s parallel;\n", floor[0], floor[1])
	fmt.Fprintf(w, "   %s keys %s serial, %s parallel.\n", thousands(ks.spread), floor[2], floor[3])
	fmt.Fprintf(w, "   Keys are strings like \"10.1.2.3\", made before the runs; heap per key leaves them out.\n")
	fmt.Fprintf(w, "   One hot key: a limit of 2^40 a year. Many keys: 1000 every 10 hours a key, so that\n")
	fmt.Fprintf(w, "   every key hit stays live through the run; each library holds all %s keys before the\n", thousands(ks.spread))
	fmt.Fprintf(w, "   timing starts, throttled's LRU sized for all of them. The flood hits each key once, the\n")
	fmt.Fprintf(w, "   keys made as it goes, with a cap of %s keys where the library has one (drip's\n", thousands(ks.floodCap))
	fmt.Fprintf(w, "   WithMaxKeys, which refuses new keys while every key held still holds state; throttled's\n")
	fmt.Fprintf(w, "   LRU, which drops the least recently used key, and its state); peak heap is HeapAlloc above\n")
	fmt.Fprintf(w, "   the baseline, garbage not yet collected included, read every %s keys. The benchmarks\n", thousands(floodSample))
	fmt.Fprintf(w, "   (go -C bench test -bench Keyed) and -long use %s keys and a flood of 5,000,000.\n", thousands(maxSpreadKeys))
	fmt.Fprintln(w)
	return nil
}

// thousands formats n with commas: 1,000,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
