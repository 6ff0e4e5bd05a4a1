// Package clocktest provides a manually advanced clock.Clock for tests.
package clocktest

import (
	"sync"
	"time"

	"github.com/camagent/camagent/internal/clock"
)

// Fake is a clock that moves only when Advance or Set is called. Timers fire when the clock
// reaches their deadline. The zero Fake starts at the zero time; use New.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	// waiting is signalled whenever a timer is created, so tests can wait for a component to
	// block on the clock before advancing it.
	waiting chan struct{}
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

var _ clock.Clock = (*Fake)(nil)

// New returns a fake clock set to t.
func New(t time.Time) *Fake { return &Fake{now: t, waiting: make(chan struct{}, 1024)} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After returns a channel that receives when the fake time reaches now+d.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- f.now
		return ch
	}
	f.waiters = append(f.waiters, waiter{at: f.now.Add(d), ch: ch})
	select {
	case f.waiting <- struct{}{}:
	default:
	}
	return ch
}

// Waiting returns a channel that receives once for each timer created.
func (f *Fake) Waiting() <-chan struct{} { return f.waiting }

// Advance moves the clock forward by d, firing due timers.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the clock to t, firing due timers. Moving backwards fires nothing.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.at.After(t) {
			w.ch <- t
		} else {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}
