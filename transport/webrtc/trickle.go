package webrtc

import "time"

// Limits on the candidates a viewer trickles (AddCandidate, RFC 8838), per session. A browser
// sends a handful for one bundled video section: a host candidate or two per interface, one
// server-reflexive candidate, one relayed candidate per TURN URL, and the end-of-candidates
// mark. The limits leave room for that several times over and keep a viewer, or a replayed
// backlog of signaling messages, from making the camera parse and pair candidates without
// end. The camera itself does not trickle: its candidates are all in its answer, whose size
// signal.MaxSDPSize caps.
const (
	// CandidateBurst is how many candidates a session takes at once.
	CandidateBurst = 16
	// CandidateRate is how many candidates per second a session takes once its burst is
	// spent; unspent allowance accumulates up to CandidateBurst.
	CandidateRate = 8
	// MaxRemoteCandidates caps the candidates one session takes in all, end-of-candidates
	// marks included.
	MaxRemoteCandidates = 64
)

// tokenBucket paces events to rate per second with bursts of up to burst (a token bucket,
// kept as time credit so the arithmetic is exact). It is not safe for concurrent use.
type tokenBucket struct {
	interval time.Duration // the cost of one event: a second over rate
	capacity time.Duration // burst events' worth of credit
	credit   time.Duration
	last     time.Time
}

// newTokenBucket returns a full bucket at now.
func newTokenBucket(rate, burst int, now time.Time) tokenBucket {
	interval := time.Second / time.Duration(rate)
	return tokenBucket{interval: interval, capacity: interval * time.Duration(burst), credit: interval * time.Duration(burst), last: now}
}

// take reports whether an event at now is within the limit, and if so counts it. A clock
// that steps back earns no credit.
func (b *tokenBucket) take(now time.Time) bool {
	if d := now.Sub(b.last); d > 0 {
		b.credit = min(b.capacity, b.credit+min(d, b.capacity)) // no overflow after a long gap
		b.last = now
	}
	if b.credit < b.interval {
		return false
	}
	b.credit -= b.interval
	return true
}
