package gpio_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	camgpio "github.com/camagent/camagent/device/gpio"
	"github.com/camagent/camagent/internal/clock/clocktest"
)

// ledEvent is one thing the LED's goroutine did: write the pin, or start a timer.
type ledEvent struct {
	write bool
	level gpio.Level
	after time.Duration
}

// ledClock and ledPin report, in order, every timer and pin write of the LED's goroutine on
// an unbuffered channel, so the goroutine waits for the test at each step.
type ledClock struct {
	*clocktest.Fake
	ev chan ledEvent
}

func (c ledClock) After(d time.Duration) <-chan time.Time {
	ch := c.Fake.After(d)
	c.ev <- ledEvent{after: d}
	return ch
}

type ledPin struct {
	*gpiotest.Pin
	ev chan ledEvent
}

func (p ledPin) Out(l gpio.Level) error {
	err := p.Pin.Out(l)
	p.ev <- ledEvent{write: true, level: l}
	return err
}

type ledHarness struct {
	t   *testing.T
	led *camgpio.LED
	clk ledClock
	ev  chan ledEvent
	lit bool
}

// startLED runs an LED, first set to initial, until the test ends.
func startLED(t *testing.T, initial camgpio.State, activeLow bool) *ledHarness {
	t.Helper()
	ev := make(chan ledEvent)
	h := &ledHarness{t: t, clk: ledClock{clocktest.New(t0), ev}, ev: ev}
	h.led = camgpio.NewLED(camgpio.LEDConfig{
		Pin: ledPin{&gpiotest.Pin{N: "GPIO27", Num: 27}, ev}, ActiveLow: activeLow, Clock: h.clk,
	})
	h.led.SetState(initial)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.led.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
				return
			case <-ev: // the final write, turning the LED off
			case <-time.After(guard):
				t.Errorf("Run did not return after cancel")
				return
			}
		}
	})
	return h
}

func (h *ledHarness) next() ledEvent {
	h.t.Helper()
	select {
	case e := <-h.ev:
		return e
	case <-time.After(guard):
		h.t.Fatalf("at %v: the LED did nothing", h.clk.Now().Sub(t0))
		return ledEvent{}
	}
}

// trace follows the LED for span of fake time and draws it, one character per 50 ms: '#' lit,
// '_' dark.
func (h *ledHarness) trace(span time.Duration) string {
	h.t.Helper()
	const quantum = 50 * time.Millisecond
	var b strings.Builder
	for elapsed := time.Duration(0); elapsed < span; {
		e := h.next()
		if e.write {
			h.lit = bool(e.level)
			continue
		}
		if e.after%quantum != 0 {
			h.t.Fatalf("a step of %v is not a multiple of %v", e.after, quantum)
		}
		c := "_"
		if h.lit {
			c = "#"
		}
		b.WriteString(strings.Repeat(c, int(e.after/quantum)))
		h.clk.Advance(e.after)
		elapsed += e.after
	}
	return b.String()
}

func TestLEDPatterns(t *testing.T) {
	var (
		dot  = "###"       // 150 ms
		dash = "#########" // 450 ms
		gap  = "___"
		sos  = dot + gap + dot + gap + dot + gap + gap + gap +
			dash + gap + dash + gap + dash + gap + gap + gap +
			dot + gap + dot + gap + dot + strings.Repeat(gap, 7)
	)
	for _, tc := range []struct {
		name   string
		state  camgpio.State
		period string
	}{
		{"booting blinks fast, at 5 Hz", camgpio.Booting, "##__"},
		{"connecting blinks at 1 Hz", camgpio.Connecting, "##########__________"},
		{"rotating blinks twice a second", camgpio.Rotating, "##__##______________"},
		{"privacy blips for 50 ms every 3 s", camgpio.Privacy, "#" + strings.Repeat("_", 59)},
		{"error signals SOS", camgpio.Error, sos},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startLED(t, tc.state, false)
			span := time.Duration(len(tc.period)) * 50 * time.Millisecond
			if got, want := h.trace(3*span), strings.Repeat(tc.period, 3); got != want {
				t.Errorf("three periods of %v:\n got %s\nwant %s", tc.state, got, want)
			}
		})
	}
}

