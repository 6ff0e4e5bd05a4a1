package mqtt

import (
	"math"
	"time"
)

// backoff computes reconnect delays: exponential with full jitter and a cap (R4). Retry n
// (from 0) sleeps rand·min(max, min·2ⁿ, max(min, out)) with rand uniform in [0, 1), where out
// is how long the client has been without a connection that lasted (since the first retry
// after the last reset). The exponent counts attempts, and attempts that fail at once (the
// broker down, the link cut) after short draws used to push the window far ahead of the
// outage: after a 10-second cut, devices drew their next wait from up to 64 s. Bounded by the
// outage's age, a device waits at most as long again as it has been away; after a long outage
// the window reaches the cap as before and the fleet's return is spread over it. It is used by
// Run's goroutine only.
type backoff struct {
	min, max time.Duration
	rand     func() float64
	attempt  int
	since    time.Time // the first retry since the last reset; zero before it
}

// next returns the delay before the next attempt, at now, and counts the attempt.
func (b *backoff) next(now time.Time) time.Duration {
	if b.since.IsZero() {
		b.since = now
	}
	ceil := b.ceiling(b.attempt)
	if ceil < b.max {
		b.attempt++ // stop counting at the cap, so the counter cannot overflow
	}
	if out := now.Sub(b.since); ceil > out {
		ceil = max(b.min, out)
	}
	r := b.rand()
	switch {
	case !(r >= 0): // negative or NaN
		r = 0
	case r >= 1:
		r = math.Nextafter(1, 0)
	}
	return time.Duration(r * float64(ceil))
}

// reset starts again from the shortest ceiling, after a connection that stayed up.
func (b *backoff) reset() { b.attempt, b.since = 0, time.Time{} }

// ceiling returns min(max, min·2ⁿ) without overflowing.
func (b *backoff) ceiling(n int) time.Duration {
	d := b.min
	for range n {
		if d >= b.max/2 {
			return b.max
		}
		d *= 2
	}
	return min(d, b.max)
}
