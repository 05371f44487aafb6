package main

import (
	"fmt"
	"io"
	"time"
)

// plotAdmissions writes an SVG plot, for each limiter, of how far its
// admissions ran ahead of the steady rate over time: admitted(t) - rate*t.
// The limit, burst + rate*t admitted, is the dashed line at burst: a
// limiter may touch it but never cross it, and the further below it a line
// runs, the more of the allowed rate it wasted.
func plotAdmissions(w io.Writer, title string, runs []namedRun, burst int, perSecond float64, d time.Duration) error {
	const (
		width, height = 760, 420
		left, right   = 70, 170
		top, bottom   = 40, 50
	)
	colors := []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"}
	ahead := func(i int, t time.Duration) float64 { return float64(i+1) - perSecond*t.Seconds() }
	lo, hi := 0.0, float64(burst)*1.25
	for _, r := range runs {
		for i, t := range r.times {
			lo = min(lo, ahead(i, t))
		}
	}
	lo -= float64(burst) * 0.1
	x := func(t float64) float64 { return left + t/d.Seconds()*(width-left-right) }
	y := func(v float64) float64 { return top + (hi-v)/(hi-lo)*(height-top-bottom) }
	var b []byte
	add := func(format string, args ...any) { b = fmt.Appendf(b, format, args...) }
	add(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	add(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	add(`<text x="%d" y="22" font-size="14">%s</text>`+"\n", left, title)
	add(`<path d="M%d %d V%d H%d" stroke="black" fill="none"/>`+"\n", left, top, height-bottom, width-right)
	for i := 0; i <= 4; i++ {
		t := d.Seconds() * float64(i) / 4
		v := lo + (hi-lo)*float64(i)/4
		add(`<text x="%.1f" y="%d" text-anchor="middle">%.3g s</text>`+"\n", x(t), height-bottom+18, t)
		add(`<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-6, y(v)+4, v)
	}
	add(`<text x="%d" y="%d" text-anchor="middle">time</text>`+"\n", (width-right+left)/2, height-12)
	add(`<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">admitted - %.0f/s x t</text>`+"\n",
		height/2, height/2, perSecond)
	add(`<path d="M%.1f %.1f H%.1f" stroke="black" stroke-dasharray="6 4" fill="none"/>`+"\n", x(0), y(float64(burst)), x(d.Seconds()))
	add(`<path d="M%.1f %.1f H%.1f" stroke="#bbb" fill="none"/>`+"\n", x(0), y(0), x(d.Seconds()))
	add(`<text x="%d" y="%d">- - the limit</text>`+"\n", width-right+10, top+10)
	for i, r := range runs {
		color := colors[i%len(colors)]
		add(`<path fill="none" stroke="%s" stroke-width="1.2" d="M%.1f %.1f`, color, x(0), y(0))
		step := max(1, len(r.times)/600)
		for j := 0; j < len(r.times); j += step {
			add(" L%.1f %.1f", x(r.times[j].Seconds()), y(ahead(j, r.times[j])))
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
