package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// table prints rows of figures, one column per library, with drip's figure
// divided by each other's beside it.
type table struct {
	head []string
	rows [][]string
}

func newTable(first string, cols ...string) *table {
	return &table{head: append([]string{first}, cols...)}
}

// ratioRow adds a row; vals are in peers' order, drip's first, and a
// negative value means the library has no such operation.
func (t *table) ratioRow(name string, vals []float64, format func(float64) string) {
	row := []string{name}
	for i, v := range vals {
		switch {
		case v < 0:
			row = append(row, "n/a")
		case i == 0 || vals[0] < 0 || v == 0:
			row = append(row, format(v))
		default:
			row = append(row, fmt.Sprintf("%s (%.2fx)", format(v), vals[0]/v))
		}
	}
	t.rows = append(t.rows, row)
}

func (t *table) print(w io.Writer) {
	width := make([]int, len(t.head))
	for _, r := range append([][]string{t.head}, t.rows...) {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(r []string) {
		var b strings.Builder
		b.WriteString("   ")
		for i, c := range r {
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(t.head)
	for _, r := range t.rows {
		line(r)
	}
}

func flagSet(name, value string) error {
	return flag.Set(name, value)
}
