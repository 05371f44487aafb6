package ratelimit

import (
	"math"
	"math/bits"
)

// windowLog is a ring of the admissions still in a Window, oldest first,
// numbered by sequence numbers, and their count at the current rate.
//
// Admissions are counted in quanta of the rate they were admitted at, and
// keep that count: SetRate does not touch the entries, it starts a new
// segment of them. The window's count at the current rate is, over the
// segments, each one's quanta converted to the current rate's, rounded up:
// exact whenever the conversion is (the quanta are powers of two apart),
// never less than exact. A rate that goes down and up again so finds the
// admissions as they were.
type windowLog struct {
	buf     []entry
	head, n int
	headSeq uint64 // sequence number of the oldest entry
	shift   int    // the current rate's quanta: 2^-shift units
	// segs are the segments of entries admitted at one rate (one
	// quantum), oldest first, that still hold entries; the last is the
	// current rate's, which may be empty.
	segs   []segment
	hi, lo uint64 // the window's count: the segments' conv, as a 128-bit number
	first  int64  // when the newest entry's first admission was
	// The ring gives back what it did not use, once a period at most: it
	// shrinks, at shrinkAt, to what the peak number of entries since the
	// last time needs. So a window whose traffic comes in bursts keeps its
	// ring from one burst to the next, and allocates nothing.
	peak     int
	shrinkAt int64
}

// An entry is one admission, or admissions merged: when they were admitted
// (the latest of them), and their quanta at their segment's rate.
type entry struct {
	at int64
	q  uint64
}

// A segment is the entries from start on (up to the next segment's start)
// admitted at quanta of 2^-shift units.
type segment struct {
	start uint64
	shift int
	sum   uint64 // their quanta, at most 2^62: they fitted in a capacity
	conv  uint64 // sum at the current rate, rounded up, at most 2^64-1
}

// minLog is the ring size below which an emptied log keeps its ring.
const minLog = 64

func (l *windowLog) at(seq uint64) *entry {
	return &l.buf[(l.head+int(seq-l.headSeq))%len(l.buf)]
}

// newest returns the newest entry, if it may take more admissions: it
// belongs to the current rate. It returns nil if the log is empty.
func (l *windowLog) newest() *entry {
	seq := l.headSeq + uint64(l.n) - 1
	if l.n == 0 || seq < l.segs[len(l.segs)-1].start {
		return nil
	}
	return l.at(seq)
}

// setShift makes quanta of 2^-shift units the current rate's, counting the
// window's admissions again in them.
func (l *windowLog) setShift(shift int) {
	end := l.headSeq + uint64(l.n)
	switch {
	case len(l.segs) == 0:
		l.segs = append(l.segs, segment{start: end, shift: shift})
	case shift == l.shift:
		return
	case l.segs[len(l.segs)-1].start == end: // the current segment is empty
		l.segs[len(l.segs)-1].shift = shift
	default:
		l.segs = append(l.segs, segment{start: end, shift: shift})
	}
	l.shift = shift
	l.hi, l.lo = 0, 0
	for i := range l.segs {
		s := &l.segs[i]
		s.conv = convertQuanta(s.sum, s.shift, shift)
		l.lo, l.hi = add128(l.hi, l.lo, s.conv)
	}
}

// level returns the window's count in units.
func (l *windowLog) level() float64 {
	var u float64
	for _, s := range l.segs {
		u += math.Ldexp(float64(s.sum), -s.shift)
	}
	return u
}

// fits reports whether q more quanta fit in a window of capacity quanta.
func (l *windowLog) fits(q, capacity uint64) bool { return fits(l.hi, l.lo, q, capacity) }

// remaining returns the units that fit in a window of capacity quanta now:
// the quanta left, in units, rounded down.
func (l *windowLog) remaining(capacity uint64) float64 {
	if l.hi != 0 || l.lo >= capacity {
		return 0
	}
	q := capacity - l.lo
	u := float64(q) // rounded to nearest: down, if it went up
	if u >= 1<<64 || uint64(u) > q {
		u = math.Nextafter(u, 0)
	}
	return math.Ldexp(u, -l.shift)
}

func fits(hi, lo, q, capacity uint64) bool {
	return hi == 0 && lo <= capacity && q <= capacity-lo
}

