package gpio

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/camagent/camagent/internal/clock"
)

// Button defaults.
const (
	DefaultShortPress = 2 * time.Second
	DefaultLongPress  = 10 * time.Second
)

// ButtonConfig configures the reset button.
type ButtonConfig struct {
	// Pin reads the button. Nil: no button; NewButton returns a nil *Button.
	Pin gpio.PinIn
	// Pull is the pin's internal resistor: gpio.PullUp, gpio.PullDown, or gpio.Float for an
	// external one. Zero (gpio.PullNoChange): the one that holds a released button at its
	// inactive level, gpio.PullUp, or gpio.PullDown for an ActiveHigh button.
	Pull gpio.Pull
	// ActiveHigh is true for a button that drives the pin high when pressed. False (the
	// default): pressed while the pin reads low, the button shorting it to ground.
	ActiveHigh bool
	// Debounce is how long a level must hold to count; shorter glitches are ignored.
	// Zero: 50 ms.
	Debounce time.Duration
	// PollInterval is how often the level is read when the pin has no edge detection.
	// Zero: 10 ms.
	PollInterval time.Duration
	// ShortPress is the longest press that counts as a short press. Zero: 2 s.
	ShortPress time.Duration
	// LongPress is how long the button must be held for a long press. Zero: 10 s.
	LongPress time.Duration
	// OnShortPress is called when a press shorter than ShortPress is released (the agent
	// shows its status). Nil: ignored.
	OnShortPress func()
	// OnLongPress is called once per press, while the button is still held, when it has been
	// held for LongPress (the agent performs a factory reset). Nil: ignored.
	OnLongPress func()
	// Clock times debouncing and presses. Nil: the system clock.
	Clock clock.Clock
	// Logger receives pin problems and ignored presses. Nil: discard.
	Logger *slog.Logger
}

// Button is the debounced reset button. Its callbacks are called from Run's goroutine, one at
// a time; they should return quickly (hand a factory reset to another goroutine), since the
// button is not watched while they run. A nil *Button is valid and does nothing.
type Button struct {
	in  *input
	cfg ButtonConfig

	// Run's goroutine only.
	armed     bool // released at least once since Run started
	pressed   bool
	pressedAt time.Time
	longDone  bool // OnLongPress was called for this press
}

var _ handler = (*Button)(nil)

// NewButton configures cfg.Pin as an input (with its pull resistor and, where the driver
// supports it, edge detection) and returns the button, or nil and no error when cfg.Pin is nil.
func NewButton(cfg ButtonConfig) (*Button, error) {
	if cfg.Pin == nil {
		return nil, nil
	}
	if cfg.ShortPress < 0 || cfg.LongPress < 0 {
		return nil, fmt.Errorf("gpio: button: negative ShortPress or LongPress")
	}
	if cfg.ShortPress == 0 {
		cfg.ShortPress = DefaultShortPress
	}
	if cfg.LongPress == 0 {
		cfg.LongPress = DefaultLongPress
	}
	if cfg.ShortPress >= cfg.LongPress {
		return nil, fmt.Errorf("gpio: button: ShortPress %v must be shorter than LongPress %v", cfg.ShortPress, cfg.LongPress)
	}
	if cfg.Pull == gpio.PullNoChange && cfg.ActiveHigh {
		cfg.Pull = gpio.PullDown // a pull-up would read as a press held forever
	}
	in, err := newInput(inputConfig{
		what: "button", pin: cfg.Pin, pull: cfg.Pull, activeHigh: cfg.ActiveHigh,
		debounce: cfg.Debounce, poll: cfg.PollInterval, clk: cfg.Clock, log: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Button{in: in, cfg: cfg}, nil
}

// Run watches the button until ctx is cancelled and returns nil. A button held when Run
// starts is ignored until it is released. Run on a nil *Button returns nil at once. Run must
// not be called twice at the same time.
func (b *Button) Run(ctx context.Context) error {
	if b == nil {
		return nil
	}
	b.armed, b.pressed, b.longDone = false, false, false
	b.in.run(ctx, b)
	return nil
}

func (b *Button) settled(pressed bool, since time.Time) {
	switch {
	case !b.armed && pressed:
		b.in.log.Warn("gpio: reset button held at start; ignored until released", "pin", b.in.pin.Name())
	case !b.armed:
		b.armed = true
	case pressed:
		b.pressed, b.pressedAt, b.longDone = true, since, false
	case b.pressed:
		b.pressed = false
		held := since.Sub(b.pressedAt)
		switch {
		case b.longDone:
		case held < b.cfg.ShortPress:
			if b.cfg.OnShortPress != nil {
				b.cfg.OnShortPress()
			}
		default:
			b.in.log.Info("gpio: reset button press ignored: longer than a short press, shorter than a long one",
				"held", held.Round(time.Millisecond), "short_below", b.cfg.ShortPress, "long_from", b.cfg.LongPress)
		}
	}
}

func (b *Button) deadline() time.Time {
	if b.pressed && !b.longDone {
		return b.pressedAt.Add(b.cfg.LongPress)
	}
	return time.Time{}
}

func (b *Button) expire(time.Time) {
	b.longDone = true
	if b.cfg.OnLongPress != nil {
		b.cfg.OnLongPress()
	}
}
