package egress

import (
	"errors"
	"fmt"
)

// ErrSensitive is matched (errors.Is) by every *SensitiveError: a payload carried a
// sensitive value and was refused.
var ErrSensitive = errors.New("egress: sensitive value in outbound data")

// SensitiveError says which kind of value a refused payload carried and how it was written.
// It never holds the value.
type SensitiveError struct {
	// Kind is the kind of value found, as registered with Guard.Set.
	Kind Kind
	// Encoding is how the value itself was written: Raw, CaseFolded, Hex or Base64, or
	// JSONEscaped or PercentEncoded when it appeared only once that layer was undone.
	Encoding Encoding
	// Layer is the encoding undone around a Hex or Base64 value before it was found
	// (JSONEscaped or PercentEncoded), or "".
	Layer Encoding
}

func (e *SensitiveError) Error() string {
	if e.Layer != "" {
		return fmt.Sprintf("egress: sensitive value: %s (%s inside %s text)", e.Kind, e.Encoding, e.Layer)
	}
	return fmt.Sprintf("egress: sensitive value: %s (%s)", e.Kind, e.Encoding)
}

// Unwrap returns ErrSensitive.
func (e *SensitiveError) Unwrap() error { return ErrSensitive }
