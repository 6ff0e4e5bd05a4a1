package receiver

import (
	"errors"
	"fmt"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrICEFailed ends a session whose ICE or DTLS connection failed or was closed by the
	// other side.
	ErrICEFailed = errors.New("receiver: connection to the camera failed")
	// ErrClosed is Session.Err after the viewer closed the session itself.
	ErrClosed = errors.New("receiver: session closed")
)

// ByeError is Session.Err when the camera ended the session. Reason says why: expired,
// revoked, privacy, failed, shutdown or hangup.
type ByeError struct {
	Reason signal.ByeReason
}

func (e *ByeError) Error() string {
	return fmt.Sprintf("receiver: the camera ended the session (%s)", e.Reason)
}

// OutputError is Session.Err when writing the video to Options.Out failed; the session was
// ended then. It unwraps to the writer's error.
type OutputError struct {
	Err error
}

func (e *OutputError) Error() string { return fmt.Sprintf("receiver: write video: %v", e.Err) }

// Unwrap returns Err.
func (e *OutputError) Unwrap() error { return e.Err }
