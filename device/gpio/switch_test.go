package gpio_test

import (
	"fmt"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"

	camgpio "github.com/camagent/camagent/device/gpio"
)

// newSwitch starts a privacy switch on a harness pin; initial is the pin's level at start.
func newSwitch(t *testing.T, edges bool, activeLow bool, initial gpio.Level) *inputHarness {
	t.Helper()
	h := newInputHarness(t, edges)
	s, err := camgpio.NewSwitch(camgpio.SwitchConfig{
		Pin:       h.input(),
		ActiveLow: activeLow,
		Clock:     h.clk,
		OnChange: func(on bool) {
			h.events <- fmt.Sprintf("privacy %v at %v", on, h.clk.Now().Sub(t0))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.set(initial)
	h.start(s.Run)
	return h
}

func TestSwitchPolled(t *testing.T) {
	t.Run("the level at start is reported once debounced: open means privacy on", func(t *testing.T) {
		h := newSwitch(t, false, false, gpio.High)
		h.until(50 * ms)
		h.expect("privacy true at 50ms")
		h.until(100 * ms)
		h.set(gpio.Low) // closed: camera allowed
		h.until(500 * ms)
		h.set(gpio.High)
		h.until(1000 * ms)
		h.expect("privacy false at 160ms", "privacy true at 560ms")
		h.expectNoMore()
	})
	t.Run("a closed switch at start means privacy off", func(t *testing.T) {
		h := newSwitch(t, false, false, gpio.Low)
		h.until(50 * ms)
		h.expect("privacy false at 50ms")
		h.until(time.Second)
		h.expectNoMore()
	})
	t.Run("glitches shorter than the debounce are ignored", func(t *testing.T) {
		h := newSwitch(t, false, false, gpio.Low)
		h.until(50 * ms)
		h.expect("privacy false at 50ms")
		for at := 100 * ms; at < time.Second; at += 100 * ms {
			h.until(at)
			h.set(gpio.High)
			h.until(at + 30*ms)
			h.set(gpio.Low)
		}
		h.until(2 * time.Second)
		h.set(gpio.High)
		h.until(3 * time.Second)
		h.expect("privacy true at 2.06s")
		h.expectNoMore()
	})
	t.Run("an active-low switch is on while low", func(t *testing.T) {
		h := newSwitch(t, false, true, gpio.Low)
		h.until(50 * ms)
		h.expect("privacy true at 50ms")
		h.until(100 * ms)
		h.set(gpio.High)
		h.until(time.Second)
		h.expect("privacy false at 160ms")
		h.expectNoMore()
	})
}

func TestSwitchEdges(t *testing.T) {
	h := newSwitch(t, true, false, gpio.High)
	if d := h.timer(); d != 50*ms {
		t.Fatalf("at start the switch waits %v, want the 50 ms debounce", d)
	}
	h.advance(50 * ms)
	h.expect("privacy true at 50ms")
	h.advance(time.Second)
	h.edge(gpio.Low)
	if d := h.newTimer(); d != 50*ms {
		t.Fatalf("after an edge the switch waits %v, want the 50 ms debounce", d)
	}
	h.advance(50 * ms)
	h.expect("privacy false at 1.1s")
	h.advance(time.Second)
	h.edge(gpio.High) // a 10 ms glitch
	h.newTimer()
	h.advance(10 * ms)
	h.edge(gpio.Low)
	h.noTimer()
	h.advance(time.Second)
	h.edge(gpio.High)
	h.newTimer()
	h.advance(50 * ms)
	h.expect("privacy true at 3.16s")
	h.expectNoMore()
}
