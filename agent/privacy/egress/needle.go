package egress

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Length thresholds, in bytes of a value's form. See the package doc for the reasoning.
const (
	// MinSubstring is the shortest value matched anywhere in a payload, inside other text.
	// Shorter values are matched only as whole words, or whole base64 tokens.
	MinSubstring = 8
	// MinEncoded is the shortest value whose hex and base64 forms are searched, and the
	// shortest matched as a word; a shorter value is matched only as a whole JSON string (raw,
	// case-folded or escaped), since 2–6 hex or base64 characters occur by chance in any serial
	// or key, and 1–3 letters in any sentence or identifier.
	MinEncoded = 4
)

// bound says what must surround a match.
type bound uint8

const (
	boundNone  bound = iota // anywhere
	boundWord               // no letter or digit beside an alphanumeric edge of the needle
	boundB64                // a whole base64 token: no base64 character on either side
	boundQuote              // a whole JSON string ("ab"), or the whole of the text checked
)

// needle is one normalized byte string searched for in normalized payloads.
type needle struct {
	s     []byte
	kind  Kind
	enc   Encoding
	bound bound
	left  bool   // the byte before must not be a word (or base64) byte
	right bool   // the byte after must not be one
	exact []byte // for enc == CaseFolded: the form as registered, to tell a Raw match
}

// at reports whether the needle, found in h at i, has the boundaries it needs.
func (n *needle) at(h []byte, i int) bool {
	if n.bound == boundQuote {
		j := i + len(n.s)
		return (i == 0 || h[i-1] == '"') && (j == len(h) || h[j] == '"')
	}
	is := isWord
	if n.bound == boundB64 {
		is = isB64
	}
	if n.left && i > 0 && is(h[i-1]) {
		return false
	}
	if j := i + len(n.s); n.right && j < len(h) && is(h[j]) {
		return false
	}
	return true
}

// matchAt reports whether the needle matches h at i.
func (n *needle) matchAt(h []byte, i int) bool {
	return bytes.HasPrefix(h[i:], n.s) && (n.bound == boundNone || n.at(h, i))
}

// isWord reports bytes that make a word: ASCII letters and digits, and every non-ASCII byte
// (letters of other scripts).
func isWord(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c >= 0x80
}

// isB64 reports bytes of either base64 alphabet.
func isB64(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
}

// forms returns the spellings of a value of kind that are searched for: the value itself, and
// for a BSSID or an IP address the other common spellings and the raw bytes.
func forms(kind Kind, v string) []string {
	out := []string{v}
	switch kind {
	case KindBSSID:
		hw, err := net.ParseMAC(v)
		if err != nil || len(hw) != 6 {
			return out
		}
		h := hex.EncodeToString(hw)
		out = append(out, hw.String(), strings.ReplaceAll(hw.String(), ":", "-"), h,
			h[0:4]+"."+h[4:8]+"."+h[8:12], string(hw))
	case KindAddress:
		a, err := netip.ParseAddr(v)
		if err != nil {
			return out
		}
		a = a.WithZone("")
		out = append(out, a.String(), string(a.AsSlice()))
		if a.Is4() {
			out = append(out, "::ffff:"+a.String())
		} else {
			out = append(out, a.StringExpanded())
			if a.Is4In6() {
				out = append(out, a.Unmap().String())
			}
		}
	}
	return out
}

// needles returns the needles for one form of a value of kind. An address is matched raw only
// as a whole word, whatever its length, so that 10.0.0.1 is not found in 10.0.0.10. A value
// under MinEncoded bytes is matched only as a whole JSON string: a nickname "Cam" must not
// stop every message that names the device cam-0001.
func needles(kind Kind, form string) []needle {
	f := []byte(form)
	nf := normalize(nil, f)
	long := len(f) >= MinSubstring
	wb := boundWord
	if long {
		wb = boundNone
	}
	rawBound := wb
	switch {
	case len(f) < MinEncoded:
		rawBound = boundQuote
	case kind == KindAddress:
		rawBound = boundWord
	}
	out := []needle{{s: nf, kind: kind, enc: CaseFolded, bound: rawBound, exact: f}}
	if bytes.IndexByte(nf, ' ') >= 0 {
		// Form encoding writes a space as '+'. Searching for that spelling directly spares a
		// percent-decoding pass over every payload that has a '+' (base64 has many).
		plus := bytes.ReplaceAll(nf, []byte(" "), []byte("+"))
		out = append(out, needle{s: plus, kind: kind, enc: PercentEncoded, bound: rawBound})
	}
	if len(f) >= MinEncoded {
		// Hex and base64 encode the bytes, so each letter case of the value encodes
		// differently: the value as registered, and in lower and in upper case.
		variants := [][]byte{f}
		for _, c := range []string{strings.ToLower(form), strings.ToUpper(form)} {
			if !slices.ContainsFunc(variants, func(w []byte) bool { return string(w) == c }) {
				variants = append(variants, []byte(c))
			}
		}
		for _, w := range variants {
			out = append(out, needle{s: []byte(hex.EncodeToString(w)), kind: kind, enc: Hex, bound: wb})
			if long {
				for o := range 3 {
					out = append(out, needle{s: normalize(nil, stableBase64(w, o)), kind: kind, enc: Base64})
				}
			} else {
				out = append(out, needle{s: normalize(nil, []byte(base64.RawStdEncoding.EncodeToString(w))), kind: kind, enc: Base64, bound: boundB64})
			}
		}
	}
	for i := range out {
		n := &out[i]
		switch n.bound {
		case boundWord:
			first, last := n.s[0], n.s[len(n.s)-1]
			n.left = first < 0x80 && isWord(first)
			n.right = last < 0x80 && isWord(last)
		case boundB64:
			n.left, n.right = true, true
		}
	}
	return out
}

