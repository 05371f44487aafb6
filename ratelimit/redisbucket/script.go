package redisbucket

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// bucketSource is the Lua script that reads and moves a bucket. Every change
// to a key goes through it, so that each operation is one atomic step at the
// server, timed by the server's clock.
//
// The key holds seven big-endian float64s, packed by Lua's struct library
// (unpacking them costs the server less than parsing text): e, the server
// second that times are counted from; t, the tat (the time at which the
// bucket will be empty) in whole nanoseconds since e; su and sp, the
// nanoseconds per unit and the period that the bucket was written with
// (its rate); pause, the end of the pause in progress in nanoseconds since
// e, or 0; r, the nanoseconds (at su) of the turns reserved during that
// pause; and n, the nonce of the reservation that the bucket rests on
// last, or 0 if it rests on another operation. Times are counted from e
// rather than from 1970 so that they stay exact in Lua's float64 numbers:
// e moves forward once it is a day old. The key expires when the bucket
// has drained and the pause has ended.
//
// A pause is kept as its end, as in ratelimit.Limiter: nothing is admitted
// before it, and from it on the bucket holds at least one unit short of
// full (nothing, for a capacity of at most one unit) at the rate in force
// when it ends, and the turns reserved during the pause on top of that, as
// ratelimit's callers queued during a pause are admitted on top of it.
// Once the pause has ended, every call puts that floor, and r, in t, until
// one stores the key. A pause is time: rescaling keeps its end and
// converts only the units, in t and in r, so that its floor follows the
// new rate. Before the end, the level counts the floor back from it.
//
// A missing key is an empty bucket, unless the caller saw it hold one that
// should not have drained yet: then Redis lost it (a restart without
// persistence, a flush, an eviction, a failover to a replica that missed
// the write), and the script writes it back full, and behind the time the
// caller saw it reach, so that the units taken before the loss, and the
// turns that waiting callers hold, still count.
//
// Arguments:
//
//	ARGV[1]  the operation: take, check, reserve, cancel, pause or level
//	ARGV[2]  the caller's nanoseconds per unit ("%.17g")
//	ARGV[3]  the caller's period in nanoseconds
//	ARGV[4]  the time until which the caller last saw the key hold a
//	         bucket, in server microseconds since 1970, or 0
//	ARGV[5]  take, check, reserve, cancel: the cost in nanoseconds;
//	         pause: the length of the pause in nanoseconds
//	ARGV[6]  reserve: the time left before the caller's deadline in
//	         nanoseconds (a wait must end before it), or -1 for no limit;
//	         cancel: the reservation's nonce
//	ARGV[7]  reserve: the reservation's nonce, an integer in [1, 2^53);
//	         cancel: the nonce it replaced
//
// A caller whose rate differs from the key's first rescales the key to its
// own, keeping the units, as Limiter.SetRate does: the units of a pause
// that has ended count at the key's rate, those of one in progress at the
// caller's.
//
// Every reply starts with the server's time in microseconds since 1970 and
// the time until which the key holds the bucket, in microseconds since 1970
// rounded up, or 0 if it holds none. Then: take and check 1 or 0; reserve 1,
// the wait, and the nonce it replaced when it reserved (the wait may be <=
// 0: admitted now), or 0 and the wait when the wait is not below the limit;
// cancel 1 if it gave the reservation back, else 0; pause 0; level the
// level in units as a string, since Redis truncates Lua numbers to
// integers.
//
// A reservation is given back only while the key still holds its nonce:
// then no later change depends on it, since every other change to the
// bucket replaces the nonce (but moving the epoch, which changes no time,
// and a new period at the same nanoseconds per unit, which changes no
// units, keep it). So does a pause that starts or moves its end, so that
// the turns reserved before it, which its floor covers, are not given
// back: during a pause, the nonce is that of a turn reserved during it,
// whose units a cancel takes from r (from t, once the pause has ended).
// Giving a reservation back restores the nonce it replaced, so that the
// reservation before it can be given back in turn, and a cancel that runs
// twice (as go-redis runs a command again after a lost reply) gives back
// nothing the second time, even if a reservation of the same cost has
// since brought the tat back to where it was.
//
// Rescaling rounds up, as every other rounding here does: the bucket may
// look fuller than it is, never emptier. Between two whole numbers of
// nanoseconds per unit it is exact, as ratelimit's is, while
// lead*u/gcd(u, su) stays below 2^53 (lead is the tat's lead on now, or r).
//
// The script calls TIME before writing, which Redis allows since 3.2 with
// effects replication (always on since 7.0). It is written for the server's
// time: string patterns, closures and extra tonumber calls each cost a
// measurable part of a call, so it does without them, but for one closure
// made only when it rescales, which is rare.
const bucketSource = `
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local op, u, period = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local seen, arg = tonumber(ARGV[4]), tonumber(ARGV[5])

local clock = redis.call('TIME')
local sec, usec = tonumber(clock[1]), tonumber(clock[2])

local cur = redis.call('GET', key)
local e, t, su, sp, pause, r, n = sec, 0, u, period, 0, 0, 0
local now = usec * 1000
-- dirty says the bucket must be stored: it changed, or its epoch moved, or
-- it was rescaled to the caller's rate, or it was lost.
local dirty = false
if cur then
  if #cur ~= 56 then
    return redis.error_reply('ERR redisbucket: key ' .. key .. ' does not hold a bucket')
  end
  e, t, su, sp, pause, r, n = struct.unpack('>ddddddd', cur)
  now = (sec - e) * 1e9 + now
elseif seen - sec * 1e6 - usec > 2000 then
  -- The caller saw the key hold a bucket until more than 2ms from now (the
  -- key may expire up to a millisecond early, as PX counts from the start
  -- of the script in whole milliseconds): it was lost. It comes back full,
  -- and no earlier than the caller saw it end.
  t, dirty = math.max(now + period, (seen - sec * 1e6) * 1000), true
end
-- The key outlives the drain by up to this many milliseconds, since PX
-- counts whole ones.
local linger = 1

if pause > 0 and pause <= now then
  -- The pause has ended: from its end the bucket holds at least one unit
  -- short of full (nothing, for a capacity of at most one unit) at the
  -- key's rate, the rate in force then, and the units reserved during the
  -- pause on top. Every call works this out again until one stores it.
  t = math.max(t, pause + sp - math.min(math.ceil(su), sp)) + r
  pause, r = 0, 0
end
if now >= 86400e9 then
  local shift = (sec - e) * 1e9
  t = t - shift
  if pause > 0 then pause = pause - shift end
  e, now = sec, usec * 1000
  dirty = true
end
if su ~= u then
  -- The units stay: the bucket's lead on now, and the units reserved
  -- during a pause, each move to lead * u / su, rounded up, exactly when u
  -- and su are whole numbers (reduced by their greatest common divisor)
  -- and the product is below 2^53. A pause is time, and keeps its end.
  local a, b = u, su
  local exact = a < 2^53 and b < 2^53 and a == math.floor(a) and b == math.floor(b)
  if exact then
    local x, y = a, b
    while y > 0 do x, y = y, x % y end
    a, b = a / x, b / x
  end
  local function rescale(lead)
    if exact and lead * a < 2^53 then
      local q = math.ceil(lead * a / b)
      if q * b < lead * a then q = q + 1 end
      return math.min(q, 2^56)
    end
    return math.min(math.ceil(lead / su * u * (1 + 2^-50)), 2^56)
  end
  if t > now then t = now + rescale(t - now) end
  if r > 0 then r = rescale(r) end
  n = 0
end
if su ~= u or sp ~= period then
  su, sp, dirty = u, period, true
end
-- A pause in progress (pause > 0: one that has ended is in t by now)
-- admits nothing before its end, from which the bucket holds at least one
-- unit short of full at the key's rate, now the caller's (fo past the
-- end), and then the units reserved during the pause.
local fo = period - math.min(math.ceil(u), period)

local res, wait, prev = 0, 0, 0
if op == 'take' or op == 'check' then
  local tat = math.max(t, now) + arg
  if pause == 0 and tat - now <= period then
    res = 1
    if op == 'take' then t, n, dirty = tat, 0, true end
  end
elseif op == 'reserve' then
  local tat = math.max(t, now)
  if pause > 0 then tat = math.max(tat, pause + fo) + r end
  tat = tat + arg
  local limit = tonumber(ARGV[6])
  wait = math.max(tat - period, pause) - now
  if wait <= 0 or limit < 0 or wait < limit then
    if pause > 0 then r = r + arg else t = tat end
    prev, n, dirty, res = n, tonumber(ARGV[7]), true, 1
  end
elseif op == 'cancel' then
  if n ~= 0 and n == tonumber(ARGV[6]) then
    if pause > 0 then r = math.max(r - arg, 0) else t = t - arg end
    n, dirty, res = tonumber(ARGV[7]), true, 1
  end
elseif op == 'pause' then
  local nu = now + arg
  if nu > pause then pause, n, dirty = nu, 0, true end
elseif op == 'level' then
  local tat = math.max(t, now)
  if pause > 0 then tat = math.max(tat, pause + fo) + r end
  res = string.format('%.17g', (tat - now) / u)
else
  return redis.error_reply('ERR redisbucket: unknown operation ' .. tostring(op))
end
-- Store the bucket, or delete the key once the bucket has drained and the
-- pause has ended.
local keep = t
if pause > 0 then keep = math.max(t, pause + fo) + r end
if dirty then
  if keep > now then
    redis.call('SET', key, struct.pack('>ddddddd', e, t, su, sp, pause, r, n), 'PX', math.floor((keep - now) / 1e6) + linger)
  elseif cur then
    redis.call('DEL', key)
  end
end
local held = 0
if keep > now then held = e * 1e6 + math.ceil(keep / 1000) end
if op == 'reserve' then return {sec * 1e6 + usec, held, res, wait, prev} end
return {sec * 1e6 + usec, held, res}
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
const noLimit = -1

// run runs the script on the limiter's key with the arguments of one
// operation, within ctx and the limiter's timeout: one round trip once the
// server has cached the script, two the first time. It remembers what the
// reply says of the key (see sighting), and returns the rest of the reply.
func (l *Limiter) run(ctx context.Context, p *params, op string, args ...any) ([]any, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	argv := make([]any, 0, 7+2)
	argv = append(argv, op, p.unit, p.periodArg, l.seen.until())
	argv = append(argv, args...)
	if l.serverTime != nil {
		argv = append(argv, l.serverTime()...)
	}
	v, err := l.script.Run(ctx, l.rdb, []string{l.key}, argv...).Result()
	if err != nil {
		return nil, err
	}
	s, ok := v.([]any)
	if !ok || len(s) < 3 {
		return nil, &replyError{v}
	}
	at, ok1 := s[0].(int64)
	until, ok2 := s[1].(int64)
	if !ok1 || !ok2 {
		return nil, &replyError{v}
	}
	l.seen.record(at, until)
	return s[2:], nil
}

// A sighting is what a Limiter last learned of its key from Redis: until
// when the key holds the bucket. The script writes a missing key back full
// if a caller saw it hold a bucket that should not have drained yet.
//
// Each process knows only what its own replies said; nothing of it is in
// Redis, which is what may lose the key.
type sighting struct {
	mu  sync.Mutex
	at  int64 // the server's time of the latest reply, in µs since 1970
	end int64 // until when it said the key holds the bucket, µs since 1970; 0 if not at all
}

// record keeps what a reply said, unless a reply of a later server time was
// recorded already.
func (s *sighting) record(at, end int64) {
	s.mu.Lock()
	if at >= s.at {
		s.at, s.end = at, end
	}
	s.mu.Unlock()
}

func (s *sighting) until() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end
}

// reservation is a reserve's nonce and its reply.
type reservation struct {
	ok    bool
	wait  int64 // nanoseconds from the server's now to the caller's turn
	nonce int64 // the reservation's, which cancel names
	prev  int64 // the nonce it replaced, which cancel restores
}

// replyError reports a reply the limiter cannot read: Redis answered, so
// it is not unavailable, but not as the script does.
type replyError struct{ reply any }

func (e *replyError) Error() string { return fmt.Sprintf("unexpected reply %v", e.reply) }

func parseReservation(s []any, nonce int64) (reservation, error) {
	if len(s) < 3 {
		return reservation{}, &replyError{s}
	}
	status, ok1 := s[0].(int64)
	wait, ok2 := s[1].(int64)
	prev, ok3 := s[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return reservation{}, &replyError{s}
	}
	return reservation{ok: status == 1, wait: wait, nonce: nonce, prev: prev}, nil
}

func parseBool(s []any) (bool, error) {
	n, ok := s[0].(int64)
	if !ok {
		return false, &replyError{s}
	}
	return n == 1, nil
}

func parseLevel(s []any) (float64, error) {
	str, ok := s[0].(string)
	if !ok {
		return 0, &replyError{s}
	}
	f, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return 0, &replyError{s}
	}
	return f, nil
}
