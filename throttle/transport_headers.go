package throttle

import (
	"math"
	"math/big"
	"math/bits"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/benbjohnson/clock"
)

// The header fields a Transport reads, as http.Header keys them (the
// canonical form net/http gives every received field name), so that each
// costs one map lookup.
const (
	hRateLimit          = "Ratelimit"                      // RateLimit: the current draft
	hRateLimitPolicy    = "Ratelimit-Policy"               // RateLimit-Policy: the current draft
	hRateLimitRemaining = "Ratelimit-Remaining"            // the older drafts
	hRateLimitReset     = "Ratelimit-Reset"                // the older drafts
	hXRemaining         = "X-Ratelimit-Remaining"          // GitHub and many others
	hXReset             = "X-Ratelimit-Reset"              // GitHub and many others
	hXRemainingRequests = "X-Ratelimit-Remaining-Requests" // model APIs
	hXResetRequests     = "X-Ratelimit-Reset-Requests"     // model APIs
)

const (
	// maxFieldLen is the longest RateLimit or RateLimit-Policy field, all
	// its lines together, that a Transport parses. A longer one is
	// ignored, as a malformed one is: no server needs 4 KB to describe its
	// limits, and the cap bounds the time a response can make us spend.
	maxFieldLen = 4096

	// maxPolicyWindow is the longest window of a RateLimit-Policy, and
	// the longest period of AdoptPolicy, that a Transport adopts: a year
	// and a day, within the longest period ratelimit's limiters take
	// (about 417 days).
	maxPolicyWindow = 366 * 24 * time.Hour

	// epochSeconds is the smallest reset that an X-RateLimit-Reset or
	// RateLimit-Reset field means as a Unix time in seconds (September
	// 2001); below it, a reset is seconds from now (up to 31 years).
	// epochMillis is the smallest it means as a Unix time in milliseconds:
	// as seconds it would lie in the year 33658.
	epochSeconds = 1e9
	epochMillis  = 1e12
)

// quotaPause returns how long the quota fields of h ask a client to wait
// before its next request, cut to limit: the longest of the waits that the
// RateLimit field, the RateLimit-Remaining and RateLimit-Reset pair, the
// X-RateLimit-Remaining and X-RateLimit-Reset pair, and the
// X-RateLimit-Remaining-Requests and X-RateLimit-Reset-Requests pair ask
// for, each only if it says that nothing remains. It returns 0 if none
// does, and for a response that came from a cache (Age above 0), whose
// counts are old. clk gives the time now when a reset is a Unix time.
//
// Without any of these fields, quotaPause costs four map lookups and
// allocates nothing; with a RateLimit field, or a remaining count above 0,
// it parses only that, and allocates nothing either.
func quotaPause(h http.Header, clk clock.Clock, limit time.Duration) time.Duration {
	var d time.Duration
	if v := h[hRateLimit]; len(v) > 0 {
		d = rateLimitPause(v)
	}
	if v := h[hRateLimitRemaining]; len(v) > 0 && isZeroCount(v) {
		d = max(d, resetPause(h[hRateLimitReset], h, clk))
	}
	if v := h[hXRemaining]; len(v) > 0 && isZeroCount(v) {
		d = max(d, resetPause(h[hXReset], h, clk))
	}
	if v := h[hXRemainingRequests]; len(v) > 0 && isZeroCount(v) {
		d = max(d, durationPause(h[hXResetRequests]))
	}
	if d <= 0 || fromCache(h) {
		return 0
	}
	return min(d, limit)
}

// rateLimitPause returns the pause a RateLimit field (draft -08 to -11 of
// draft-ietf-httpapi-ratelimit-headers), given as its lines v, asks for:
// the largest t among its items whose r is 0, in seconds, or 0 if no item
// says nothing remains, or none of those has a t. The field is a Structured
// Field List (RFC 9651) of Items, each with the parameters r (remaining
// quota, required) and t (seconds until the quota resets), both
// non-negative Integers. A field that breaks these rules in any way, or is
// longer than maxFieldLen, is ignored whole, as the draft requires of a
// malformed one.
func rateLimitPause(v []string) time.Duration {
	if fieldLen(v) > maxFieldLen {
		return 0
	}
	var secs int64 // the longest t of an exhausted item
	for _, line := range v {
		l := sfList{s: line}
		var it sfItem
		for l.next(&it) {
			r, ok := it.r.nonNegInt()
			if !ok {
				return 0
			}
			t, ok := it.t.nonNegInt()
			if !ok && it.t.kind != 0 {
				return 0
			}
			if r == 0 && ok {
				secs = max(secs, t)
			}
		}
		if l.bad {
			return 0
		}
	}
	return seconds(secs)
}

