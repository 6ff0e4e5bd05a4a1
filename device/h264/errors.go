package h264

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers match them with errors.Is; the wrapping error says what was wrong.
var (
	// ErrTooLarge reports a NAL unit or an access unit over the splitter's size cap. The
	// error is a *SizeError that names the size. The splitter has dropped the access unit
	// and resynchronises; Next may be called again.
	ErrTooLarge = errors.New("h264: too large")
	// ErrMalformed reports bytes that do not follow the H.264 syntax: an SPS that does not
	// parse, or a NAL unit whose forbidden_zero_bit is set. When the splitter returns it, it
	// has dropped the access unit and resynchronises; Next may be called again.
	ErrMalformed = errors.New("h264: malformed")
)

// SizeError reports a NAL unit or access unit over the splitter's cap. It unwraps to
// ErrTooLarge.
type SizeError struct {
	// Unit is "NAL unit" or "access unit".
	Unit string
	// Size is the number of bytes seen when the cap was crossed; the whole unit may be
	// larger, since the splitter stops reading it at that point.
	Size int
	// Limit is the cap in bytes.
	Limit int
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("h264: %s of at least %d bytes exceeds limit of %d bytes", e.Unit, e.Size, e.Limit)
}

// Unwrap returns ErrTooLarge.
func (e *SizeError) Unwrap() error { return ErrTooLarge }

// malformed wraps ErrMalformed with a description.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}
