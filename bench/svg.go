package main

import (
	"fmt"
	"io"
	"time"
)

// plotAdmissions writes an SVG plot of cumulative admissions over time for
// each limiter, with the most a limiter may admit (burst + rate*t) as a
// dashed line.
func plotAdmissions(w io.Writer, title string, runs []namedRun, burst int, perSecond float64, d time.Duration) error {
	const (
		width, height = 720, 420
		left, right   = 70, 170
		top, bottom   = 40, 50
	)
	colors := []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"}
	maxY := float64(burst) + perSecond*d.Seconds()
	x := func(t float64) float64 { return left + t/d.Seconds()*(width-left-right) }
	y := func(n float64) float64 { return height - bottom - n/maxY*(height-top-bottom) }
	var b []byte
	add := func(format string, args ...any) { b = fmt.Appendf(b, format, args...) }
	add(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	add(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	add(`<text x="%d" y="22" font-size="14">%s</text>`+"\n", left, title)
	// Axes, with five ticks each.
	add(`<path d="M%d %d V%d H%d" stroke="black" fill="none"/>`+"\n", left, top, height-bottom, width-right)
	for i := 0; i <= 4; i++ {
		t := d.Seconds() * float64(i) / 4
		n := maxY * float64(i) / 4
		add(`<text x="%.1f" y="%d" text-anchor="middle">%.1f s</text>`+"\n", x(t), height-bottom+18, t)
		add(`<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, y(n)+4, n)
	}
	add(`<text x="%d" y="%d" text-anchor="middle">time</text>`+"\n", (width-right+left)/2, height-12)
	add(`<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">admitted</text>`+"\n", height/2, height/2)
	// The limit.
	add(`<path d="M%.1f %.1f L%.1f %.1f" stroke="black" stroke-dasharray="6 4" fill="none"/>`+"\n",
		x(0), y(float64(burst)), x(d.Seconds()), y(maxY))
	add(`<text x="%d" y="%d">- - limit</text>`+"\n", width-right+10, top+10)
	for i, r := range runs {
		color := colors[i%len(colors)]
		add(`<path fill="none" stroke="%s" stroke-width="1.5" d="`, color)
		// At most about 400 points a line.
		step := max(1, len(r.times)/400)
		add("M%.1f %.1f", x(0), y(0))
		for j := 0; j < len(r.times); j += step {
			add(" L%.1f %.1f", x(r.times[j].Seconds()), y(float64(j+1)))
		}
		if n := len(r.times); n > 0 {
			add(" L%.1f %.1f", x(r.times[n-1].Seconds()), y(float64(n)))
		}
		add(`"/>` + "\n")
		add(`<text x="%d" y="%d" fill="%s">%s</text>`+"\n", width-right+10, top+30+18*i, color, r.name)
	}
	add("</svg>\n")
	_, err := w.Write(b)
	return err
}

type namedRun struct {
	name string
	rateRun
}
