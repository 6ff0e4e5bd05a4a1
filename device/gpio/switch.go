package gpio

import (
	"context"
	"log/slog"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/camagent/camagent/internal/clock"
)

// SwitchConfig configures the privacy switch.
type SwitchConfig struct {
	// Pin reads the switch. Nil: no switch; NewSwitch returns a nil *Switch.
	Pin gpio.PinIn
	// Pull is the pin's internal resistor: gpio.PullUp, gpio.PullDown, or gpio.Float for an
	// external one. Zero (gpio.PullNoChange): the one that pulls a disconnected pin to
	// privacy on, gpio.PullUp, or gpio.PullDown for an ActiveLow switch.
	Pull gpio.Pull
	// ActiveLow is true when privacy is on while the pin reads low. False (the default):
	// privacy is on while the pin reads high. With the default Pull, either way, the switch
	// open or disconnected reads as privacy on, so a broken wire turns privacy on.
	ActiveLow bool
	// Debounce is how long a level must hold to count. Zero: 50 ms.
	Debounce time.Duration
	// PollInterval is how often the level is read when the pin has no edge detection.
	// Zero: 10 ms.
	PollInterval time.Duration
	// OnChange is called with true when privacy turns on and false when it turns off, and
	// once with the level read when Run starts. Nil: ignored.
	OnChange func(on bool)
	// Clock times debouncing. Nil: the system clock.
	Clock clock.Clock
	// Logger receives pin problems. Nil: discard.
	Logger *slog.Logger
}

// Switch is the debounced privacy switch. OnChange is called from Run's goroutine and should
// return quickly. A nil *Switch is valid and does nothing.
type Switch struct {
	in       *input
	onChange func(bool)
}

var _ handler = (*Switch)(nil)

// NewSwitch configures cfg.Pin as an input and returns the switch, or nil and no error when
// cfg.Pin is nil.
func NewSwitch(cfg SwitchConfig) (*Switch, error) {
	if cfg.Pin == nil {
		return nil, nil
	}
	if cfg.Pull == gpio.PullNoChange && cfg.ActiveLow {
		cfg.Pull = gpio.PullDown // fail safe: a pull-up would turn privacy off on a broken wire
	}
	in, err := newInput(inputConfig{
		what: "privacy switch", pin: cfg.Pin, pull: cfg.Pull, activeHigh: !cfg.ActiveLow,
		debounce: cfg.Debounce, poll: cfg.PollInterval, clk: cfg.Clock, log: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Switch{in: in, onChange: cfg.OnChange}, nil
}

// Run reports the switch until ctx is cancelled and returns nil: first the level it reads at
// once, then every debounced change. Run on a nil *Switch returns nil at once. Run must not be
// called twice at the same time.
func (s *Switch) Run(ctx context.Context) error {
	if s == nil {
		return nil
	}
	s.in.run(ctx, s)
	return nil
}

func (s *Switch) settled(on bool, _ time.Time) {
	if s.onChange != nil {
		s.onChange(on)
	}
}

func (*Switch) deadline() time.Time { return time.Time{} }

func (*Switch) expire(time.Time) {}
