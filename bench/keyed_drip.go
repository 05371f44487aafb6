package main

import "github.com/dripgo/drip/ratelimit"

// drip's keyed limiter joins the keyed runs, first. Kept in a file of its
// own, so that a build without it (a //go:build line here) still has the
// other libraries' figures.
func init() {
	dripKeyed = &keyedPeer{"drip", "drip", true, func(c keyedConfig) keyedLimiter {
		var opts []ratelimit.KeyedOption
		if c.maxKeys > 0 {
			opts = append(opts, ratelimit.WithMaxKeys(c.maxKeys))
		}
		k := ratelimit.NewKeyed[string](c.maxRate, c.period, opts...)
		return keyedLimiter{try: func(key string) bool { return k.TryAcquire(key, 1) }}
	}}
}
