module github.com/dripgo/drip/ratelimit/redisbucket

go 1.25.0

replace github.com/dripgo/drip => ../..

require (
	github.com/benbjohnson/clock v1.3.5
	github.com/dripgo/drip v0.0.0-00010101000000-000000000000
	github.com/go-redis/redis_rate/v10 v10.0.1
	github.com/redis/go-redis/v9 v9.17.3
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgryski/go-rendezvous v0.0.0-20200823014737-9f7001d12a5f // indirect
)