func TestLEDSolidStatesArmNoTimer(t *testing.T) {
	h := startLED(t, camgpio.Online, false)
	if e := h.next(); !e.write || e.level != gpio.High {
		t.Fatalf("online: first event %+v, want the LED lit", e)
	}
	// Had Online armed a timer, its event would come before the next state's write.
	h.led.SetState(camgpio.Off)
	if e := h.next(); !e.write || e.level != gpio.Low {
		t.Fatalf("off: next event %+v, want the LED dark", e)
	}
	h.led.SetState(camgpio.Booting)
	if got := h.trace(400 * time.Millisecond); got != "##__##__" {
		t.Errorf("booting after off: %s", got)
	}
}

func TestLEDLastStateWins(t *testing.T) {
	h := startLED(t, camgpio.Connecting, false)
	if e := h.next(); !e.write {
		t.Fatalf("first event %+v, want a write", e)
	}
	// The LED's goroutine is now blocked reporting its timer: SetState must not wait for it.
	for _, s := range []camgpio.State{camgpio.Rotating, camgpio.Error, camgpio.Online, camgpio.Privacy} {
		h.led.SetState(s)
	}
	if e := h.next(); e.after != 500*time.Millisecond {
		t.Fatalf("second event %+v, want connecting's 500 ms timer", e)
	}
	if got, want := h.trace(6*time.Second), strings.Repeat("#"+strings.Repeat("_", 59), 2); got != want {
		t.Errorf("after four quick changes:\n got %s\nwant %s (privacy)", got, want)
	}
	if s := h.led.State(); s != camgpio.Privacy {
		t.Errorf("State() = %v, want privacy", s)
	}
}

func TestLEDSameStateDoesNotRestartThePattern(t *testing.T) {
	h := startLED(t, camgpio.Connecting, false)
	h.next() // lit
	if e := h.next(); e.after != 500*time.Millisecond {
		t.Fatalf("event %+v, want a 500 ms timer", e)
	}
	h.led.SetState(camgpio.Connecting)
	h.clk.Advance(500 * time.Millisecond)
	if e := h.next(); !e.write || e.level != gpio.Low {
		t.Fatalf("event %+v, want the LED going dark on time", e)
	}
}

func TestLEDActiveLow(t *testing.T) {
	h := startLED(t, camgpio.Online, true)
	if e := h.next(); !e.write || e.level != gpio.Low {
		t.Fatalf("online, active low: %+v, want the pin low", e)
	}
}

func TestLEDIsTurnedOffWhenRunReturns(t *testing.T) {
	ev := make(chan ledEvent, 16)
	pin := &gpiotest.Pin{N: "GPIO27"}
	led := camgpio.NewLED(camgpio.LEDConfig{Pin: ledPin{pin, ev}, Clock: clocktest.New(t0)})
	led.SetState(camgpio.Online)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- led.Run(ctx) }()
	if e := <-ev; e.level != gpio.High {
		t.Fatalf("online: %+v", e)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if pin.Read() != gpio.Low {
		t.Error("the LED is still lit after Run returned")
	}
}

func TestLEDSetStateNeverBlocks(t *testing.T) {
	led := camgpio.NewLED(camgpio.LEDConfig{Pin: &gpiotest.Pin{N: "GPIO27"}})
	for i := range 1000 {
		led.SetState(camgpio.State(i % 7))
	}
	if s := led.State(); s != camgpio.State(999%7) {
		t.Errorf("State() = %v after SetState without Run", s)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[camgpio.State]string{
		camgpio.Booting: "booting", camgpio.Connecting: "connecting", camgpio.Online: "online",
		camgpio.Rotating: "rotating", camgpio.Privacy: "privacy", camgpio.Error: "error",
		camgpio.Off: "off", camgpio.State(42): "State(42)",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