// resetPause returns how long until the reset in v, the lines of a
// RateLimit-Reset or X-RateLimit-Reset field: a number of seconds, whole or
// decimal, read as seconds from now if below epochSeconds, as a Unix time
// in seconds if below epochMillis, and as a Unix time in milliseconds
// above. A Unix time is measured from the server's time now (see
// serverNow). It returns 0 for a field that is missing, given more than
// once, or not such a number, and a negative duration for a reset in the
// past.
func resetPause(v []string, h http.Header, clk clock.Clock) time.Duration {
	if len(v) != 1 {
		return 0
	}
	whole, nanos, ok := parseDecimal(strings.TrimSpace(v[0]))
	if !ok {
		return 0
	}
	var at time.Time
	switch {
	case whole < epochSeconds:
		return time.Duration(whole)*time.Second + time.Duration(nanos)
	case whole < epochMillis:
		at = time.Unix(int64(whole), nanos)
	default:
		at = time.Unix(int64(whole/1000), int64(whole%1000)*1e6+nanos/1000)
	}
	return at.Sub(serverNow(h, clk))
}

// durationPause returns the duration in v, the lines of an
// X-RateLimit-Reset-Requests field, written as [time.ParseDuration] reads
// it ("6m0s", "1s", "20ms") but with no sign; 0 if it is missing, given
// more than once, or malformed. A duration so written but too long for a
// time.Duration (292 years and more), which ParseDuration refuses, is
// saturated at the longest Duration: years away, not malformed.
func durationPause(v []string) time.Duration {
	if len(v) != 1 {
		return 0
	}
	s := strings.TrimSpace(v[0])
	if s == "" || s[0] == '-' || s[0] == '+' {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if isDuration(s) {
			return math.MaxInt64
		}
		return 0
	}
	return d
}

// isDuration reports whether s is written as time.ParseDuration reads a
// duration, with no sign: one or more numbers, each of digits with or
// without a '.' and more digits (at least one digit in all), and each
// followed by a unit: "ns", "us", "µs" or "μs" (micro sign or Greek mu),
// "ms", "s", "m" or "h".
// ParseDuration refuses such an s only if it is too long for a Duration.
func isDuration(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); {
		start := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		digits := i - start
		if i < len(s) && s[i] == '.' {
			i++
			frac := i
			for i < len(s) && isDigit(s[i]) {
				i++
			}
			digits += i - frac
		}
		if digits == 0 {
			return false
		}
		unit := i // ParseDuration's unit runs to the next digit or '.'
		for i < len(s) && s[i] != '.' && !isDigit(s[i]) {
			i++
		}
		switch s[unit:i] {
		case "ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h":
		default:
			return false
		}
	}
	return true
}

// serverNow returns the server's time when it sent the response with
// header h, as well as it can be known. The Date header gives it to the
// second, rounded down: the server's clock read some time in
// [Date, Date+1s). If clk's time now lies in that second, it is the better
// reading, exact and with the latency of the response in it; otherwise the
// two clocks disagree, and Date, the server's own, is taken, which errs
// towards longer pauses by less than a second. Without a valid Date, it is
// clk's time now.
func serverNow(h http.Header, clk clock.Clock) time.Time {
	now := clk.Now()
	v := h["Date"]
	if len(v) == 0 {
		return now
	}
	date, err := http.ParseTime(v[0])
	if err != nil {
		return now
	}
	if now.Before(date) || !now.Before(date.Add(time.Second)) {
		return date
	}
	return now
}

