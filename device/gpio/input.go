package gpio

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/camagent/camagent/internal/clock"
)

// Defaults shared by the inputs.
const (
	defaultDebounce = 50 * time.Millisecond
	defaultPoll     = 10 * time.Millisecond
	// edgeWait bounds one WaitForEdge call. When it passes without an edge the input re-reads
	// the level (a safety net for a lost edge), and it bounds how long stopping takes on a
	// driver whose Halt does not interrupt a wait (periph's gpiotest.Pin).
	edgeWait = 500 * time.Millisecond
	// brokenEdgeWaits is how many WaitForEdge calls in a row may return at once, without an
	// edge, before the input gives up on edges and polls.
	brokenEdgeWaits = 3
)

// handler is told what an input does: a Button or a Switch.
type handler interface {
	// settled is called with the debounced level (true: active) once the level read when the
	// input starts has held for the debounce period, and then whenever it changes; since is
	// when the raw level first showed it.
	settled(active bool, since time.Time)
	// deadline returns when expire must be called next, or the zero time for never.
	deadline() time.Time
	// expire is called once the clock has reached deadline() while the level is settled: a
	// change still being debounced (a release, or a bounce) is waited out first, so that a
	// deadline is never met by a level that no longer holds.
	expire(now time.Time)
}

// inputConfig is the electrical side of a Button or a Switch.
type inputConfig struct {
	what       string // "button", "privacy switch": for errors and logs
	pin        gpio.PinIn
	pull       gpio.Pull
	activeHigh bool
	debounce   time.Duration
	poll       time.Duration
	clk        clock.Clock
	log        *slog.Logger
}

// input watches one digital input and reports its debounced level to a handler.
type input struct {
	inputConfig
	edges bool // the pin accepted edge detection

	// Run's goroutine only.
	raw       bool      // the level last read
	stable    bool      // the debounced level; valid once known
	known     bool      // a level has held for the debounce period since run started
	changedAt time.Time // when raw last changed
}

// newInput applies the defaults and configures the pin as an input, with edge detection when
// the driver offers it.
func newInput(c inputConfig) (*input, error) {
	if c.pull == gpio.PullNoChange {
		c.pull = gpio.PullUp
	}
	if c.debounce < 0 || c.poll < 0 {
		return nil, fmt.Errorf("gpio: %s: negative Debounce or PollInterval", c.what)
	}
	if c.debounce == 0 {
		c.debounce = defaultDebounce
	}
	if c.poll == 0 {
		c.poll = defaultPoll
	}
	if c.clk == nil {
		c.clk = clock.Real{}
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	in := &input{inputConfig: c}
	if err := c.pin.In(c.pull, gpio.BothEdges); err == nil {
		in.edges = true
	} else if err2 := c.pin.In(c.pull, gpio.NoEdge); err2 != nil {
		return nil, fmt.Errorf("gpio: %s pin %s: %w", c.what, c.pin.Name(), err2)
	} else {
		c.log.Debug("gpio: no edge detection; polling", "input", c.what, "pin", c.pin.Name(), "every", c.poll, "edge_err", err)
	}
	return in, nil
}

func (in *input) read() bool { return bool(in.pin.Read()) == in.activeHigh }

// wake is what the edge goroutine tells the loop.
type wake int

const (
	wakeEdge    wake = iota // WaitForEdge saw an edge
	wakeTimeout             // WaitForEdge timed out: re-read the level
	wakeBroken              // WaitForEdge does not wait: poll from now on
)

// run reports the input's level to h until ctx is cancelled. The level read at the start is
// debounced like any change: a single read is as open to a glitch as any other, and a
// glitch at boot must neither turn privacy off nor arm a button that is held.
func (in *input) run(ctx context.Context, h handler) {
	now := in.clk.Now()
	in.raw, in.changedAt, in.known = in.read(), now, false

	var wakes chan wake
	if in.edges {
		// The edge goroutine starts after the first read, so that no edge can precede it.
		wakes = make(chan wake)
		ectx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.waitEdges(ectx, wakes)
		}()
		defer func() {
			stop()
			// Halt interrupts a pending WaitForEdge on the Raspberry Pi drivers.
			if err := in.pin.Halt(); err != nil {
				in.log.Warn("gpio: halting edge detection", "input", in.what, "pin", in.pin.Name(), "err", err)
			}
			wg.Wait()
		}()
	}

	lastPoll := now
	var timerAt time.Time // when timer fires; zero: no timer
	var timer <-chan time.Time
	for {
		next := time.Time{}
		if in.pending() {
			next = in.changedAt.Add(in.debounce)
		}
		if d := h.deadline(); !in.pending() && !d.IsZero() && (next.IsZero() || d.Before(next)) {
			next = d
		}
		if !in.edges {
			if p := lastPoll.Add(in.poll); next.IsZero() || p.Before(next) {
				next = p
			}
		}
		// Keep the timer while its deadline stands, so that a wake-up without news makes no
		// new timer.
		if !next.Equal(timerAt) {
			timerAt, timer = next, nil
			if !next.IsZero() {
				timer = in.clk.After(next.Sub(in.clk.Now()))
			}
		}

		select {
		case <-ctx.Done():
			return
		case w := <-wakes:
			now := in.clk.Now()
			if w == wakeBroken {
				in.log.Warn("gpio: edge detection does not wait; polling", "input", in.what, "pin", in.pin.Name(), "every", in.poll)
				in.edges, wakes, lastPoll = false, nil, now
			}
			in.update(h, now, w == wakeEdge)
		case <-timer:
			timerAt, timer = time.Time{}, nil
			now := in.clk.Now()
			if !in.edges && !now.Before(lastPoll.Add(in.poll)) {
				lastPoll = now
			}
			in.update(h, now, false)
		}
	}
}

