package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestTableStreams checks that a table prints each figure as soon as it is
// measured, in columns fixed in advance, and that the finished table is
// aligned, with no line ending in spaces.
func TestTableStreams(t *testing.T) {
	var out strings.Builder
	tb := newTable(&out, []string{"one", "second"}, 9, 16, "drip", "peer", "other")
	ns := func(v float64) string { return fmt.Sprintf("%.1f ns", v) }
	figures := [][]float64{{10, 20, -1}, {2, 0, 12345678}}
	cells := [][]string{{"10.0 ns", "20.0 ns (0.50x)", "n/a"}, {"2.0 ns", "0.0 ns", "12345678.0 ns (0.00x)"}}
	for r, name := range []string{"one", "second"} {
		tb.ratioRow(name, ns, func(i int) float64 {
			if i > 0 && !strings.HasSuffix(out.String(), cells[r][i-1]) {
				t.Errorf("row %q: column %d measured before column %d was printed:\n%s", name, i, i-1, out.String())
			}
			return figures[r][i]
		})
	}
	want := "" +
		"           drip       peer              other\n" +
		"   one     10.0 ns    20.0 ns (0.50x)   n/a\n" +
		"   second  2.0 ns     0.0 ns            12345678.0 ns (0.00x)\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}
