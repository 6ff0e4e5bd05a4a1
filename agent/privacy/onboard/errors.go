package onboard

import "errors"

// ErrInvalid is matched (errors.Is) by every parse or validation error; the *FieldError says
// which field and why.
var ErrInvalid = errors.New("onboard: invalid setup payload")

// FieldError reports what is wrong with one field of a setup payload, without its value.
type FieldError struct {
	// Field is the field's name: "payload" for the payload as a whole, else "version", "ssid",
	// "security", "passphrase", "claim", "nickname", "time zone" or "hidden".
	Field string
	// Reason says what is wrong, without quoting the value.
	Reason string
}

func (e *FieldError) Error() string { return "onboard: " + e.Field + ": " + e.Reason }

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, reason string) *FieldError { return &FieldError{Field: field, Reason: reason} }