// expire drops the entries that left the window by now.
func (l *windowLog) expire(now, period int64) {
	for l.n > 0 {
		e := &l.buf[l.head]
		if e.at > now-period {
			break
		}
		for len(l.segs) > 1 && l.segs[1].start <= l.headSeq {
			l.segs = append(l.segs[:0], l.segs[1:]...)
		}
		s := &l.segs[0]
		s.sum -= e.q
		conv := convertQuanta(s.sum, s.shift, l.shift)
		l.lo, l.hi = sub128(l.hi, l.lo, s.conv)
		l.lo, l.hi = add128(l.hi, l.lo, conv)
		s.conv = conv
		*e = entry{}
		l.head = (l.head + 1) % len(l.buf)
		l.headSeq++
		l.n--
	}
	if l.n == 0 {
		l.head = 0
		l.segs = append(l.segs[:0], segment{start: l.headSeq, shift: l.shift})
		l.hi, l.lo = 0, 0
	}
	if now-l.shrinkAt >= period {
		if need := l.peak + l.peak/4 + 8; len(l.buf) > minLog && len(l.buf) > 2*need {
			if l.peak == 0 {
				l.buf = nil
			} else {
				l.resize(need)
			}
		}
		l.shrinkAt, l.peak = now, l.n
	}
}

// record adds q quanta admitted at now, merging them into the newest
// entry if that was admitted on the same nanosecond, at the current rate,
// or, with a resolution res > 0, if its first admission was less than res
// ago.
func (l *windowLog) record(now int64, q uint64, res int64) {
	l.lo, l.hi = add128(l.hi, l.lo, q)
	s := &l.segs[len(l.segs)-1]
	s.sum += q
	s.conv += q
	if e := l.newest(); e != nil && (e.at == now || satSub(now, l.first) < res) {
		e.at, e.q = now, e.q+q
		return
	}
	if l.n == len(l.buf) {
		l.resize(l.n + l.n/4 + 8)
	}
	l.buf[(l.head+l.n)%len(l.buf)] = entry{at: now, q: q}
	l.n++
	l.peak = max(l.peak, l.n)
	l.first = now
}

// resize moves the entries to a ring of size n, at least l.n.
func (l *windowLog) resize(n int) {
	buf := make([]entry, n)
	for i := range l.n {
		buf[i] = l.buf[(l.head+i)%len(l.buf)]
	}
	l.buf, l.head = buf, 0
}

// shiftTimes moves the entries' times d nanoseconds back, for an epoch
// moved d nanoseconds on.
func (l *windowLog) shiftTimes(d int64) {
	for i := range l.n {
		e := &l.buf[(l.head+i)%len(l.buf)]
		e.at = satSub(e.at, d)
	}
	l.first, l.shrinkAt = satSub(l.first, d), satSub(l.shrinkAt, d)
}

// freeAt returns when enough entries will have left the window for q
// quanta to fit, which they do not now.
func (l *windowLog) freeAt(q, capacity uint64, period int64) int64 {
	t := l.tally()
	for i := range l.n {
		seq := l.headSeq + uint64(i)
		e := l.at(seq)
		t.drop(l, seq, e.q)
		if t.fits(q, capacity) {
			return e.at + period
		}
	}
	panic("ratelimit: a window's log counts more than its entries")
}

// A tally follows the window's count as the log's entries leave it in
// order, without changing the log.
type tally struct {
	hi, lo uint64
	in     bool   // it has entered a segment: the one described below
	next   uint64 // the sequence number at which the next segment starts
	shift  int
	sum    uint64 // the quanta that remain in the segment
	conv   uint64 // sum at the current rate, as counted in hi, lo
}

func (l *windowLog) tally() tally { return tally{hi: l.hi, lo: l.lo} }

func (t *tally) fits(q, capacity uint64) bool { return fits(t.hi, t.lo, q, capacity) }

// drop takes the log's entry seq, of q quanta, out of the count.
func (t *tally) drop(l *windowLog, seq, q uint64) {
	if !t.in || seq >= t.next {
		i := len(l.segs) - 1
		for l.segs[i].start > seq {
			i--
		}
		s := &l.segs[i]
		t.in, t.shift, t.sum, t.conv, t.next = true, s.shift, s.sum, s.conv, math.MaxUint64
		if i+1 < len(l.segs) {
			t.next = l.segs[i+1].start
		}
	}
	if t.shift == l.shift {
		t.lo, t.hi = sub128(t.hi, t.lo, q)
		return
	}
	t.sum -= q
	conv := convertQuanta(t.sum, t.shift, l.shift)
	t.lo, t.hi = sub128(t.hi, t.lo, t.conv)
	t.lo, t.hi = add128(t.hi, t.lo, conv)
	t.conv = conv
}

// add128 returns hi*2^64+lo plus q, as lo, hi; sub128 the difference.
func add128(hi, lo, q uint64) (uint64, uint64) {
	lo, carry := bits.Add64(lo, q, 0)
	return lo, hi + carry
}

