package redisbucket

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

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
// e moves forward once it is a day old, and back to now if the server's
// clock steps back before it, so that now and a pause's end stay > 0 (0
// means no pause). Beyond 2^53 ns from e (long periods, turns reserved far
// ahead, a level kept across a SetRate to a much slower rate), every sum
// is rounded up to the next float64 (up), so that a cost always moves the
// tat and a refund never takes more than its cost. The key expires a few
// milliseconds after the bucket has drained and the pause has ended
// (linger).
//
// A pause is kept as its end, as in ratelimit.Limiter: nothing is admitted
// before it, and from it on the bucket holds at least one unit short of
// full (nothing, for a capacity of at most one unit) at the rate in force
// when it ends (one unit's nanoseconds rounded down, so that no more than
// one unit fits), and the turns reserved during the pause on top of that, as
// ratelimit's callers queued during a pause are admitted on top of it.
// Once the pause has ended, every call puts that floor, and r, in t, until
// one stores the key. A pause is time: rescaling keeps its end and
// converts only the units, in t and in r, so that its floor follows the
// new rate. Before the end, the level counts the floor back from it.
//
// A missing key is an empty bucket, unless the caller saw it hold one that
// should not have drained yet (the key outlives that time, so that its
// expiry is never taken for a loss): then Redis lost it (a restart without
// persistence, a flush, an eviction, a failover to a replica that missed
// the write), and the script writes it back full, and behind the time the
// caller saw it reach, so that the units taken before the loss, and the
// turns that waiting callers hold, still count.
//
// Arguments:
//
//	ARGV[1]  the operation: take, check, reserve, cancel, pause, level or
//	         allow
//	ARGV[2]  the caller's nanoseconds per unit ("%.17g")
//	ARGV[3]  the caller's period in nanoseconds
//	ARGV[4]  the time until which the caller last saw the key hold a
//	         bucket, in server microseconds since 1970, and the
//	         nanoseconds per unit of the call that saw it, apart by a
//	         space ("1764400000000000 20"); or several such pairs (see
//	         sighting), and then "r" and the units of its process's
//	         reserves in flight, if any; or 0 if it saw none
//	ARGV[5]  take, check, reserve, cancel, allow: the cost in nanoseconds;
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
// rounded up, or 0 if it holds none: an integer below 2^53, else a string,
// since a bucket that SetRate left holding units that take centuries to
// drain holds them past the integers Redis replies (and a lost key comes
// back with all of them). Then: take and
// check 1 or 0; reserve 1,
// the wait, and the nonce it replaced when it reserved (the wait may be <=
// 0: admitted now; at most 2^62 ns), or 0 and the wait when the wait is not
// below the limit;
// cancel 1 if it gave the reservation back, else 0; pause 0; level the
// level in units as a string, since Redis truncates Lua numbers to
// integers; allow, a take that also reports the bucket after it, for
// Limiter.Allow: 1 or 0 (always 1 for a cost of 0, which takes nothing),
// the wait that reserve would give the cost (0 if taken), the bucket's
// lead on now (its level in nanoseconds, with the floor and the turns of a
// pause in progress), both at most 2^62 ns, and 1 if a pause is in
// progress, else 0.
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
// since brought the tat back to where it was. A reserve that runs again
// finds its own nonce in the key: it adds nothing, and replies 0 as the
// nonce it replaced, so that its cancel gives back one reservation and
// leaves the nonce 0 (a cancel never restores its own nonce either).
//
// Rescaling rounds up, as every other rounding here does: the bucket may
// look fuller than it is, never emptier. Between two whole numbers of
// nanoseconds per unit it is exact, as ratelimit's is, while
// lead*u/gcd(u, su) stays below 2^53 (lead is the tat's lead on now, or r).
// It keeps every unit, however long they take to drain at the new rate (up
// to 2^1000 ns, where float64s end), so that a rescaling there and back
// lets no more through than before it.
//
// The script calls TIME before writing, which Redis allows since 3.2 with
// effects replication (always on since 7.0). It is written for the server's
// time: string patterns, closures and extra tonumber calls each cost a
// measurable part of a call, so it does without them, but for up, which
// rounds sums, and one closure made only when it rescales, which is rare.
const bucketSource = `
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local op, u, period = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local seen, arg = ARGV[4], tonumber(ARGV[5])

-- up returns a + b rounded up: the least float64 at or above the exact sum.
-- Sums of whole numbers below 2^53 are exact; beyond, where float64s are
-- 2, 4, 8... apart, a cost is never lost and a refund never grows.
local function up(a, b)
  local s = a + b
  local bb = s - a
  if (a - (s - bb)) + (b - bb) > 0 then
    local _, x = math.frexp(s)
    s = s + 2^(x - 53)
  end
  return s
end

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
elseif seen ~= '0' then
  -- One sighting or more, each an end and a unit, then maybe "r" and the
  -- units of the caller's reserves in flight.
  local back, inflight, from = 0, 0, 1
  while from do
    local a = string.find(seen, ' ', from, true)
    local b = string.find(seen, ' ', a + 1, true)
    local first, second = string.sub(seen, from, a - 1), tonumber(string.sub(seen, a + 1, b and b - 1 or -1))
    local se, sunit = tonumber(first), second
    if first == 'r' then
      inflight = second
    elseif se > sec * 1e6 + usec then
      -- The caller saw the key hold a bucket until after now, and the key
      -- outlives that (see linger): it was lost. It comes back full, and
      -- no earlier than the caller saw it end.
      local end_ = up(se, -sec * 1e6) * 1000
      if end_ >= 2^53 then end_ = end_ * (1 + 2^-50) end
      if sunit < u then
        -- Seen at a faster rate than the caller's (SetRate slowed it
        -- since): the units left now drain at the caller's rate, which
        -- keeps them, as a rescaling does.
        end_ = up(now, math.min(math.ceil(up(end_, -now) / sunit * u * (1 + 2^-50)), 2^1000))
      end
      back = math.max(back, end_)
    end
    from = b and b + 1
  end
  if back > 0 then
    -- The reserves of the caller's process in flight may have run before
    -- the loss: their turns, behind the bucket, still count.
    t, dirty = up(math.max(up(now, period), back), math.ceil(inflight * u * (1 + 2^-50))), true
  end
end
-- The key outlives the time it holds the bucket until by more than a
-- millisecond: PX counts whole milliseconds from the start of the script,
-- which may lose up to two.
local linger = 3

if pause > 0 and pause <= now then
  -- The pause has ended: from its end the bucket holds at least one unit
  -- (rounded down) short of full (nothing, for a capacity of at most one
  -- unit) at the key's rate, the rate in force then, and the units
  -- reserved during the pause on top. Every call works this out again
  -- until one stores it.
  t = up(math.max(t, up(pause, up(sp, -math.min(math.floor(su), sp)))), r)
  pause, r = 0, 0
end
if now >= 86400e9 or now < 0 then
  -- The epoch moves to now once it is a day old, or when the server's
  -- clock stepped back before it, so that now, and a pause's end, stay > 0.
  local shift = (sec - e) * 1e9
  t = up(t, -shift)
  if pause > 0 then pause = up(pause, -shift) end
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
      return q
    end
    return math.min(math.ceil(lead / su * u * (1 + 2^-50)), 2^1000)
  end
  if t > now then t = up(now, rescale(up(t, -now))) end
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
local fo = up(period, -math.min(math.floor(u), period))

local res, wait, prev, lead = 0, 0, 0, 0
if op == 'take' or op == 'check' then
  local tat = up(math.max(t, now), arg)
  -- tat - now <= period, exactly: the lead on now, plus the cost, each
  -- rounded up, against the period. (Against now + period, both large,
  -- the roundings could refuse a full burst on an empty bucket for good.)
  if pause == 0 and up(up(math.max(t, now), -now), arg) <= period then
    res = 1
    if op == 'take' then t, n, dirty = tat, 0, true end
  end
elseif op == 'reserve' then
  local nonce = tonumber(ARGV[7])
  -- A reserve that the key's nonce names already ran (go-redis ran it
  -- again after a lost reply): its units are in, and it adds none, and
  -- names no reservation before it, so that a cancel gives back one.
  local again = n == nonce
  if again then arg = 0 end
  local tat = math.max(t, now)
  if pause > 0 then tat = up(math.max(tat, up(pause, fo)), r) end
  tat = up(tat, arg)
  local limit = tonumber(ARGV[6])
  wait = up(math.max(up(tat, -period), pause), -now)
  if again then
    res = 1
  elseif (wait <= 0 or limit < 0 or wait < limit) and wait < 2^62 then
    if pause > 0 then r = up(r, arg) else t = tat end
    prev, n, dirty, res = n, nonce, true, 1
  end
  -- Redis replies integers, which a wait beyond 2^62ns (146 years) would
  -- overflow: no turn is reserved that far ahead, and the wait says 2^62.
  wait = math.min(wait, 2^62)
elseif op == 'cancel' then
  local nonce = tonumber(ARGV[6])
  if n ~= 0 and n == nonce then
    if pause > 0 then r = math.max(up(r, -arg), 0) else t = up(t, -arg) end
    n, dirty, res = tonumber(ARGV[7]), true, 1
    if n == nonce then n = 0 end
  end
elseif op == 'pause' then
  local nu = up(now, arg)
  if nu > pause then pause, n, dirty = nu, 0, true end
elseif op == 'level' then
  local tat = math.max(t, now)
  if pause > 0 then tat = up(math.max(tat, up(pause, fo)), r) end
  res = string.format('%.17g', (tat - now) / u)
elseif op == 'allow' then
  -- take, with the tat that reserve and level see, so that the reply
  -- says what Level and a reserve's wait would.
  local tat = math.max(t, now)
  if pause > 0 then tat = up(math.max(tat, up(pause, fo)), r) end
  local want = up(tat, arg)
  if arg == 0 then
    res = 1
  elseif pause == 0 and up(up(tat, -now), arg) <= period then
    t, tat, n, dirty, res = want, want, 0, true, 1
  else
    wait = math.min(up(math.max(up(want, -period), pause), -now), 2^62)
  end
  lead = math.min(up(tat, -now), 2^62)
else
  return redis.error_reply('ERR redisbucket: unknown operation ' .. tostring(op))
end
-- Store the bucket, or delete the key once the bucket has drained and the
-- pause has ended. Expiries and the reply stop at 10^13ms and 2^52µs
-- (over a century): Redis takes and replies integers.
local keep = t
if pause > 0 then keep = up(math.max(t, up(pause, fo)), r) end
if dirty then
  if keep > now then
    redis.call('SET', key, struct.pack('>ddddddd', e, t, su, sp, pause, r, n), 'PX', math.min(math.floor((keep - now) / 1e6), 1e13) + linger)
  elseif cur then
    redis.call('DEL', key)
  end
end
local held = 0
if keep > now then
  -- In microseconds, rounded up: exact below 2^53, an integer; beyond,
  -- where the division and the sum may round down, nudged up past the
  -- exact value, and a string.
  local h = math.ceil(keep / 1000)
  if h * 1000 < keep then h = h + 1 end
  h = up(e * 1e6, h)
  if h >= 2^53 or keep >= 2^53 then
    held = string.format('%.17g', h * (1 + 2^-50))
  else
    held = h
  end
end
if op == 'reserve' then return {sec * 1e6 + usec, held, res, wait, prev} end
if op == 'allow' then
  local paused = 0
  if pause > 0 then paused = 1 end
  return {sec * 1e6 + usec, held, res, wait, lead, paused}
end
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
	opAllow   = "allow"
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
	sent := l.seen.send()
	argv = append(argv, op, p.unit, p.periodArg, l.seen.arg())
	if op == opReserve {
		// Until its reply is recorded, the turn it may reserve is in no
		// sighting that another call carries (see sighting.reserving).
		units := float64(args[0].(int64)) / p.nsPerUnit
		l.seen.reserving(units)
		defer l.seen.reserving(-units)
	}
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
	at, ok := s[0].(int64)
	if !ok {
		return nil, &replyError{v}
	}
	var until float64
	switch h := s[1].(type) {
	case int64:
		until = float64(h)
	case string:
		if until, err = strconv.ParseFloat(h, 64); err != nil {
			return nil, &replyError{v}
		}
	default:
		return nil, &replyError{v}
	}
	l.seen.recordSent(sent, at, until, p.nsPerUnit)
	return s[2:], nil
}

// A sighting is what a Limiter learned of its key from Redis: until when
// the key holds the bucket, and at what rate that was seen. The script
// writes a missing key back full if a caller saw it hold a bucket that
// should not have drained yet, with the units seen at a faster rate
// converted to the caller's.
//
// Each process knows only what its own replies said; nothing of it is in
// Redis, which is what may lose the key.
//
// A reply replaces those received before its call was sent: its call ran
// on the server after theirs, and its state holds all they did, whatever
// the server's clock says (after it steps back, as in a failover to a
// replica whose clock is behind, a later call has an earlier time). Of
// calls that were in flight together, whose order no one here knows, the
// reply of the later server time replaces the other, as the server's
// clock orders them but for a step back between them; replies of the same
// time are both kept, and the script writes back the most of them. Each
// kept reply is a state the key was in, so that the key never comes back
// fuller than it was. At most maxKept are kept, the last received.
type sighting struct {
	mu    sync.Mutex
	clock uint64      // counts the sends and receipts of this sighting's calls
	kept  []seenReply // the replies no later one replaces, in the order received

	// inFlight is the units of the reserves sent and not yet recorded, at
	// the Limiter's rate (SetRate waits for calls in flight, so they all
	// have it): a reserve may have run on the server before the key was
	// lost, and its turn must still count when another call writes the key
	// back.
	inFlight float64

	// latest, if not nil, is where a Keyed keeps the server's time, which
	// tells the sightings that have run out (see Keyed.sighting).
	latest *serverNow
}

// serverNow is the server's time as a Keyed knows it: that of the reply to
// the call sent last, of those whose replies came. A reply that comes late
// does not move it back to its time; after the server's clock steps back,
// it follows.
type serverNow struct {
	sends atomic.Uint64 // counts the calls sent on every key
	mu    sync.Mutex
	sent  uint64 // the call whose reply set at
	at    int64  // µs since 1970
}

// send returns the number of a call about to be sent.
func (n *serverNow) send() uint64 { return n.sends.Add(1) }

// record takes at, the server's time in the reply to call sent, unless a
// call sent later has replied.
func (n *serverNow) record(sent uint64, at int64) {
	n.mu.Lock()
	if sent > n.sent {
		n.sent, n.at = sent, at
	}
	n.mu.Unlock()
}

func (n *serverNow) load() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.at
}

// seenReply is a reply's server time and end (µs since 1970, the end
// rounded up; 0 if the key held no bucket), the nanoseconds per unit of
// its call, and when it was received, on the sighting's clock.
type seenReply struct {
	at        int64 // the server's time, µs since 1970
	end, unit float64
	got       uint64
}

const maxKept = 8

// A ticket is when a call was sent: on its sighting's clock, and among the
// calls of its Keyed.
type ticket struct{ local, keyed uint64 }

// send returns the ticket of a call about to be sent: taken before it is,
// so that a reply received before it surely ran before the call.
func (s *sighting) send() ticket {
	var t ticket
	if s.latest != nil {
		t.keyed = s.latest.send()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock++
	t.local = s.clock
	return t
}

// record keeps what a reply said, for a call sent and received now: as a
// caller that makes one call at a time does.
func (s *sighting) record(at int64, end, unit float64) { s.recordSent(s.send(), at, end, unit) }

// recordSent keeps what the reply to the call of ticket t said: the
// server's time at, the end, and the call's unit (see sighting).
func (s *sighting) recordSent(t ticket, at int64, end, unit float64) {
	if s.latest != nil {
		s.latest.record(t.keyed, at)
	}
	sent := t.local
	s.mu.Lock()
	s.clock++
	kept, newer := s.kept[:0], false
	for _, q := range s.kept {
		switch {
		case q.got < sent:
			// Received before this call was sent: it ran before.
		case at > q.at:
			// In flight together: this one ran later, by the server's
			// time.
		case q.at > at:
			kept, newer = append(kept, q), true
		default:
			kept = append(kept, q) // the same time: both
		}
	}
	if !newer {
		kept = append(kept, seenReply{at, end, unit, s.clock})
	}
	if n := len(kept); n > maxKept {
		kept = append(kept[:0], kept[n-maxKept:]...)
	}
	s.kept = kept
	s.mu.Unlock()
}

// reserving adds units to the reserves in flight (see sighting).
func (s *sighting) reserving(units float64) {
	s.mu.Lock()
	s.inFlight = max(s.inFlight+units, 0)
	s.mu.Unlock()
}

// last returns the latest time until which the sighting says the key holds
// the bucket.
func (s *sighting) last() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := 0.0
	for _, r := range s.kept {
		end = max(end, r.end)
	}
	return end
}

// arg returns the sighting as the script's ARGV[4]: each end that is not 0
// and its unit, each the shortest decimal that Lua reads back as the same
// float64, apart by spaces, then "r" and the units of the reserves in
// flight, if any; or 0 if it holds no end.
func (s *sighting) arg() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []byte
	for _, r := range s.kept {
		if r.end == 0 {
			continue
		}
		if b != nil {
			b = append(b, ' ')
		}
		b = strconv.AppendFloat(b, r.end, 'g', -1, 64)
		b = append(b, ' ')
		b = strconv.AppendFloat(b, r.unit, 'g', -1, 64)
	}
	if b == nil {
		return "0"
	}
	if s.inFlight > 0 {
		b = append(b, " r "...)
		b = strconv.AppendFloat(b, s.inFlight, 'g', -1, 64)
	}
	return string(b)
}

// reservation is a reserve's nonce and its reply.
type reservation struct {
	ok    bool
	wait  int64 // nanoseconds from the server's now to the caller's turn
	nonce int64 // the reservation's, which cancel names
	prev  int64 // the nonce it replaced, which cancel restores
	cost  int64 // what it added to the bucket, in nanoseconds at its rate
}

// replyError reports a reply the limiter cannot read: Redis answered, so
// it is not unavailable, but not as the script does.
type replyError struct{ reply any }

func (e *replyError) Error() string { return fmt.Sprintf("unexpected reply %v", e.reply) }

func parseReservation(s []any, nonce, cost int64) (reservation, error) {
	if len(s) < 3 {
		return reservation{}, &replyError{s}
	}
	status, ok1 := s[0].(int64)
	wait, ok2 := s[1].(int64)
	prev, ok3 := s[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return reservation{}, &replyError{s}
	}
	return reservation{ok: status == 1, wait: wait, nonce: nonce, prev: prev, cost: cost}, nil
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
