package gpio

import "errors"

// Sentinel errors.
var (
	// ErrUnknownPin is returned by Open for a pin name the machine's GPIO drivers do not know
	// (on a Raspberry Pi the names are "GPIO4" ... "GPIO27"). The error names the config key.
	ErrUnknownPin = errors.New("gpio: no such pin")
	// ErrPinInUse is returned by Open when two features name the same pin.
	ErrPinInUse = errors.New("gpio: pin named twice")
)
