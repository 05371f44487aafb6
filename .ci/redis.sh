#!/usr/bin/env bash
# Starts the redis-server that ratelimit/redisbucket's tests use, installing
# it first if needed. Idempotent: a server already answering on the port is
# left alone. Prints nothing unless something fails. The tests find the
# server through DRIP_REDIS_ADDR=127.0.0.1:$port.
set -euo pipefail

port="${DRIP_REDIS_PORT:-6390}"

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		sudo="sudo"
	fi
	if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends redis-server; } >/tmp/redis-apt.log 2>&1; then
		cat /tmp/redis-apt.log >&2
		echo "redis.sh: apt-get could not install redis-server" >&2
		exit 1
	fi
fi

ping() { [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; }

if ping; then
	exit 0
fi

# No persistence: the tests need a scratch server, and a dump file would
# outlive the run.
if ! redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
	--daemonize yes --logfile /tmp/redis-"$port".log >/dev/null; then
	echo "redis.sh: redis-server did not start on port $port" >&2
	exit 1
fi

for _ in $(seq 100); do
	if ping; then
		exit 0
	fi
	sleep 0.1
done
echo "redis.sh: redis-server on 127.0.0.1:$port did not answer PING within 10s" >&2
cat /tmp/redis-"$port".log >&2 || true
exit 1
