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

// State is what the status LED shows. The zero State is Booting.
type State int

// The LED states; the package documentation has their patterns.
const (
	Booting State = iota
	Connecting
	Online
	Rotating
	Privacy
	Error
	Off
)

var stateNames = [...]string{"booting", "connecting", "online", "rotating", "privacy", "error", "off"}

// String returns the state's lower-case name, "booting" for Booting.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// step is one segment of a pattern: the LED on or off for d. A d of zero holds forever.
type step struct {
	on bool
	d  time.Duration
}

// sosUnit is the Morse unit of the Error pattern.
const sosUnit = 150 * time.Millisecond

// patterns are the repeating patterns of each state. Steps alternate between on and off.
var patterns = [...][]step{
	Booting:    {{true, 100 * time.Millisecond}, {false, 100 * time.Millisecond}},
	Connecting: {{true, 500 * time.Millisecond}, {false, 500 * time.Millisecond}},
	Online:     {{true, 0}},
	Rotating: {{true, 100 * time.Millisecond}, {false, 100 * time.Millisecond},
		{true, 100 * time.Millisecond}, {false, 700 * time.Millisecond}},
	Privacy: {{true, 50 * time.Millisecond}, {false, 2950 * time.Millisecond}},
	Error: {
		{true, sosUnit}, {false, sosUnit}, {true, sosUnit}, {false, sosUnit}, {true, sosUnit}, {false, 3 * sosUnit},
		{true, 3 * sosUnit}, {false, sosUnit}, {true, 3 * sosUnit}, {false, sosUnit}, {true, 3 * sosUnit}, {false, 3 * sosUnit},
		{true, sosUnit}, {false, sosUnit}, {true, sosUnit}, {false, sosUnit}, {true, sosUnit}, {false, 7 * sosUnit},
	},
	Off: {{false, 0}},
}

// LEDConfig configures a status LED.
type LEDConfig struct {
	// Pin drives the LED. Nil: no LED; NewLED returns a nil *LED, whose methods do nothing.
	Pin gpio.PinOut
	// ActiveLow is true for an LED wired from 3.3 V to the pin, lit when the pin is low.
	// False (the default): lit when the pin is high.
	ActiveLow bool
	// Clock times the patterns. Nil: the system clock.
	Clock clock.Clock
	// Logger receives pin write failures. Nil: discard.
	Logger *slog.Logger
}

// LED shows a State as a blink pattern. Its methods are safe for concurrent use; a nil *LED
// is valid and does nothing.
type LED struct {
	pin       gpio.PinOut
	activeLow bool
	clk       clock.Clock
	log       *slog.Logger

	mu    sync.Mutex
	state State
	wake  chan struct{} // capacity 1: "the state may have changed"

	failing bool // a write failed and none has succeeded since; Run's goroutine only
}

// NewLED returns an LED showing Booting once Run starts, or nil when cfg.Pin is nil.
func NewLED(cfg LEDConfig) *LED {
	if cfg.Pin == nil {
		return nil
	}
	l := &LED{pin: cfg.Pin, activeLow: cfg.ActiveLow, clk: cfg.Clock, log: cfg.Logger, wake: make(chan struct{}, 1)}
	if l.clk == nil {
		l.clk = clock.Real{}
	}
	if l.log == nil {
		l.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l
}

// SetState makes the LED show s. It never blocks: the running pattern switches to s at once,
// and when states are set faster than Run picks them up, the last one wins.
func (l *LED) SetState(s State) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.state = s
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// State returns the state last set.
func (l *LED) State() State {
	if l == nil {
		return Off
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// Run drives the pin until ctx is cancelled, then turns the LED off and returns nil. A failed
// pin write is logged (once until a write succeeds again) and the pattern goes on. Run on a nil
// *LED returns nil at once. Run must not be called twice at the same time.
func (l *LED) Run(ctx context.Context) error {
	if l == nil {
		return nil
	}
	defer l.write(false)
	cur := l.State()
	i := 0
	for {
		pat := patterns[Off]
		if cur >= 0 && int(cur) < len(patterns) {
			pat = patterns[cur]
		}
		st := pat[i%len(pat)]
		l.write(st.on)
		var timer <-chan time.Time
		if st.d > 0 {
			timer = l.clk.After(st.d)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-l.wake:
				if s := l.State(); s != cur {
					cur, i = s, 0
					break wait
				}
			case <-timer:
				i++
				break wait
			}
		}
	}
}

// write lights the LED or turns it off.
func (l *LED) write(on bool) {
	err := l.pin.Out(gpio.Level(on != l.activeLow))
	switch {
	case err != nil && !l.failing:
		l.failing = true
		l.log.Error("gpio: status LED write failed; retrying with the next step", "pin", l.pin.Name(), "err", err)
	case err == nil && l.failing:
		l.failing = false
		l.log.Info("gpio: status LED writes work again", "pin", l.pin.Name())
	}
}