// stableBase64 returns the base64 characters that encode v, and nothing else, when v starts at
// a byte offset ≡ o (mod 3) of the encoded data.
//
// Base64 character i encodes bits [6i, 6i+6) of the data. With v at byte offset o (taking the
// offset mod 3, since every 3 bytes make 4 characters), v occupies bits [8o, 8o+8n); the
// characters wholly inside that range, i from ⌈8o/6⌉ to ⌊(8o+8n)/6⌋-1, depend on v alone. So
// whatever surrounds v, and whether it is padded, its encoding contains one of the three
// stable strings, and a search for all three finds v at every alignment. For n ≥ 8 each is at
// least 10 characters (60 bits), too long to occur by chance.
func stableBase64(v []byte, o int) []byte {
	buf := make([]byte, o+len(v))
	copy(buf[o:], v)
	enc := base64.RawStdEncoding.EncodeToString(buf)
	return []byte(enc[(8*o+5)/6 : (8*o+8*len(v))/6])
}

// index finds every needle in one pass over a normalized payload.
//
// Needles of 4 bytes or more are filed by a hash of their first 4 bytes; the scan hashes the 4
// bytes at each position and tests a 1024-bucket table, checking the needles of a bucket only
// when it is not empty. The cost is one multiply and one load per byte of payload, whatever
// the number of needles; a run of one SIMD substring search per needle costs more as soon as
// there are more than a handful. Shorter needles (from values of 1–3 bytes) are few and are
// searched one by one.
type index struct {
	needles []needle
	head    [1 << indexBits]int32 // first needle of each bucket, or -1
	next    []int32               // next needle in the same bucket, or -1
	short   []int32               // needles under 4 bytes
}

const indexBits = 10

func bucket(k uint32) uint32 { return (k * 2654435761) >> (32 - indexBits) }

func newIndex(ns []needle) *index {
	x := &index{needles: ns, next: make([]int32, len(ns))}
	for i := range x.head {
		x.head[i] = -1
	}
	// File in reverse so that each bucket lists its needles in their original order.
	for i := len(ns) - 1; i >= 0; i-- {
		if len(ns[i].s) < 4 {
			x.short = append(x.short, int32(i))
			continue
		}
		b := bucket(binary.LittleEndian.Uint32(ns[i].s))
		x.next[i], x.head[b] = x.head[b], int32(i)
	}
	return x
}

// each calls fn for every match in h, in order of position (short needles last), until fn
// returns false.
func (x *index) each(h []byte, fn func(n *needle, at int) bool) {
	if len(h) >= 4 {
		// k holds the 4 bytes at i, little-endian, rolled along one byte at a time.
		k := uint32(h[0])<<8 | uint32(h[1])<<16 | uint32(h[2])<<24
		for i := 0; i+3 < len(h); i++ {
			k = k>>8 | uint32(h[i+3])<<24
			for j := x.head[bucket(k)]; j >= 0; j = x.next[j] {
				if n := &x.needles[j]; n.matchAt(h, i) && !fn(n, i) {
					return
				}
			}
		}
	}
	for _, j := range x.short {
		n := &x.needles[j]
		for off := 0; off <= len(h); {
			i := bytes.Index(h[off:], n.s)
			if i < 0 {
				break
			}
			i += off
			if (n.bound == boundNone || n.at(h, i)) && !fn(n, i) {
				return
			}
			off = i + 1
		}
	}
}

// first returns the first match in h, or nil. It is each without the callback, for Check.
func (x *index) first(h []byte) *needle {
	if len(h) >= 4 {
		k := uint32(h[0])<<8 | uint32(h[1])<<16 | uint32(h[2])<<24
		for i := 3; i < len(h); i++ {
			k = k>>8 | uint32(h[i])<<24
			for j := x.head[bucket(k)]; j >= 0; j = x.next[j] {
				if n := &x.needles[j]; n.matchAt(h, i-3) {
					return n
				}
			}
		}
	}
	for _, j := range x.short {
		n := &x.needles[j]
		for off := 0; off <= len(h); {
			i := bytes.Index(h[off:], n.s)
			if i < 0 {
				break
			}
			if i += off; n.bound == boundNone || n.at(h, i) {
				return n
			}
			off = i + 1
		}
	}
	return nil
}
