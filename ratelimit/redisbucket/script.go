package redisbucket

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// bucketSource is the Lua script that reads and moves a bucket. Every change
// to a key goes through it, so that each operation is one atomic step at the
// server, timed by the server's clock.
//
// The key holds three big-endian float64s, packed by Lua's struct library
// (unpacking them costs the server less than parsing text): e, the server
// second that times are counted from; t, the tat (the time at which the
// bucket will be empty) in whole nanoseconds since e; and u, the number of
// nanoseconds per unit that t was written with. Times are counted from e
// rather than from 1970 so that they stay exact in Lua's float64 numbers: e
// moves forward once it is a day old. The key expires when the bucket has
// drained, and a missing key reads as an empty bucket.
//
// Arguments:
//
//	ARGV[1]  the operation: take, check, reserve, cancel, pause or level
//	ARGV[2]  the caller's nanoseconds per unit ("%.17g")
//	ARGV[3]  the caller's period in nanoseconds
//	ARGV[4]  take, check, reserve, cancel: the cost in nanoseconds;
//	         pause: the length of the pause in nanoseconds
//	ARGV[5]  reserve: the longest wait the caller accepts in nanoseconds, or
//	         -1 for no limit; cancel: the value its reservation stored
//
// A caller whose nanoseconds per unit differ from the key's first rescales
// the key to its own, keeping the level in units, as Limiter.SetRate does.
//
// Replies: take and check 1 or 0; reserve {1, wait, value} when it reserved
// (the wait may be <= 0: admitted now) or {0, wait} when the wait exceeds the
// limit; cancel 1 if it gave the reservation back; pause 1; level the level
// in units as a string, since Redis truncates Lua numbers to integers.
//
// The script calls TIME before writing, which Redis allows since 3.2 with
// effects replication (always on since 7.0). It is written for the server's
// time: string patterns, closures and extra tonumber calls each cost a
// measurable part of a call, so it does without them.
const bucketSource = `
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local op, u = ARGV[1], tonumber(ARGV[2])
local period, arg = tonumber(ARGV[3]), tonumber(ARGV[4])

local clock = redis.call('TIME')
local sec, usec = tonumber(clock[1]), tonumber(clock[2])

local cur = redis.call('GET', key)
local e, t, su = sec, 0, u
if cur then
  if #cur ~= 24 then
    return redis.error_reply('ERR redisbucket: key ' .. key .. ' does not hold a bucket')
  end
  e, t, su = struct.unpack('>ddd', cur)
end
local now = (sec - e) * 1e9 + usec * 1000
-- The key outlives the drain by up to this many milliseconds, since PX
-- counts whole ones.
local linger = 1

-- A reservation is given back only while the key still holds what it
-- stored: then no later change depends on it.
if op == 'cancel' then
  if cur ~= ARGV[5] then return 0 end
  t = t - arg
  if t > now then
    redis.call('SET', key, struct.pack('>ddd', e, t, su), 'PX', math.floor((t - now) / 1e6) + linger)
  else
    redis.call('DEL', key)
  end
  return 1
end

-- dirty says the bucket must be stored: it changed, or its epoch moved, or
-- it was rescaled to the caller's rate.
local dirty = false
if now >= 86400e9 then
  t = t - (sec - e) * 1e9
  e, now = sec, usec * 1000
  dirty = true
end
if su ~= u then
  if t > now then
    t = now + math.floor(math.min((t - now) / su * u + 0.5, 72057594037927936))
  end
  su, dirty = u, true
end

local res, v
if op == 'take' or op == 'check' then
  local tat = math.max(t, now) + arg
  res = 0
  if tat - now <= period then
    res = 1
    if op == 'take' then t, dirty = tat, true end
  end
elseif op == 'reserve' then
  local tat = math.max(t, now) + arg
  local wait = tat - period - now
  local limit = tonumber(ARGV[5])
  if wait > 0 and limit >= 0 and wait > limit then
    res = {0, wait}
  else
    t, dirty = tat, true
    res = {1, wait, ''}
  end
elseif op == 'pause' then
  local nt = now + period + arg
  if nt > t then t, dirty = nt, true end
  res = 1
elseif op == 'level' then
  res = string.format('%.17g', math.max(t - now, 0) / u)
else
  return redis.error_reply('ERR redisbucket: unknown operation ' .. tostring(op))
end
-- Store the bucket, or delete the key once the bucket has drained.
if dirty then
  if t > now then
    v = struct.pack('>ddd', e, t, su)
    redis.call('SET', key, v, 'PX', math.floor((t - now) / 1e6) + linger)
    if op == 'reserve' then res[3] = v end
  elseif cur then
    redis.call('DEL', key)
  end
end
return res
`

// The script's operations.
const (
	opTake    = "take"
	opCheck   = "check"
	opReserve = "reserve"
	opCancel  = "cancel"
	opPause   = "pause"
	opLevel   = "level"
)

var bucketScript = redis.NewScript(bucketSource)

// noLimit is the reserve argument for a caller without a deadline.
const noLimit = "-1"

// run runs the script on the limiter's key with the arguments of one
// operation, within ctx and the limiter's timeout: one round trip once the
// server has cached the script, two the first time.
func (l *Limiter) run(ctx context.Context, p *params, op string, args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	argv := make([]any, 0, 5+2)
	argv = append(argv, op, p.unit, p.periodArg)
	argv = append(argv, args...)
	if l.serverTime != nil {
		argv = append(argv, l.serverTime()...)
	}
	return l.script.Run(ctx, l.rdb, []string{l.key}, argv...).Result()
}

// reservation is the reply of a reserve.
type reservation struct {
	ok    bool
	wait  int64  // nanoseconds from the server's now to the caller's turn
	token string // the value it stored, for cancel; "" if none
}

// replyError reports a reply the limiter cannot read: Redis answered, so
// it is not unavailable, but not as the script does.
type replyError struct{ reply any }

func (e *replyError) Error() string { return fmt.Sprintf("unexpected reply %v", e.reply) }

func parseReservation(v any) (reservation, error) {
	s, ok := v.([]any)
	if !ok || len(s) < 2 {
		return reservation{}, &replyError{v}
	}
	status, ok1 := s[0].(int64)
	wait, ok2 := s[1].(int64)
	if !ok1 || !ok2 {
		return reservation{}, &replyError{v}
	}
	r := reservation{ok: status == 1, wait: wait}
	if r.ok && len(s) > 2 {
		r.token, _ = s[2].(string)
	}
	return r, nil
}

func parseBool(v any) (bool, error) {
	n, ok := v.(int64)
	if !ok {
		return false, &replyError{v}
	}
	return n == 1, nil
}

func parseLevel(v any) (float64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, &replyError{v}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, &replyError{v}
	}
	return f, nil
}
