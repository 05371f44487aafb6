package main

import "testing"

// The HTTP middleware benchmarks: each library's middleware limiting per
// client address, requests from 10,000 addresses in turn, every one
// admitted, served on a recorder; impl=bare is the handler alone, so that
// a middleware's overhead is its figure less bare's:
//
//	go test -run '^$' -bench Middleware -benchmem -count 10 . > mw.txt
//	benchstat -col /impl mw.txt
func BenchmarkMiddleware(b *testing.B) {
	b.Run("impl=bare", middlewareBench(bareHandler))
	for _, p := range middlewarePeers() {
		b.Run("impl="+p.name, func(b *testing.B) {
			wrap, closeFn := p.make(middlewareLimit)
			if closeFn != nil {
				defer closeFn()
			}
			h := wrap(bareHandler)
			warmMiddleware(h)
			middlewareBench(h)(b)
		})
	}
}
