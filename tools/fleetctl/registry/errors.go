package registry

import "errors"

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrClosed is returned by methods of a closed Registry.
	ErrClosed = errors.New("registry: closed")
	// ErrInvalidRecord reports a record Append refuses: a missing or malformed field, a
	// certificate that does not match its record, or anything that looks like a secret.
	ErrInvalidRecord = errors.New("registry: invalid record")
	// ErrTxDone is returned by a Tx used after its Update returned.
	ErrTxDone = errors.New("registry: transaction already finished")
)