// fromCache reports whether the response with header h came from a cache:
// whether it has an Age above 0. The draft asks that the quota fields of
// such a response be ignored, since they tell of a past moment.
func fromCache(h http.Header) bool {
	v := h["Age"]
	if len(v) == 0 {
		return false
	}
	s := strings.TrimSpace(v[0])
	return isDigits(s) && strings.Trim(s, "0") != ""
}

// isZeroCount reports whether v, the lines of a remaining count, is one
// line of one or more zeros: the server says nothing remains. Any other
// value, valid or not, says nothing that pauses.
func isZeroCount(v []string) bool {
	if len(v) != 1 {
		return false
	}
	s := strings.TrimSpace(v[0])
	return s != "" && strings.Trim(s, "0") == ""
}

// maxWhole is the largest whole part that parseDecimal returns: a larger
// one is saturated to it. As seconds, it is over 10^11 years away; as
// milliseconds since 1970, over 10^8 years.
const maxWhole = 1 << 62

// parseDecimal parses s as one or more ASCII digits, optionally followed
// by '.' and one or more digits: a number of seconds. It returns the whole
// part, saturated at maxWhole if larger, and the fraction in nanoseconds
// (digits past the ninth are dropped).
func parseDecimal(s string) (whole uint64, nanos int64, ok bool) {
	i := 0
	for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
		// Saturate before multiplying: whole*10 of a whole above
		// maxWhole/10 could exceed 2^64 and wrap around
		// (TestTransportResetBeyondUint64Saturates).
		if whole > maxWhole/10 {
			whole = maxWhole
		} else {
			whole = min(whole*10+uint64(s[i]-'0'), maxWhole)
		}
	}
	if i == 0 {
		return 0, 0, false
	}
	if i == len(s) {
		return whole, 0, true
	}
	if s[i] != '.' || i+1 == len(s) {
		return 0, 0, false
	}
	scale := int64(1e8)
	for _, c := range []byte(s[i+1:]) {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		nanos += int64(c-'0') * scale
		scale /= 10
	}
	return whole, nanos, true
}

// seconds returns secs seconds as a Duration, saturated at its maximum.
func seconds(secs int64) time.Duration {
	if secs > math.MaxInt64/int64(time.Second) {
		return math.MaxInt64
	}
	return time.Duration(secs) * time.Second
}

// fieldLen returns the length of the field whose lines are v.
func fieldLen(v []string) int {
	n := 0
	for _, line := range v {
		n += len(line)
	}
	return n
}

// policyRate returns the rate that a RateLimit-Policy field, given as its
// lines v, asks for, held to at most ceilRate units per ceilPeriod: the
// smallest quota and the lowest rate among the ceiling and the policies
// the field holds, as a maxRate and a period for SetRate. It returns false
// if the field adopts nothing: it is missing, malformed or longer than
// maxFieldLen, or none of its policies has a quota (q) of at least 1 in
// requests (qu absent or "requests") and a window (w) of at most
// maxPolicyWindow. The ceiling is valid for SetRate (see AdoptPolicy), and
// so is any rate returned: its period is at most the longest of the
// ceiling's and the policies' windows, and a unit of it takes at least as
// long as one of the ceiling. The rate returned is never above the
// ceiling's or any policy's, not even by a rounding: rates are compared
// exactly, and the period is rounded up to the nanosecond.
//
// The field is a Structured Field List (RFC 9651) of Items, each a String
// naming the policy, with the parameters q (the quota, a non-negative
// Integer, required), w (the window in seconds, a positive Integer), qu
// (the unit of the quota, a String) and others, which are ignored. A field
// that breaks these rules is ignored whole.
func policyRate(v []string, ceilRate float64, ceilPeriod time.Duration) (float64, time.Duration, bool) {
	if fieldLen(v) > maxFieldLen {
		return 0, 0, false
	}
	capacity := ceilRate // the smallest quota
	var lowQ, lowW int64 // the policy of the lowest rate; lowW 0: none yet
	for _, line := range v {
		l := sfList{s: line}
		var it sfItem
		for l.next(&it) {
			q, ok := it.q.nonNegInt()
			if it.kind != kString || !ok {
				return 0, 0, false
			}
			w, ok := it.w.nonNegInt()
			if it.w.kind != 0 && (!ok || w == 0) {
				return 0, 0, false
			}
			if it.qu.kind != 0 && it.qu.kind != kString {
				return 0, 0, false
			}
			if q == 0 || it.w.kind == 0 || w > int64(maxPolicyWindow/time.Second) ||
				(it.qu.kind != 0 && it.qu.raw != `"requests"`) {
				continue // a policy the limiter cannot take
			}
			capacity = min(capacity, float64(q)) // q < 10^15: exact
			if lowW == 0 || lowerRate(q, w, lowQ, lowW) {
				lowQ, lowW = q, w
			}
		}
		if l.bad {
			return 0, 0, false
		}
	}
	if lowW == 0 {
		return 0, 0, false
	}
	// The period in which capacity units take as long as at the lower of
	// the ceiling's rate and the lowest policy's: at most the longer of
	// their periods, since capacity is at most either quota.
	period := max(drainPeriod(capacity, ceilRate, ceilPeriod),
		drainPeriod(capacity, float64(lowQ), time.Duration(lowW)*time.Second))
	return capacity, period, true
}

