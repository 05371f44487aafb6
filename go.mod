module github.com/dripgo/drip

go 1.25.0

require (
	github.com/benbjohnson/clock v1.3.5
	golang.org/x/sync v0.22.0
)
