package main

import (
	"context"
	"time"

	juju "github.com/juju/ratelimit"
	uber "go.uber.org/ratelimit"
	"golang.org/x/time/rate"

	"github.com/dripgo/drip/ratelimit"
)

// A peer is a rate limiter under comparison. Its methods are nil where the
// library has no such operation.
type peer struct {
	name  string // as in benchmark names
	label string // as in the report
	// make returns a limiter admitting perSecond units a second, in bursts
	// of up to burst, with its burst available.
	make func(perSecond float64, burst int) limiter
}

type limiter struct {
	// try takes one unit if it is there now.
	try func() bool
	// wait takes one unit, waiting for it; ctxAware says whether it honours
	// ctx (the others cannot be cancelled).
	wait     func(ctx context.Context) error
	ctxAware bool
	// waitN takes n units at once.
	waitN func(ctx context.Context, n int) error
}

var (
	dripPeer = peer{"drip", "drip", func(perSecond float64, burst int) limiter {
		lim := ratelimit.New(float64(burst), time.Duration(float64(burst)/perSecond*float64(time.Second)))
		return limiter{
			try:      func() bool { return lim.TryAcquire(1) },
			wait:     lim.Wait,
			ctxAware: true,
			waitN:    func(ctx context.Context, n int) error { return lim.Acquire(ctx, float64(n)) },
		}
	}}
	xratePeer = peer{"xrate", "x/time/rate", func(perSecond float64, burst int) limiter {
		lim := rate.NewLimiter(rate.Limit(perSecond), burst)
		return limiter{
			try:      lim.Allow,
			wait:     lim.Wait,
			ctxAware: true,
			waitN:    lim.WaitN,
		}
	}}
	uberPeer = peer{"uber", "uber-go/ratelimit", func(perSecond float64, burst int) limiter {
		lim := uber.New(int(perSecond), uber.WithSlack(burst))
		return limiter{
			wait: func(context.Context) error { lim.Take(); return nil },
		}
	}}
	jujuPeer = peer{"juju", "juju/ratelimit", func(perSecond float64, burst int) limiter {
		lim := juju.NewBucketWithRate(perSecond, int64(burst))
		return limiter{
			try:   func() bool { return lim.TakeAvailable(1) == 1 },
			wait:  func(context.Context) error { lim.Wait(1); return nil },
			waitN: func(_ context.Context, n int) error { lim.Wait(int64(n)); return nil },
		}
	}}
	peers = []peer{dripPeer, xratePeer, uberPeer, jujuPeer}
)
