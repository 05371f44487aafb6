module github.com/dripgo/drip/bench

go 1.26.0

replace github.com/dripgo/drip => ../

require (
	github.com/benbjohnson/clock v1.3.5
	github.com/dripgo/drip v0.0.0-00010101000000-000000000000
	github.com/juju/ratelimit v1.0.2
	github.com/sourcegraph/conc v0.3.0
	go.uber.org/ratelimit v0.3.1
	golang.org/x/sync v0.25.0
	golang.org/x/time v0.16.0
)

require (
	github.com/kr/text v0.2.0 // indirect
	go.uber.org/atomic v1.7.0 // indirect
	go.uber.org/multierr v1.9.0 // indirect
)
