package throttle

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
)

// KeyByIP keys requests by the client's IP address, as a [Middleware] does
// by default, and trusts the proxies whose addresses are in the trusted
// prefixes to say who the client is. With no prefix, it is the default:
// the key is the address the connection comes from (the request's
// RemoteAddr), and the X-Forwarded-For and X-Real-IP headers, which any
// client can send, are ignored.
//
// When the connection comes from a trusted proxy, the key is the rightmost
// address of X-Forwarded-For (all its fields, in order) that is not in a
// trusted prefix: the address that the last trusted proxy saw the request
// come from. The addresses to its left were written by the client or by
// proxies nobody vouches for, and are not read. If every address is
// trusted, the leftmost is the client. Without X-Forwarded-For, a
// trusted proxy's X-Real-IP (its last field) is the client, and without
// either, the proxy itself is. So each trusted proxy must append the
// address it received the request from to X-Forwarded-For, as nginx's
// $proxy_add_x_forwarded_for and most load balancers do, or set X-Real-IP
// and drop any X-Forwarded-For that came in. An address that cannot be
// parsed where the client's should be is a key error (400): it means a
// trusted proxy is misconfigured, and guessing would let a client choose
// its key. Addresses may carry a port (192.0.2.1:443, [2001:db8::1]:443).
//
// Whatever its source, an IPv4-mapped IPv6 address (::ffff:192.0.2.1) is
// the IPv4 address, zones are dropped, and an IPv6 client is keyed by its
// /64 network (see [WithIPv6Prefix]): a host is usually given a whole /64,
// so a key per address would let it take a new bucket at will. An IPv4
// key is the address as RemoteAddr or the header writes it ("192.0.2.1",
// with no allocation); an IPv6 key is the network's prefix
// ("2001:db8:1:2::/64").
//
// KeyByIP panics on an invalid prefix. A prefix of IPv4-mapped IPv6
// addresses is taken as the IPv4 prefix it maps.
func KeyByIP(trusted ...netip.Prefix) MiddlewareOption {
	ps := make([]netip.Prefix, 0, len(trusted))
	for _, p := range trusted {
		if !p.IsValid() {
			panic(fmt.Sprintf("throttle: KeyByIP: invalid prefix %v", p))
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		ps = append(ps, p.Masked())
	}
	return func(m *Middleware) {
		m.ipOpts.trusted = ps
		m.setKey("KeyByIP", nil)
	}
}

// WithIPv6Prefix keys IPv6 clients by their network of the given prefix
// length, instead of 64: 128 keys each address apart, 56 or 48 groups the
// networks that some providers give a customer. It applies to keys by IP
// only (the default, or [KeyByIP]). It panics unless 1 <= bits <= 128.
func WithIPv6Prefix(bits int) MiddlewareOption {
	if bits < 1 || bits > 128 {
		panic(fmt.Sprintf("throttle: WithIPv6Prefix: bits %d must be from 1 to 128", bits))
	}
	return func(m *Middleware) { m.ipOpts.v6Bits, m.v6Set = bits, true }
}

// KeyByHeader keys requests by the value of the request header name, such
// as an API key's: the first value, as [http.Header.Get] returns it. A
// request without the header, or with an empty value, is a key error
// (400, or see [WithKeyErrorHandler]); so is one longer than
// [WithMaxKeyLength]. Use [KeyBy] to fall back on another key. It panics
// if name is not a valid header name.
func KeyByHeader(name string) MiddlewareOption {
	if !isToken(name) {
		panic(fmt.Sprintf("throttle: KeyByHeader: %q is not a valid header name", name))
	}
	canon := textproto.CanonicalMIMEHeaderKey(name)
	missing := errors.New("throttle: the request has no " + canon + " header")
	keyOf := func(r *http.Request) (string, error) {
		if v := r.Header[canon]; len(v) > 0 && v[0] != "" {
			return v[0], nil
		}
		return "", missing
	}
	return func(m *Middleware) { m.setKey("KeyByHeader", keyOf) }
}

// KeyBy keys requests by what keyOf returns: an authenticated user, a
// tenant, an API key with the client's address as a fallback. An error
// from keyOf is a key error (400, or see [WithKeyErrorHandler], which
// receives it as it is), as is a key longer than [WithMaxKeyLength]. It
// panics if keyOf is nil.
func KeyBy(keyOf func(r *http.Request) (string, error)) MiddlewareOption {
	if keyOf == nil {
		panic("throttle: KeyBy: nil function")
	}
	return func(m *Middleware) { m.setKey("KeyBy", keyOf) }
}

// ipKeys makes keys by IP: KeyByIP's trusted prefixes (masked, none
// IPv4-mapped) and WithIPv6Prefix's length.
type ipKeys struct {
	trusted []netip.Prefix
	v6Bits  int
}

// key returns r's client's key.
func (k ipKeys) key(r *http.Request) (string, error) {
	text, a, ok := parseHost(r.RemoteAddr)
	if !ok {
		return "", fmt.Errorf("throttle: RemoteAddr %q is not an IP address", clip(r.RemoteAddr))
	}
	if len(k.trusted) > 0 && k.trusts(a) {
		ft, fa, found, err := k.forwarded(r.Header)
		if err != nil {
			return "", err
		}
		if found {
			text, a = ft, fa
		}
	}
	if !a.Is4() {
		return k.v6Key(a), nil
	}
	if text != "" {
		return text, nil
	}
	return a.String(), nil
}

// v6Key returns the key of the IPv6 address a: its network, or a itself
// for a prefix length of 128.
func (k ipKeys) v6Key(a netip.Addr) string {
	var buf [64]byte // the longest prefix text is 49 bytes
	var b []byte
	if k.v6Bits == 128 {
		b = a.AppendTo(buf[:0])
	} else {
		p, _ := a.Prefix(k.v6Bits) // cannot fail: a is IPv6, bits in range
		b = p.AppendTo(buf[:0])
	}
	return string(b)
}

// trusts reports whether a is in a trusted prefix.
func (k ipKeys) trusts(a netip.Addr) bool {
	for _, p := range k.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwarded returns the client that the trusted proxies name in h, and
// false if they name none.
func (k ipKeys) forwarded(h http.Header) (string, netip.Addr, bool, error) {
	var leftText string
	var left netip.Addr
	vals := h["X-Forwarded-For"]
	for i := len(vals) - 1; i >= 0; i-- {
		for v := vals[i]; v != ""; {
			j := strings.LastIndexByte(v, ',')
			hop := trimOWS(v[j+1:])
			v = v[:max(j, 0)]
			if hop == "" {
				continue // an empty list element, which RFC 9110 ignores
			}
			text, a, ok := parseHost(hop)
			if !ok {
				return "", netip.Addr{}, false, fmt.Errorf("throttle: X-Forwarded-For hop %q is not an IP address", clip(hop))
			}
			if !k.trusts(a) {
				return text, a, true, nil
			}
			leftText, left = text, a
		}
	}
	if left.IsValid() {
		return leftText, left, true, nil
	}
	if vals := h["X-Real-Ip"]; len(vals) > 0 {
		v := trimOWS(vals[len(vals)-1])
		text, a, ok := parseHost(v)
		if !ok {
			return "", netip.Addr{}, false, fmt.Errorf("throttle: X-Real-IP %q is not an IP address", clip(v))
		}
		return text, a, true, nil
	}
	return "", netip.Addr{}, false, nil
}

// parseHost parses an address with or without a port: 192.0.2.1,
// 192.0.2.1:80, 2001:db8::1, [2001:db8::1], [fe80::1%eth0]:80. It returns
// the address without its zone, an IPv4-mapped one as IPv4, and, when s
// names an IPv4 address directly, its text within s (the canonical form,
// since netip accepts no other), or else "".
func parseHost(s string) (string, netip.Addr, bool) {
	host, bracketed := s, false
	switch i := strings.LastIndexByte(s, ':'); {
	case s != "" && s[0] == '[':
		bracketed = true
		j := strings.IndexByte(s, ']')
		if j < 0 || (j+1 < len(s) && (s[j+1] != ':' || !isPort(s[j+2:]))) {
			return "", netip.Addr{}, false
		}
		host = s[1:j]
	case i >= 0 && strings.IndexByte(s[:i], ':') < 0:
		if !isPort(s[i+1:]) {
			return "", netip.Addr{}, false
		}
		host = s[:i]
	}
	if !bracketed {
		if a, ok := parseIPv4(host); ok {
			return host, a, true
		}
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Is4() {
		// An IPv4 address is either parsed above or in brackets.
		return "", netip.Addr{}, false
	}
	if a.Is4In6() {
		return "", a.Unmap(), true
	}
	return "", a.WithZone(""), true
}

// parseIPv4 parses s as netip.ParseAddr parses an IPv4 address: four
// decimal fields from 0 to 255, without leading zeros. It is the common
// case of RemoteAddr, and takes half the time ParseAddr does, which must
// first find out which kind of address it has (FuzzRemoteAddr checks that
// the two agree).
func parseIPv4(s string) (netip.Addr, bool) {
	var ip [4]byte
	field, n, digits := 0, 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			if digits == 1 && n == 0 {
				return netip.Addr{}, false // a leading zero
			}
			n = n*10 + int(c-'0')
			digits++
			if n > 255 {
				return netip.Addr{}, false
			}
		case c == '.' && digits > 0 && field < 3:
			ip[field] = byte(n)
			field, n, digits = field+1, 0, 0
		default:
			return netip.Addr{}, false
		}
	}
	if field != 3 || digits == 0 {
		return netip.Addr{}, false
	}
	ip[3] = byte(n)
	return netip.AddrFrom4(ip), true
}

// isPort reports whether s is a port number: decimal digits, at most
// 65535.
func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n <= 65535
}

// trimOWS trims the spaces and tabs that HTTP allows around list elements.
func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// clip shortens s for an error message: a client may send 10 KB where an
// address should be.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// isToken reports whether s is an HTTP token (RFC 9110), as a header name
// must be.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}
