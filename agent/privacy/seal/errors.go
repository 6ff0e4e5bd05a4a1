package seal

import "errors"

// Sentinel errors. Callers match them with errors.Is; the wrapping error names the file.
var (
	// ErrBadSecret reports a device secret file that must not be used: wrong size, readable or
	// writable by group or others, or not a regular file.
	ErrBadSecret = errors.New("seal: unusable device secret")
	// ErrOpen reports sealed data that does not open: it was sealed with another device secret
	// (the device was reset) or for another purpose, or it was altered or truncated.
	ErrOpen = errors.New("seal: cannot open sealed data")
	// ErrVersion reports sealed data in a format version this package does not know.
	ErrVersion = errors.New("seal: unknown sealed format version")
	// ErrMalformed reports a sealed settings file that opens but does not hold valid settings.
	ErrMalformed = errors.New("seal: malformed settings")
)
