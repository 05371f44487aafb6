#!/usr/bin/env bash
# Starts the redis-server that ratelimit/redisbucket's tests use, on
# 127.0.0.1:${DRIP_REDIS_PORT:-6390}, installing it first with apt-get if
# needed. Idempotent: a server already answering on the port is left alone,
# and one it starts is left running (redis-cli -p PORT shutdown nosave stops
# it). Prints a line saying which it did. The tests find the server through
# DRIP_REDIS_ADDR=127.0.0.1:$port (.ci/test sets it).
set -euo pipefail

port="${DRIP_REDIS_PORT:-6390}"

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "redis.sh: redis-server is not installed, and there is no apt-get to install it with" >&2
		exit 1
	fi
	echo "== installing redis-server with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		sudo="sudo"
	fi
	# apt-get's own lines are the progress.
	if ! { $sudo apt-get -q update && $sudo apt-get -q install -y --no-install-recommends redis-server; }; then
		echo "redis.sh: apt-get could not install redis-server" >&2
		exit 1
	fi
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
		echo "redis.sh: apt-get installed redis-server, but redis-server or redis-cli is not on PATH" >&2
		exit 1
	fi
fi

ping() { [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]; }

if ping; then
	echo "== redis-server: already running on 127.0.0.1:$port"
	exit 0
fi

echo "== redis-server: starting on 127.0.0.1:$port, left running (redis-cli -p $port shutdown nosave stops it)"
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
