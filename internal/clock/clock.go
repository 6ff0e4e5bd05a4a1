// Package clock is the time source the agent's components take instead of calling time.Now
// and time.After directly, so renewal, backoff, debounce and expiry can be tested without
// sleeping (see clocktest).
package clock

import "time"

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// Real is the system clock.
type Real struct{}

var _ Clock = Real{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }
