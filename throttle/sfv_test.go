package throttle_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// This file is a strict parser of the Lists of Structured Field Values
// (RFC 9651, section 4.2), for tests that read the RateLimit headers the
// way a client would: parseList fails on anything the RFC says to fail
// on. It parses every type of RFC 9651: Integers, Decimals, Strings,
// Tokens, Byte Sequences, Booleans, Dates, Display Strings, Inner Lists
// and Parameters.

// An sfItem is a member of a List: a bare item with its parameters, or an
// Inner List (a value of type sfInner) with its parameters.
//
// Value is one of: int64 (Integer), sfDecimal, string (String), sfToken,
// []byte (Byte Sequence), bool (Boolean), sfDate, sfDisplay, sfInner.
type sfItem struct {
	Value  any
	Params []sfParam
}

// An sfParam is a parameter: a key and a bare item (true if it has none).
type sfParam struct {
	Key   string
	Value any
}

type (
	sfDecimal float64
	sfToken   string
	sfDate    int64
	sfDisplay string
	sfInner   []sfItem
)

// param returns the value of the parameter key, and whether it is there.
func (it sfItem) param(key string) (any, bool) {
	for _, p := range it.Params {
		if p.Key == key {
			return p.Value, true
		}
	}
	return nil, false
}

// parseList parses s, a field value, as a List.
func parseList(s string) ([]sfItem, error) {
	p := &sfParser{s: s}
	p.skipSP()
	var out []sfItem
	for p.more() {
		it, err := p.itemOrInner()
		if err != nil {
			return nil, err
		}
		out = append(out, it)
		p.skipOWS()
		if !p.more() {
			break
		}
		if p.s[0] != ',' {
			return nil, p.fail("expected ',' after a list member")
		}
		p.s = p.s[1:]
		p.skipOWS()
		if !p.more() {
			return nil, p.fail("trailing ','")
		}
	}
	p.skipSP()
	if p.more() {
		return nil, p.fail("trailing characters")
	}
	return out, nil
}

// headerList parses the fields name of h as one List: a List may be split
// over several fields (RFC 9651, section 3.1), which join with commas.
func headerList(h http.Header, name string) ([]sfItem, error) {
	v := h.Values(name)
	if len(v) == 0 {
		return nil, fmt.Errorf("no %s header", name)
	}
	return parseList(strings.Join(v, ", "))
}

type sfParser struct{ s string }

func (p *sfParser) more() bool { return p.s != "" }

func (p *sfParser) fail(what string) error {
	return fmt.Errorf("structured field: %s at %q", what, p.s)
}

func (p *sfParser) skipSP() {
	for p.more() && p.s[0] == ' ' {
		p.s = p.s[1:]
	}
}

func (p *sfParser) skipOWS() {
	for p.more() && (p.s[0] == ' ' || p.s[0] == '\t') {
		p.s = p.s[1:]
	}
}

func (p *sfParser) itemOrInner() (sfItem, error) {
	if p.more() && p.s[0] == '(' {
		return p.innerList()
	}
	return p.item()
}

func (p *sfParser) innerList() (sfItem, error) {
	p.s = p.s[1:] // '('
	var inner sfInner
	for p.more() {
		p.skipSP()
		if p.more() && p.s[0] == ')' {
			p.s = p.s[1:]
			params, err := p.params()
			return sfItem{Value: inner, Params: params}, err
		}
		it, err := p.item()
		if err != nil {
			return sfItem{}, err
		}
		inner = append(inner, it)
		if !p.more() || (p.s[0] != ' ' && p.s[0] != ')') {
			return sfItem{}, p.fail("expected ' ' or ')' in an inner list")
		}
	}
	return sfItem{}, p.fail("unterminated inner list")
}

func (p *sfParser) item() (sfItem, error) {
	v, err := p.bareItem()
	if err != nil {
		return sfItem{}, err
	}
	params, err := p.params()
	return sfItem{Value: v, Params: params}, err
}

func (p *sfParser) params() ([]sfParam, error) {
	var out []sfParam
	for p.more() && p.s[0] == ';' {
		p.s = p.s[1:]
		p.skipSP()
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		var v any = true
		if p.more() && p.s[0] == '=' {
			p.s = p.s[1:]
			if v, err = p.bareItem(); err != nil {
				return nil, err
			}
		}
		// A repeated key keeps its place and takes the last value.
		if i := indexParam(out, key); i >= 0 {
			out[i].Value = v
		} else {
			out = append(out, sfParam{key, v})
		}
	}
	return out, nil
}

func indexParam(ps []sfParam, key string) int {
	for i, p := range ps {
		if p.Key == key {
			return i
		}
	}
	return -1
}

func (p *sfParser) key() (string, error) {
	if !p.more() || !(isLCAlpha(p.s[0]) || p.s[0] == '*') {
		return "", p.fail("a key must start with a lowercase letter or '*'")
	}
	i := 1
	for i < len(p.s) && (isLCAlpha(p.s[i]) || isDigit(p.s[i]) || strings.IndexByte("_-.*", p.s[i]) >= 0) {
		i++
	}
	k := p.s[:i]
	p.s = p.s[i:]
	return k, nil
}

