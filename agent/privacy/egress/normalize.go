package egress

import (
	"slices"
	"unicode"
	"unicode/utf8"
)

// normalize appends the normal form of b to dst. Payloads and needles are both normalized, and
// needles are searched in normalized payloads, which makes one search cover several spellings:
//
//   - ASCII letters are folded to lower case, other runes through
//     unicode.ToLower(unicode.ToUpper(r)), which folds the common pairs (É/é), the Kelvin sign
//     and the long s. Full case folding (ß to ss) is not done: it changes lengths in ways a
//     substring search cannot follow cheaply.
//   - '-' and '_' become '+' and '/', so a base64 needle finds both alphabets. (The price: a
//     value with a '-' is also found spelled with a '+'. The guard errs towards refusing.)
//   - Bytes that are not valid UTF-8 are copied as they are, so binary data normalizes too.
//
// Base64 is case-sensitive, but a folded base64 needle of at least 10 characters still carries
// more than 45 bits (each character keeps 5 of its 6 bits), far too many to match by chance.
func normalize(dst, b []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, len(b))[:n+len(b)]
	d := dst[n:]
	i := 0
	for ; i < len(b); i++ {
		c := b[i]
		if c >= utf8.RuneSelf {
			break
		}
		d[i] = normal[c]
	}
	if i == len(b) {
		return dst
	}
	dst = dst[:n+i]
	for i < len(b) {
		c := b[i]
		if c < utf8.RuneSelf {
			dst = append(dst, normal[c])
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, c)
			i++
			continue
		}
		dst = utf8.AppendRune(dst, unicode.ToLower(unicode.ToUpper(r)))
		i += size
	}
	return dst
}

// normal maps each ASCII byte to its normal form.
var normal = func() (t [utf8.RuneSelf]byte) {
	for i := range t {
		t[i] = byte(i)
		if 'A' <= i && i <= 'Z' {
			t[i] += 'a' - 'A'
		}
	}
	t['-'], t['_'] = '+', '/'
	return t
}()

// normalizeMap is normalize that also returns, for each byte of the result and one past its
// end, the offset in b it came from. Redact uses it to map a match back to the original text.
func normalizeMap(b []byte) ([]byte, []int) {
	dst := make([]byte, 0, len(b))
	at := make([]int, 0, len(b)+1)
	for i := 0; i < len(b); {
		_, n := utf8.DecodeRune(b[i:])
		before := len(dst)
		dst = normalize(dst, b[i:i+n])
		for range len(dst) - before {
			at = append(at, i)
		}
		i += n
	}
	return dst, append(at, len(b))
}
