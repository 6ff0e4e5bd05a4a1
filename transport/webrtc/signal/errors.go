package signal

import "errors"

// Sentinel errors. Callers match them with errors.Is; the wrapping error says which field was
// wrong, never its value when the value could be secret.
var (
	// ErrTooLarge reports a message or a field over its size cap.
	ErrTooLarge = errors.New("signal: too large")
	// ErrMalformed reports a message that is not well-formed JSON of the expected shape, or a
	// field that fails its check.
	ErrMalformed = errors.New("signal: malformed")
	// ErrUnknownType reports a message whose type is not one of the Type constants.
	ErrUnknownType = errors.New("signal: unknown message type")
)
