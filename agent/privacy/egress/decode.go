package egress

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// unescapeJSON appends b to dst with JSON string escapes undone (RFC 8259 §7): \" \\ \/ \b \f
// \n \r \t and \uXXXX, with surrogate pairs joined (a lone surrogate becomes U+FFFD). It is
// applied to the whole payload, inside strings or not; anything that is not a valid escape is
// copied as it is.
func unescapeJSON(dst, b []byte) []byte {
	for i := 0; i < len(b); i++ {
		// Copy the run up to the next backslash in one go.
		j := bytes.IndexByte(b[i:], '\\')
		if j < 0 {
			return append(dst, b[i:]...)
		}
		dst = append(dst, b[i:i+j]...)
		i += j
		c := b[i]
		if i+1 == len(b) {
			dst = append(dst, c)
			continue
		}
		switch e := b[i+1]; e {
		case '"', '\\', '/':
			dst = append(dst, e)
			i++
		case 'b':
			dst = append(dst, '\b')
			i++
		case 'f':
			dst = append(dst, '\f')
			i++
		case 'n':
			dst = append(dst, '\n')
			i++
		case 'r':
			dst = append(dst, '\r')
			i++
		case 't':
			dst = append(dst, '\t')
			i++
		case 'u':
			r, ok := hex4(b[i+2:])
			if !ok {
				dst = append(dst, c)
				continue
			}
			i += 5
			if utf16.IsSurrogate(r) {
				if i+2 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
					if r2, ok := hex4(b[i+3:]); ok {
						if p := utf16.DecodeRune(r, r2); p != utf8.RuneError {
							r = p
							i += 6
						}
					}
				}
			}
			dst = utf8.AppendRune(dst, r) // a lone surrogate is appended as U+FFFD
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		v, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescapePercent appends b to dst with percent-encoding undone (RFC 3986 §2.1, either hex
// case) and '+' read as a space (application/x-www-form-urlencoded). A '%' not followed by two
// hex digits is copied as it is.
func unescapePercent(dst, b []byte) []byte {
	for i := 0; i < len(b); i++ {
		// Copy the run up to the next '%' or '+' in one go.
		j := bytes.IndexAny(b[i:], "%+")
		if j < 0 {
			return append(dst, b[i:]...)
		}
		dst = append(dst, b[i:i+j]...)
		i += j
		c := b[i]
		switch {
		case c == '%' && i+2 < len(b):
			hi, ok1 := unhex(b[i+1])
			lo, ok2 := unhex(b[i+2])
			if ok1 && ok2 {
				dst = append(dst, hi<<4|lo)
				i += 2
				continue
			}
			dst = append(dst, c)
		case c == '+':
			dst = append(dst, ' ')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
