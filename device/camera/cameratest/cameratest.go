// Package cameratest provides working fakes for code that uses package camera: a Clock that
// tests advance by hand, and a Source that emits the frames a test hands it.
//
// Like package camera it never touches the network.
package cameratest

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/camagent/camagent/device/camera"
)

// Clock is a camera.Clock whose time moves only when a test calls Advance or AdvanceToNext.
// Timers fire, in deadline order, when the time reaches them. It is safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	changed chan struct{} // closed and replaced whenever the set of timers changes
}

var _ camera.Clock = (*Clock)(nil)

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer firing d from the clock's current time; d <= 0 fires at once.
func (c *Clock) NewTimer(d time.Duration) camera.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{clock: c, when: c.now.Add(d), d: d, ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	c.notifyLocked()
	return t
}

// Pending returns the durations the pending timers were created with, earliest deadline
// first.
func (c *Clock) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sortLocked()
	ds := make([]time.Duration, len(c.timers))
	for i, t := range c.timers {
		ds[i] = t.d
	}
	return ds
}

// WaitPending blocks until at least n timers are pending, or ctx is done.
func (c *Clock) WaitPending(ctx context.Context, n int) error {
	return c.WaitFor(ctx, func(pending []time.Duration) bool { return len(pending) >= n })
}

// WaitFor blocks until cond holds for the pending timers' durations (as Pending returns
// them), or ctx is done. cond runs with the clock locked and must not call it.
func (c *Clock) WaitFor(ctx context.Context, cond func(pending []time.Duration) bool) error {
	for {
		c.mu.Lock()
		c.sortLocked()
		ds := make([]time.Duration, len(c.timers))
		for i, t := range c.timers {
			ds[i] = t.d
		}
		ok, changed := cond(ds), c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Advance moves the clock forward by d and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fireLocked()
}

// AdvanceToNext moves the clock to the earliest pending timer's deadline, fires it (and any
// other due then), and returns how far the clock moved. ok is false if no timer is pending.
func (c *Clock) AdvanceToNext() (moved time.Duration, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return 0, false
	}
	c.sortLocked()
	if when := c.timers[0].when; when.After(c.now) {
		moved = when.Sub(c.now)
		c.now = when
	}
	c.fireLocked()
	return moved, true
}

func (c *Clock) sortLocked() {
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].when.Before(c.timers[j].when) })
}

func (c *Clock) fireLocked() {
	c.sortLocked()
	n := 0
	for _, t := range c.timers {
		if t.when.After(c.now) {
			break
		}
		t.ch <- c.now // buffered, and each timer fires once
		n++
	}
	if n > 0 {
		c.timers = append(c.timers[:0], c.timers[n:]...)
		c.notifyLocked()
	}
}

func (c *Clock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

type timer struct {
	clock *Clock
	when  time.Time
	d     time.Duration
	ch    chan time.Time
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			c.notifyLocked()
			return true
		}
	}
	return false
}

// Source is a camera.Source that emits the frames a test passes to Emit. Its zero value is
// ready to use; set StreamInfo before sharing it.
type Source struct {
	// StreamInfo is what Info returns.
	StreamInfo camera.StreamInfo

	once      sync.Once
	frames    chan camera.Frame
	keyframes chan struct{}
}

var _ camera.Source = (*Source)(nil)

func (s *Source) init() {
	s.once.Do(func() {
		s.frames = make(chan camera.Frame)
		s.keyframes = make(chan struct{}, 64)
	})
}

// Emit hands f to the running Run, which passes it to its out function, and returns once Run
// has taken it, or when ctx is done.
func (s *Source) Emit(ctx context.Context, f camera.Frame) error {
	s.init()
	select {
	case s.frames <- f:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run passes frames from Emit to out until ctx is done, then returns ctx.Err().
func (s *Source) Run(ctx context.Context, out func(camera.Frame)) error {
	s.init()
	for {
		select {
		case f := <-s.frames:
			out(f)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Info returns s.StreamInfo.
func (s *Source) Info() camera.StreamInfo { return s.StreamInfo }

// RequestKeyframe records the request (see KeyframeRequested) and returns nil, as a source
// whose encoder can make keyframes would.
func (s *Source) RequestKeyframe() error {
	s.init()
	select {
	case s.keyframes <- struct{}{}:
	default: // enough requests recorded
	}
	return nil
}

// KeyframeRequested returns a channel that receives once per RequestKeyframe call (up to 64
// unreceived).
func (s *Source) KeyframeRequested() <-chan struct{} {
	s.init()
	return s.keyframes
}
