// Package jsonsum ends a small JSON file with a checksum of itself, so that a storage fault
// which changes a byte inside a value (a digit of a number that still parses, and that no
// check of the value's meaning can tell from a right one) makes the file unreadable rather
// than wrong. The checksum is the object's last member, "crc32c": a CRC-32C (Castagnoli) of
// the file with that member left out, in 8 lowercase hex digits, which catches every change
// of one bit and every burst of up to 32. The file stays JSON that any reader can look at.
package jsonsum

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
)

// member opens the checksum member.
const member = `,"crc32c":"`

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrMismatch is matched (errors.Is) when the checksum and the content disagree.
var ErrMismatch = errors.New("jsonsum: checksum mismatch: a storage fault changed the file")

// Append returns b, a JSON object as encoding/json writes it (ending in '}', with at least
// one member), with the checksum member added at its end. It may reuse b's storage.
func Append(b []byte) []byte {
	sum := crc32.Checksum(b, castagnoli)
	return fmt.Appendf(b[:len(b)-1], `%s%08x"}`, member, sum)
}

// Strip checks the checksum member that ends b and returns b without it, in new storage. A
// b without one (written before its writer added checksums) is returned as it is: one bit
// changed anywhere in the member Append wrote leaves no valid JSON, or an unknown member,
// rather than a file without it.
func Strip(b []byte) ([]byte, error) {
	i := bytes.LastIndex(b, []byte(member))
	if i < 0 {
		return b, nil
	}
	hex := b[i+len(member):]
	if len(hex) != 10 || hex[8] != '"' || hex[9] != '}' {
		return nil, errors.New(`jsonsum: the checksum is not 8 hex digits closing the file`)
	}
	var want uint32
	for _, c := range hex[:8] {
		switch {
		case c >= '0' && c <= '9':
			want = want<<4 | uint32(c-'0')
		case c >= 'a' && c <= 'f':
			want = want<<4 | uint32(c-'a'+10)
		default:
			return nil, fmt.Errorf("jsonsum: the checksum %q is not 8 lowercase hex digits", hex[:8])
		}
	}
	body := append(b[:i:i], '}')
	if got := crc32.Checksum(body, castagnoli); got != want {
		return nil, fmt.Errorf("%w (it says %08x, the content sums to %08x)", ErrMismatch, want, got)
	}
	return body, nil
}