// lowerRate reports whether q1 units per w1 seconds is a lower rate than
// q2 per w2, compared exactly: q1*w2 < q2*w1 in 128 bits.
func lowerRate(q1, w1, q2, w2 int64) bool {
	hi1, lo1 := bits.Mul64(uint64(q1), uint64(w2))
	hi2, lo2 := bits.Mul64(uint64(q2), uint64(w1))
	return hi1 < hi2 || hi1 == hi2 && lo1 < lo2
}

// drainPeriod returns the time that n units take at rate units per
// period, rounded up to the nanosecond, so that n per the time returned is
// never a higher rate: period*n/rate, computed exactly. It requires
// 0 < n <= rate, so that the time is in (0, period].
func drainPeriod(n, rate float64, period time.Duration) time.Duration {
	if n == rate {
		return period
	}
	if isWhole(n) && isWhole(rate) {
		// Quotas, and most caps: in 128 bits, with no allocation.
		// BenchmarkTransportHeaders/AdoptPolicy_changing_policy takes
		// about 0.6 µs and 1 allocation with it, 5 µs and 35 with
		// big.Rat alone. The quotient is below period, so it fits.
		hi, lo := bits.Mul64(uint64(period), uint64(n))
		ns, rem := bits.Div64(hi, lo, uint64(rate))
		if rem != 0 {
			ns++
		}
		return time.Duration(ns)
	}
	t := new(big.Rat).SetInt64(int64(period))
	t.Mul(t, new(big.Rat).SetFloat64(n))
	t.Quo(t, new(big.Rat).SetFloat64(rate))
	ns, rem := new(big.Int).QuoRem(t.Num(), t.Denom(), new(big.Int))
	if rem.Sign() != 0 {
		ns.Add(ns, big.NewInt(1))
	}
	return time.Duration(ns.Int64())
}

// isWhole reports whether x is a whole number that a uint64 holds.
func isWhole(x float64) bool { return x == math.Trunc(x) && x < 1<<64 }

// The kinds of an RFC 9651 bare item.
const (
	kNone    = iota // no item: a parameter not present
	kInteger        // -?[0-9]{1,15}
	kDecimal        // -?[0-9]{1,12}\.[0-9]{1,3}
	kString         // "..."
	kToken          // a token
	kBytes          // :base64:
	kBoolean        // ?0 or ?1
	kDate           // @ and an Integer
	kDisplay        // %"..."
)

// An sfValue is a bare item of a structured field: its kind, and its text
// as it stands in the field.
type sfValue struct {
	kind int
	raw  string
}

// nonNegInt returns v as an int64 if it is an Integer of 0 or more, and
// false otherwise (also if v is absent).
func (v sfValue) nonNegInt() (int64, bool) {
	if v.kind != kInteger || v.raw[0] == '-' {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v.raw); i++ {
		n = n*10 + int64(v.raw[i]-'0') // at most 15 digits: no overflow
	}
	return n, true
}

// An sfItem is a member of a structured field List: the kind of its bare
// item, and the parameters a Transport reads, each the last of that key.
type sfItem struct {
	kind           int
	r, t, q, w, qu sfValue
}

