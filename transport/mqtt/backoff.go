package mqtt

import (
	"math"
	"time"
)

// backoff computes reconnect delays: exponential with full jitter and a cap (R4). Retry n
// (from 0) sleeps rand·min(max, min·2ⁿ) with rand uniform in [0, 1). It is used by Run's
// goroutine only.
type backoff struct {
	min, max time.Duration
	rand     func() float64
	attempt  int
}

// next returns the delay before the next attempt and counts the attempt.
func (b *backoff) next() time.Duration {
	ceil := b.ceiling(b.attempt)
	if ceil < b.max {
		b.attempt++ // stop counting at the cap, so the counter cannot overflow
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
func (b *backoff) reset() { b.attempt = 0 }

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