func (p *sfParser) bareItem() (any, error) {
	if !p.more() {
		return nil, p.fail("missing item")
	}
	switch c := p.s[0]; {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == '*' || isAlpha(c):
		return p.token(), nil
	case c == ':':
		return p.bytes()
	case c == '?':
		return p.boolean()
	case c == '@':
		return p.date()
	case c == '%':
		return p.display()
	}
	return nil, p.fail("not an item")
}

// number is RFC 9651's "Parsing an Integer or Decimal".
func (p *sfParser) number() (any, error) {
	s := p.s
	neg := false
	if s[0] == '-' {
		neg, s = true, s[1:]
	}
	if s == "" || !isDigit(s[0]) {
		return nil, p.fail("a number needs a digit")
	}
	i, dot := 0, -1
	for ; i < len(s); i++ {
		c := s[i]
		if isDigit(c) {
			continue
		}
		if c == '.' && dot < 0 {
			if i > 12 {
				return nil, p.fail("a decimal has at most 12 integer digits")
			}
			dot = i
			continue
		}
		break
	}
	num := s[:i]
	if dot < 0 && len(num) > 15 {
		return nil, p.fail("an integer has at most 15 digits")
	}
	if dot >= 0 && len(num) > 16 {
		return nil, p.fail("a decimal has at most 16 characters")
	}
	p.s = s[i:]
	if dot < 0 {
		n, _ := strconv.ParseInt(num, 10, 64)
		if neg {
			n = -n
		}
		return n, nil
	}
	if frac := len(num) - dot - 1; frac == 0 || frac > 3 {
		return nil, p.fail("a decimal has 1 to 3 fraction digits")
	}
	f, _ := strconv.ParseFloat(num, 64)
	if neg {
		f = -f
	}
	return sfDecimal(f), nil
}

func (p *sfParser) str() (any, error) {
	var b strings.Builder
	for i := 1; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '\\':
			i++
			if i == len(p.s) || (p.s[i] != '"' && p.s[i] != '\\') {
				return nil, p.fail("bad escape in a string")
			}
			b.WriteByte(p.s[i])
		case c == '"':
			p.s = p.s[i+1:]
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return nil, p.fail("a string holds printable ASCII only")
		default:
			b.WriteByte(c)
		}
	}
	return nil, p.fail("unterminated string")
}

func (p *sfParser) token() sfToken {
	i := 1
	for i < len(p.s) && (isTchar(p.s[i]) || p.s[i] == ':' || p.s[i] == '/') {
		i++
	}
	t := p.s[:i]
	p.s = p.s[i:]
	return sfToken(t)
}

func (p *sfParser) bytes() (any, error) {
	end := strings.IndexByte(p.s[1:], ':')
	if end < 0 {
		return nil, p.fail("unterminated byte sequence")
	}
	enc := p.s[1 : 1+end]
	for i := 0; i < len(enc); i++ {
		if c := enc[i]; !(isAlpha(c) || isDigit(c) || c == '+' || c == '/' || c == '=') {
			return nil, p.fail("not base64 in a byte sequence")
		}
	}
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		// RFC 9651 asks parsers to accept base64 without its padding.
		if b, err = base64.RawStdEncoding.DecodeString(enc); err != nil {
			return nil, p.fail("bad base64 in a byte sequence")
		}
	}
	p.s = p.s[2+end:]
	return b, nil
}

func (p *sfParser) boolean() (any, error) {
	if len(p.s) < 2 || (p.s[1] != '0' && p.s[1] != '1') {
		return nil, p.fail("a boolean is ?0 or ?1")
	}
	v := p.s[1] == '1'
	p.s = p.s[2:]
	return v, nil
}

func (p *sfParser) date() (any, error) {
	p.s = p.s[1:]
	if !p.more() || !(p.s[0] == '-' || isDigit(p.s[0])) {
		return nil, p.fail("a date is an integer")
	}
	v, err := p.number()
	if err != nil {
		return nil, err
	}
	n, ok := v.(int64)
	if !ok {
		return nil, p.fail("a date is an integer, not a decimal")
	}
	return sfDate(n), nil
}

func (p *sfParser) display() (any, error) {
	if len(p.s) < 2 || p.s[1] != '"' {
		return nil, p.fail(`a display string starts with %"`)
	}
	var b []byte
	for i := 2; i < len(p.s); i++ {
		switch c := p.s[i]; {
		case c == '%':
			if i+2 >= len(p.s) || !isLCHex(p.s[i+1]) || !isLCHex(p.s[i+2]) {
				return nil, p.fail("bad percent-encoding in a display string")
			}
			n, _ := strconv.ParseUint(p.s[i+1:i+3], 16, 8)
			b = append(b, byte(n))
			i += 2
		case c == '"':
			if !utf8.Valid(b) {
				return nil, p.fail("a display string is UTF-8")
			}
			p.s = p.s[i+1:]
			return sfDisplay(b), nil
		case c < 0x20 || c > 0x7e:
			return nil, p.fail("a display string holds printable ASCII only")
		default:
			b = append(b, c)
		}
	}
	return nil, p.fail("unterminated display string")
}