// An sfList parses a Structured Field List (RFC 9651, section 4.2.1) one
// member at a time, with no allocation, keeping of each member only what
// an sfItem holds. It checks the whole syntax, so that a malformed field is
// refused whole, and refuses Inner Lists too, since no field a Transport
// reads has them.
type sfList struct {
	s       string
	i       int
	started bool
	bad     bool // set when next met a syntax error
}

// next parses the next member of the list into it and reports true, or
// reports false at the end of the list or on a syntax error, which also
// sets l.bad.
func (l *sfList) next(it *sfItem) bool {
	if l.bad {
		return false
	}
	if !l.started {
		l.started = true
		l.skipSP()
		if l.i == len(l.s) {
			return false // an empty field: an empty list
		}
	} else {
		l.skipOWS()
		if l.i == len(l.s) {
			return false
		}
		if l.s[l.i] != ',' {
			return l.fail()
		}
		l.i++
		l.skipOWS()
		if l.i == len(l.s) {
			return l.fail() // a trailing comma
		}
	}
	*it = sfItem{}
	var v sfValue
	if !l.bareItem(&v) {
		return l.fail()
	}
	it.kind = v.kind
	for l.i < len(l.s) && l.s[l.i] == ';' {
		l.i++
		l.skipSP()
		key, ok := l.key()
		if !ok {
			return l.fail()
		}
		v = sfValue{kind: kBoolean, raw: "?1"}
		if l.i < len(l.s) && l.s[l.i] == '=' {
			l.i++
			if !l.bareItem(&v) {
				return l.fail()
			}
		}
		switch key {
		case "r":
			it.r = v
		case "t":
			it.t = v
		case "q":
			it.q = v
		case "w":
			it.w = v
		case "qu":
			it.qu = v
		}
	}
	return true
}

func (l *sfList) fail() bool {
	l.bad = true
	return false
}

func (l *sfList) skipSP() {
	for l.i < len(l.s) && l.s[l.i] == ' ' {
		l.i++
	}
}

func (l *sfList) skipOWS() {
	for l.i < len(l.s) && (l.s[l.i] == ' ' || l.s[l.i] == '\t') {
		l.i++
	}
}

