package main

import (
	"net/http"

	"github.com/dripgo/drip/ratelimit"
	"github.com/dripgo/drip/throttle"
)

// drip's middleware joins the middleware runs, first: a bucket per client
// address in a ratelimit.Keyed. Kept in a file of its own, so that a build
// without it (a //go:build line here) still has the other libraries'
// figures.
func init() {
	dripMiddleware = &middlewarePeer{"drip", "drip", "RateLimit, RateLimit-Policy", func(c keyedConfig) (func(http.Handler) http.Handler, func()) {
		k := ratelimit.NewKeyed[string](c.maxRate, c.period)
		return throttle.NewMiddleware(throttle.PerKey(k)).Handler, nil
	}}
}