// update reads the level at now, commits it once it has held for the debounce period, and
// expires the handler's deadline when due. A level that had held for the debounce period
// before this read is committed first, whether the timer or the read came first to the loop:
// the order of the two must not decide whether a press counts.
func (in *input) update(h handler, now time.Time, edge bool) {
	in.settle(h, now)
	in.observe(now, edge)
	in.settle(h, now)
	if d := h.deadline(); !in.pending() && !d.IsZero() && !now.Before(d) {
		h.expire(now)
	}
}

// settle commits the level being debounced if it has held for the debounce period at now.
func (in *input) settle(h handler, now time.Time) {
	if in.pending() && !now.Before(in.changedAt.Add(in.debounce)) {
		in.stable, in.known = in.raw, true
		h.settled(in.stable, in.changedAt)
	}
}

// pending reports whether a level is being debounced: the one read at the start, or a change.
func (in *input) pending() bool { return !in.known || in.raw != in.stable }

// observe reads the level. A change, or an edge while a change is pending (the level bounced
// in between), restarts the debounce period.
func (in *input) observe(now time.Time, edge bool) {
	cur := in.read()
	if cur != in.raw || (edge && in.pending()) {
		in.raw, in.changedAt = cur, now
	}
}

// waitEdges blocks in WaitForEdge and reports each return on wakes until ctx is done.
func (in *input) waitEdges(ctx context.Context, wakes chan<- wake) {
	quick := 0
	for ctx.Err() == nil {
		// Real time on purpose: this measures the driver, not the feature. A WaitForEdge that
		// returns at once without an edge would otherwise spin.
		start := time.Now()
		w := wakeTimeout
		if in.pin.WaitForEdge(edgeWait) {
			w, quick = wakeEdge, 0
		} else if time.Since(start) < edgeWait/4 && ctx.Err() == nil {
			if quick++; quick >= brokenEdgeWaits {
				w = wakeBroken
			}
		} else {
			quick = 0
		}
		select {
		case wakes <- w:
		case <-ctx.Done():
			return
		}
		if w == wakeBroken {
			return
		}
	}
}