// key parses a parameter's key: lcalpha or '*', then lcalpha, DIGIT, '_',
// '-', '.' or '*'.
func (l *sfList) key() (string, bool) {
	start := l.i
	if l.i == len(l.s) || !(isLower(l.s[l.i]) || l.s[l.i] == '*') {
		return "", false
	}
	for l.i++; l.i < len(l.s); l.i++ {
		c := l.s[l.i]
		if !isLower(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
	}
	return l.s[start:l.i], true
}

// bareItem parses a bare item into v (RFC 9651, section 4.2.3.1).
func (l *sfList) bareItem(v *sfValue) bool {
	if l.i == len(l.s) {
		return false
	}
	start := l.i
	var ok bool
	switch c := l.s[l.i]; {
	case c == '-' || isDigit(c):
		v.kind, ok = l.number()
	case c == '"':
		v.kind, ok = kString, l.str()
	case isAlpha(c) || c == '*':
		v.kind, ok = kToken, l.token()
	case c == ':':
		v.kind, ok = kBytes, l.bytes()
	case c == '?':
		ok = l.i+1 < len(l.s) && (l.s[l.i+1] == '0' || l.s[l.i+1] == '1')
		v.kind = kBoolean
		l.i += 2
	case c == '@':
		l.i++
		var k int
		k, ok = l.number()
		ok = ok && k == kInteger
		v.kind = kDate
	case c == '%':
		v.kind, ok = kDisplay, l.display()
	}
	if ok {
		v.raw = l.s[start:l.i]
	}
	return ok
}

// number parses an Integer or a Decimal (RFC 9651, section 4.2.4).
func (l *sfList) number() (int, bool) {
	if l.i < len(l.s) && l.s[l.i] == '-' {
		l.i++
	}
	digits, dot := 0, -1
	for ; l.i < len(l.s); l.i++ {
		c := l.s[l.i]
		if isDigit(c) {
			digits++
		} else if c == '.' && dot < 0 {
			if digits > 12 {
				return 0, false
			}
			dot = digits
		} else {
			break
		}
		if digits > 15 { // 15 digits for an Integer, 12 and 3 for a Decimal
			return 0, false
		}
	}
	switch {
	case digits == 0 || dot == 0:
		return 0, false
	case dot < 0:
		return kInteger, true
	case digits == dot || digits-dot > 3:
		return 0, false // "1." or more than three decimals
	}
	return kDecimal, true
}

// str parses a String (RFC 9651, section 4.2.5).
func (l *sfList) str() bool {
	for l.i++; l.i < len(l.s); l.i++ {
		switch c := l.s[l.i]; {
		case c == '\\':
			l.i++
			if l.i == len(l.s) || (l.s[l.i] != '"' && l.s[l.i] != '\\') {
				return false
			}
		case c == '"':
			l.i++
			return true
		case c < 0x20 || c > 0x7e:
			return false
		}
	}
	return false
}

// token parses a Token (RFC 9651, section 4.2.6); its first character is
// known to be ALPHA or '*'.
func (l *sfList) token() bool {
	for l.i++; l.i < len(l.s) && (isTchar(l.s[l.i]) || l.s[l.i] == ':' || l.s[l.i] == '/'); l.i++ {
	}
	return true
}

// bytes parses a Byte Sequence (RFC 9651, section 4.2.7): base64 between
// colons, with its padding or without, checked as a decoder would check it
// but not decoded.
func (l *sfList) bytes() bool {
	start := l.i + 1
	for l.i++; l.i < len(l.s); l.i++ {
		c := l.s[l.i]
		if c == ':' {
			enc := l.s[start:l.i]
			l.i++
			return validBase64(enc)
		}
		if !isAlpha(c) && !isDigit(c) && c != '+' && c != '/' && c != '=' {
			return false
		}
	}
	return false
}

// validBase64 reports whether enc, made of the base64 alphabet and '=',
// decodes: with padding ('=' only at the end, making the length a multiple
// of 4) or without (a length that is not 1 more than a multiple of 4).
func validBase64(enc string) bool {
	data := strings.TrimRight(enc, "=")
	if strings.IndexByte(data, '=') >= 0 {
		return false
	}
	switch pad := len(enc) - len(data); pad {
	case 0:
		return len(data)%4 != 1
	case 1, 2:
		return len(data)%4 == 4-pad
	}
	return false
}

// display parses a Display String (RFC 9651, section 4.2.10): '%', then a
// quoted string of ASCII in which '%' and two lowercase hex digits stand
// for a byte, the bytes together valid UTF-8.
func (l *sfList) display() bool {
	l.i++
	if l.i == len(l.s) || l.s[l.i] != '"' {
		return false
	}
	var pending [utf8.UTFMax]byte // the bytes of a rune not yet complete
	n := 0
	for l.i++; l.i < len(l.s); l.i++ {
		c := l.s[l.i]
		switch {
		case c < 0x20 || c > 0x7e:
			return false
		case c == '"':
			l.i++
			return n == 0
		case c == '%':
			if l.i+2 >= len(l.s) || !isLowerHex(l.s[l.i+1]) || !isLowerHex(l.s[l.i+2]) {
				return false
			}
			pending[n] = unhex(l.s[l.i+1])<<4 | unhex(l.s[l.i+2])
			n++
			l.i += 2
			if utf8.FullRune(pending[:n]) {
				if r, size := utf8.DecodeRune(pending[:n]); r == utf8.RuneError && size <= 1 || size != n {
					return false
				}
				n = 0
			}
		default:
			if n != 0 {
				return false // an ASCII byte inside a rune
			}
		}
	}
	return false
}

func isDigit(c byte) bool    { return '0' <= c && c <= '9' }
func isLower(c byte) bool    { return 'a' <= c && c <= 'z' }
func isAlpha(c byte) bool    { return isLower(c) || 'A' <= c && c <= 'Z' }
func isLowerHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' }

func unhex(c byte) byte {
	if isDigit(c) {
		return c - '0'
	}
	return c - 'a' + 10
}

// isTchar reports whether c is a tchar of RFC 9110: a character of a
// token.
func isTchar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
