package cli

import (
	"context"
	"log/slog"
	"sync"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/device/gpio"
	"github.com/camagent/camagent/internal/clock"
)

// board is the camera's GPIO hardware as the service uses it: the status LED, the reset
// button and the privacy switch, each optional (gpio's nil components do nothing). The devices
// run on goroutines of their own and report to the service's loop through channels, never by
// calling into the agent: a factory reset or a privacy change can take a while, and the
// button and the switch must not wait for it.
type board struct {
	led    *gpio.LED
	button *gpio.Button
	sw     *gpio.Switch

	short   chan struct{} // a short press; capacity 1
	long    chan struct{} // a long press; capacity 1
	privacy chan struct{} // the switch moved; capacity 1; read the level with switchLevel

	mu       sync.Mutex
	level    bool          // the switch's last level: privacy on
	known    bool          // level was reported at least once
	firstSet chan struct{} // closed once level is known, or at once without a switch
}

// boardConfig configures a board.
type boardConfig struct {
	// Pins are the pins gpio.Open resolved; nil fields are features turned off.
	Pins gpio.Pins
	// InputClock times the button and the switch (debounce, long press). Nil: the system clock.
	InputClock clock.Clock
	// LEDClock times the LED's patterns. Nil: the system clock.
	LEDClock clock.Clock
	// Logger receives pin problems. Nil: discard.
	Logger *slog.Logger
}

// newBoard configures the pins. An error means a pin could not be set up as an input.
func newBoard(cfg boardConfig) (*board, error) {
	b := &board{
		short:    make(chan struct{}, 1),
		long:     make(chan struct{}, 1),
		privacy:  make(chan struct{}, 1),
		firstSet: make(chan struct{}),
	}
	b.led = gpio.NewLED(gpio.LEDConfig{Pin: cfg.Pins.LED, Clock: cfg.LEDClock, Logger: cfg.Logger})
	var err error
	b.button, err = gpio.NewButton(gpio.ButtonConfig{
		Pin:          cfg.Pins.Button,
		OnShortPress: func() { poke(b.short) },
		OnLongPress:  func() { poke(b.long) },
		Clock:        cfg.InputClock,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	b.sw, err = gpio.NewSwitch(gpio.SwitchConfig{
		Pin:      cfg.Pins.Privacy,
		OnChange: b.switched,
		Clock:    cfg.InputClock,
		Logger:   cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	if b.sw == nil {
		close(b.firstSet)
	}
	return b, nil
}

// start runs the devices on goroutines added to wg until ctx is cancelled.
func (b *board) start(ctx context.Context, wg *sync.WaitGroup) {
	for _, run := range []func(context.Context) error{b.led.Run, b.button.Run, b.sw.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(ctx) // the gpio components return nil, and log their pin problems themselves
		}()
	}
}

// switched is the switch's OnChange, on its goroutine.
func (b *board) switched(on bool) {
	b.mu.Lock()
	b.level = on
	if !b.known {
		b.known = true
		close(b.firstSet)
	}
	b.mu.Unlock()
	poke(b.privacy)
}

// hasSwitch reports whether a privacy switch is configured.
func (b *board) hasSwitch() bool { return b.sw != nil }

// switchLevel returns the switch's last level (true: privacy on) and whether it is known.
func (b *board) switchLevel() (on, known bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.level, b.known
}

// firstLevel is closed once the switch has reported its level, or at once without a switch.
func (b *board) firstLevel() <-chan struct{} { return b.firstSet }

// setLED makes the LED show s.
func (b *board) setLED(s gpio.State) { b.led.SetState(s) }

// ledState is what the status LED shows for an agent's status: Rotating during a rotation;
// Connecting while it waits for the clock or is not connected; Privacy while connected in
// privacy mode; Online otherwise. (Error, for a device that is not enrolled, and Booting are
// set by the service.)
func ledState(st agent.Status) gpio.State {
	switch {
	case st.Rotating:
		return gpio.Rotating
	case st.ClockBehind || !st.Connected:
		return gpio.Connecting
	case st.Privacy:
		return gpio.Privacy
	}
	return gpio.Online
}

// statusLine is the service manager's STATUS= line for an agent's status.
func statusLine(st agent.Status) string {
	var s string
	switch {
	case st.ClockBehind:
		s = "waiting for a plausible clock (time sync) before connecting"
	case !st.Connected:
		s = "connecting to broker"
	default:
		s = "connected to broker"
	}
	if st.Rotating {
		s += "; rotating credentials"
	}
	if st.Privacy {
		s += "; privacy mode on"
	}
	return s
}

// poke sends on a channel of capacity 1 without blocking: a pending signal is enough.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
