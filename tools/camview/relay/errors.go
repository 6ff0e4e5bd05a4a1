package relay

import (
	"errors"
	"fmt"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrClosed is returned by the Relay's methods once Close has been called.
	ErrClosed = errors.New("relay: closed")
	// ErrSessionInUse refuses an Offer whose session id is already live on this relay.
	ErrSessionInUse = errors.New("relay: session id already in use")
	// ErrUnknownSession is returned by Candidate for a session that is not live.
	ErrUnknownSession = errors.New("relay: unknown session")
	// ErrEnded reports a session the camera ended (signal.Bye) before it answered.
	ErrEnded = errors.New("relay: the camera ended the session before answering")
)

// RefusedError is Offer's error when the camera refused the offer. Its Refusal says why.
type RefusedError struct {
	Refusal signal.Refusal
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("relay: the camera refused the offer (%s)", e.Refusal.Reason)
}