func sub128(hi, lo, q uint64) (uint64, uint64) {
	lo, borrow := bits.Sub64(lo, q, 0)
	return lo, hi - borrow
}

// convertQuanta returns q quanta of 2^-from units in quanta of 2^-to
// units, rounded up, and at most 2^64-1: any count that large exceeds
// every capacity.
func convertQuanta(q uint64, from, to int) uint64 {
	switch d := to - from; {
	case q == 0 || d == 0:
		return q
	case d > 0:
		if d >= 64 || q > math.MaxUint64>>d {
			return math.MaxUint64
		}
		return q << d
	case -d >= 64:
		return 1
	default:
		r := q >> -d
		if q&(1<<-d-1) != 0 {
			r++
		}
		return r
	}
}

// windowSim follows the queue as process will admit it, for due: the log
// as it will stand, and the time of the last admission. It reads the log's
// entries from cursor up to end, which do not change meanwhile, and then
// its own: a copy of the log's newest entry, if admissions may merge into
// it, and the admissions it foresees. It holds while the queue's tailOK
// does, and is ahead of the log: the log drops entries as time passes, up
// to the time of the front waiter, and the sim has dropped those by the
// time of the last.
type windowSim struct {
	cursor, end uint64
	own         []entry // at the current rate
	ownHead     int
	t           tally
	first       int64 // when the newest entry's first admission was
	at          int64 // no admission before this time
}

// build starts the sim from the window's log and pause at now.
func (s *windowSim) build(w *Window, now int64) {
	l := &w.log
	s.cursor, s.end = l.headSeq, l.headSeq+uint64(l.n)
	s.own, s.ownHead = s.own[:0], 0
	if e := l.newest(); e != nil {
		s.end--
		s.own = append(s.own, *e)
	}
	s.t, s.first, s.at = l.tally(), l.first, max(now, w.pause)
}

// entry returns the sim's entry i, oldest first, or nil, and whether it
// is the sim's own or the log's entry seq.
func (s *windowSim) entry(w *Window, i int) (e *entry, seq uint64, own bool) {
	n := s.end - s.cursor
	if uint64(i) < n {
		seq := s.cursor + uint64(i)
		return w.log.at(seq), seq, false
	}
	if j := s.ownHead + i - int(n); j < len(s.own) {
		return &s.own[j], 0, true
	}
	return nil, 0, false
}

// dropEntry takes e, the sim's own or the log's entry seq, out of t.
func dropEntry(w *Window, t *tally, e *entry, seq uint64, own bool) {
	if own {
		t.lo, t.hi = sub128(t.hi, t.lo, e.q) // at the current rate
		return
	}
	t.drop(&w.log, seq, e.q)
}

// fit returns when q quanta would be admitted next, changing nothing.
func (s *windowSim) fit(w *Window, q uint64) int64 {
	at, t, p := s.at, s.t, int64(w.period)
	for i := 0; ; i++ {
		e, seq, own := s.entry(w, i)
		if e == nil || e.at > at-p && t.fits(q, w.capacity) {
			return at // an empty window fits q, which is at most the capacity
		}
		at = max(at, satAdd(e.at, p)) // the sim's times may lie beyond 2^63 ns
		dropEntry(w, &t, e, seq, own)
	}
}

// step admits q quanta when they fit, as process will.
func (s *windowSim) step(w *Window, q uint64) {
	at, p := s.fit(w, q), int64(w.period)
	for {
		e, seq, own := s.entry(w, 0)
		if e == nil || e.at > at-p {
			break
		}
		dropEntry(w, &s.t, e, seq, own)
		if !own {
			s.cursor++
			continue
		}
		// Keep own from growing with every admission the sim foresees,
		// for as long as waiters keep coming.
		if s.ownHead++; s.ownHead >= 16 && 2*s.ownHead >= len(s.own) {
			n := copy(s.own, s.own[s.ownHead:])
			clear(s.own[n:])
			s.own, s.ownHead = s.own[:n], 0
		}
	}
	s.at = at
	s.t.lo, s.t.hi = add128(s.t.hi, s.t.lo, q)
	// The newest entry is the sim's own, if it holds any: the copy of the
	// log's newest, or an admission it foresaw.
	if n := len(s.own); n > s.ownHead {
		if e := &s.own[n-1]; e.at == at || satSub(at, s.first) < w.res {
			e.at, e.q = at, e.q+q
			return
		}
	}
	s.own = append(s.own, entry{at: at, q: q})
	s.first = at
}