func isDigit(c byte) bool   { return '0' <= c && c <= '9' }
func isLCAlpha(c byte) bool { return 'a' <= c && c <= 'z' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || 'A' <= c && c <= 'Z' }
func isLCHex(c byte) bool   { return isDigit(c) || 'a' <= c && c <= 'f' }
func isTchar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// TestParseList checks the parser on examples of RFC 9651 and of the
// draft, and on what it must refuse, so that the header tests that use it
// check what they say.
func TestParseList(t *testing.T) {
	valid := []struct {
		in   string
		want []sfItem
	}{
		{``, nil},
		{`  "default";q=100;w=60  `, []sfItem{{"default", []sfParam{{"q", int64(100)}, {"w", int64(60)}}}}},
		{`"burst";q=100;w=60,"daily";q=1000;w=86400`, []sfItem{
			{"burst", []sfParam{{"q", int64(100)}, {"w", int64(60)}}},
			{"daily", []sfParam{{"q", int64(1000)}, {"w", int64(86400)}}},
		}},
		{`"peruser";q=65535;qu="content-bytes";w=10;pk=:sdfjLJUOUH==:`, []sfItem{{"peruser", []sfParam{
			{"q", int64(65535)}, {"qu", "content-bytes"}, {"w", int64(10)}, {"pk", mustB64("sdfjLJUOUH==")},
		}}}},
		{"sugar, tea,\trum", []sfItem{{sfToken("sugar"), nil}, {sfToken("tea"), nil}, {sfToken("rum"), nil}}},
		{`-999999999999999, 999999999999999, 1.5, -0.001, 123456789012.123`, []sfItem{
			{int64(-999999999999999), nil}, {int64(999999999999999), nil}, {sfDecimal(1.5), nil},
			{sfDecimal(-0.001), nil}, {sfDecimal(123456789012.123), nil},
		}},
		{`"a \"b\" \\c"`, []sfItem{{`a "b" \c`, nil}}},
		{`foo123/456:x, *x`, []sfItem{{sfToken("foo123/456:x"), nil}, {sfToken("*x"), nil}}},
		{`?0;a;b=?1, @1659578233, %"f%c3%bc%c3%bcr"`, []sfItem{
			{false, []sfParam{{"a", true}, {"b", true}}}, {sfDate(1659578233), nil}, {sfDisplay("füür"), nil},
		}},
		{`("a" b);x=1, ()`, []sfItem{
			{sfInner{{"a", nil}, {sfToken("b"), nil}}, []sfParam{{"x", int64(1)}}}, {sfInner(nil), nil},
		}},
		{`a;x=1;y=2;x=3`, []sfItem{{sfToken("a"), []sfParam{{"x", int64(3)}, {"y", int64(2)}}}}},
		{`a; x=1`, []sfItem{{sfToken("a"), []sfParam{{"x", int64(1)}}}}},
	}
	for _, tt := range valid {
		got, err := parseList(tt.in)
		if err != nil {
			t.Errorf("parseList(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseList(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
	invalid := []string{
		`"default";q=100,`,             // trailing comma
		`,a`,                           // leading comma
		`a,,b`,                         // empty member
		`"unterminated`,                // string
		`"tab	in"`,                     // control character in a string
		`"bad \n escape"`,              // escape other than \" and \\
		`"é"`,                          // non-ASCII
		`1234567890123456`,             // 16-digit integer
		`1234567890123.1`,              // 13 integer digits in a decimal
		`1.1234`,                       // 4 fraction digits
		`1.`,                           // no fraction digit
		`-`,                            // sign alone
		`a;Q=1`,                        // uppercase key
		`a;1x=1`,                       // key starting with a digit
		`a;q=`,                         // parameter without a value
		`a b`,                          // two items without a comma
		`?2`,                           // boolean
		`@1.5`,                         // decimal date
		`:abc`,                         // unterminated byte sequence
		`:a*b=:`,                       // not base64
		`%"F%C3%BC"`,                   // uppercase percent-encoding
		`%"%ff"`,                       // not UTF-8
		`("a" "b"`,                     // unterminated inner list
		`("a""b")`,                     // inner list items without a space
		`=1`,                           // not an item
		`"default";r=1;t=1 x`,          // trailing garbage
		"\t\"default\";q=1",            // leading tab: only SP is discarded at the start
		"\x00",                         // NUL
		`"a";q=100;w=60 ,"b"` + "\x7f", // DEL
	}
	for _, in := range invalid {
		if got, err := parseList(in); err == nil {
			t.Errorf("parseList(%q) = %#v, want an error", in, got)
		}
	}
}

func mustB64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// intParam returns the parameter key of it, which must be an Integer.
func intParam(it sfItem, key string) (int64, error) {
	v, ok := it.param(key)
	if !ok {
		return 0, fmt.Errorf("no parameter %q", key)
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("parameter %q is %#v, not an Integer", key, v)
	}
	return n, nil
}
