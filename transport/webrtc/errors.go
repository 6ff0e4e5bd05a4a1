package webrtc

import (
	"errors"
	"fmt"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// Sentinel errors. Callers match them with errors.Is. Offer's refusals come wrapped in a
// *RefusalError that names the signal.RefusalReason to send back.
var (
	// ErrClosed is returned by Offer once Run has returned: the Streamer serves no more
	// viewers.
	ErrClosed = errors.New("webrtc: streamer closed")
	// ErrRunning is returned by Run when it is called a second time.
	ErrRunning = errors.New("webrtc: streamer already ran")
	// ErrLimit refuses an offer beyond Config.MaxViewers (reason signal.RefuseLimit).
	ErrLimit = errors.New("webrtc: viewer limit reached")
	// ErrGrant refuses an offer whose grant the GrantChecker rejected, or whose grant has
	// expired (reason signal.RefuseGrant). The GrantChecker's error is wrapped beside it.
	ErrGrant = errors.New("webrtc: grant refused")
	// ErrNotReady refuses an offer while the source has not described its stream yet (an
	// encoder that has not sent its first SPS), so the H.264 profile to offer is unknown
	// (reason signal.RefuseBusy).
	ErrNotReady = errors.New("webrtc: source not ready")
	// ErrBadOffer refuses a malformed offer, a duplicate session id, or an offer without an
	// H.264 video section the camera can send (reason signal.RefuseBadOffer).
	ErrBadOffer = errors.New("webrtc: bad offer")
	// ErrEnded refuses an offer whose session was closed (Close, CloseAll, shutdown) before
	// its answer was ready.
	ErrEnded = errors.New("webrtc: session ended before it was answered")
	// ErrUnknownSession is returned by AddCandidate and Hangup for a session that is not
	// live, or whose key (signal.Offer.Key) the message does not carry.
	ErrUnknownSession = errors.New("webrtc: unknown session")
	// ErrForeignSession is returned by Offer and Accept for an offer naming a live session
	// with another key: someone who saw the session id, not its viewer. It is no
	// *RefusalError: answering it would tell the live session's viewer its offer failed.
	ErrForeignSession = errors.New("webrtc: offer for another viewer's session")
	// ErrTooManyCandidates drops a candidate a viewer trickled beyond MaxRemoteCandidates in
	// its session. AddCandidate returns it inside a *DroppedCandidateError.
	ErrTooManyCandidates = errors.New("webrtc: too many remote candidates")
	// ErrCandidateRate drops a candidate a viewer trickled faster than CandidateRate per
	// second after a burst of CandidateBurst. AddCandidate returns it inside a
	// *DroppedCandidateError.
	ErrCandidateRate = errors.New("webrtc: remote candidates too fast")
	// ErrNoTURNServer refuses an offer to a Config.RelayOnly Streamer when neither the offer
	// nor Config.ICEServers names a turn: or turns: server, so no relayed candidate could be
	// gathered (reason signal.RefuseBadOffer; ErrBadOffer is wrapped beside it).
	ErrNoTURNServer = errors.New("webrtc: relay-only and no TURN server for the session")
	// ErrNoRelay refuses an offer to a Config.RelayOnly Streamer when ICE gathering found no
	// relayed candidate: the TURN servers could not be reached in Config.GatherTimeout, or
	// refused the credentials (reason signal.RefuseBusy).
	ErrNoRelay = errors.New("webrtc: no TURN server gave a relayed candidate")
)

// DroppedCandidateError is AddCandidate's error for a candidate it dropped because the
// viewer went over the session's trickle limits. It unwraps to ErrTooManyCandidates or
// ErrCandidateRate.
type DroppedCandidateError struct {
	// Err is ErrTooManyCandidates or ErrCandidateRate.
	Err error
	// Dropped counts the candidates of this session dropped so far, this one included: it
	// is 1 for the first, so a caller can log once per session.
	Dropped uint64
}

func (e *DroppedCandidateError) Error() string {
	return fmt.Sprintf("webrtc: candidate dropped (%d so far in this session): %v", e.Dropped, e.Err)
}

// Unwrap returns Err.
func (e *DroppedCandidateError) Unwrap() error { return e.Err }

// RefusalError is Offer's error when the offer is refused rather than failed: it carries the
// reason to send back in a signal.Refusal. It unwraps to one of the sentinels above (and, for
// a grant refusal, to the GrantChecker's error).
type RefusalError struct {
	// Reason is the refusal reason for the viewer.
	Reason signal.RefusalReason
	// Err says why; it never carries the grant or the SDP.
	Err error
}

func (e *RefusalError) Error() string {
	return fmt.Sprintf("webrtc: offer refused (%s): %v", e.Reason, e.Err)
}

// Unwrap returns Err.
func (e *RefusalError) Unwrap() error { return e.Err }

// Refusal returns the signal.Refusal message for session.
func (e *RefusalError) Refusal(session string) signal.Refusal {
	return signal.Refusal{V: signal.Version, Session: session, Reason: e.Reason}
}

func refuse(reason signal.RefusalReason, err error) *RefusalError {
	return &RefusalError{Reason: reason, Err: err}
}

// refusalFor maps the reason a session was closed while its offer was being answered to the
// refusal the viewer gets.
func refusalFor(r signal.ByeReason) signal.RefusalReason {
	switch r {
	case signal.ByePrivacy:
		return signal.RefusePrivacy
	case signal.ByeRevoked, signal.ByeExpired:
		return signal.RefuseGrant
	default:
		return signal.RefuseBusy
	}
}
