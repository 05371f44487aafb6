package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// table prints rows of figures, one column per library, with drip's figure
// divided by each other's beside it. It prints each figure as soon as it is
// measured, so that a section that takes a while shows its progress as it
// goes and the finished table is all that remains. For that, the widths of
// the columns are fixed when the table is made: a figure wider than its
// column pushes the rest of its row to the right.
type table struct {
	w     io.Writer
	width []int // of each column, the row names' first

	// The row being printed.
	format func(float64) string
	col    int     // the next cell's column
	drip   float64 // the row's first figure
	pad    int     // spaces owed before the next cell
}

// newTable prints the header of a table whose rows are named from names,
// with one column per label. The first column holds drip's figures,
// dripWidth wide; the others hold a figure and its ratio, peerWidth wide,
// or wider where their label is.
func newTable(w io.Writer, names []string, dripWidth, peerWidth int, labels ...string) *table {
	t := &table{w: w, width: make([]int, len(labels)+1)}
	for _, n := range names {
		t.width[0] = max(t.width[0], runes(n))
	}
	for i, l := range labels {
		t.width[i+1] = max(runes(l), peerWidth)
	}
	t.width[1] = max(runes(labels[0]), dripWidth)
	t.startRow("", nil)
	for _, l := range labels {
		t.write(l)
	}
	t.endRow()
	return t
}

// ratioRow prints a row named name, measuring its figures one column at a
// time: measure(i) is the figure for column i, in peers' order, drip's
// first; a negative one means the library has no such operation.
func (t *table) ratioRow(name string, format func(float64) string, measure func(i int) float64) {
	t.startRow(name, format)
	for i := range len(t.width) - 1 {
		t.cell(measure(i))
	}
	t.endRow()
}

func (t *table) startRow(name string, format func(float64) string) {
	t.format, t.col, t.pad = format, 0, 0
	fmt.Fprint(t.w, "   ")
	t.write(name)
}

// cell prints the row's next figure.
func (t *table) cell(v float64) {
	if t.col == 1 {
		t.drip = v
	}
	switch {
	case v < 0:
		t.write("n/a")
	case t.col == 1 || t.drip < 0 || v == 0:
		t.write(t.format(v))
	default:
		t.write(fmt.Sprintf("%s (%.2fx)", t.format(v), t.drip/v))
	}
}

func (t *table) endRow() {
	fmt.Fprintln(t.w)
}

// write prints s as the row's next cell, after the spaces that end the cell
// before it, so that no line ends in spaces.
func (t *table) write(s string) {
	fmt.Fprint(t.w, strings.Repeat(" ", t.pad)+s)
	t.pad = max(t.width[t.col]-runes(s), 0) + 2
	t.col++
}

func runes(s string) int { return len([]rune(s)) }

func flagSet(name, value string) error {
	return flag.Set(name, value)
}
