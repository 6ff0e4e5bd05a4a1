package gpio_test

import (
	"fmt"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"

	camgpio "github.com/camagent/camagent/device/gpio"
)

// The level read when Run starts is one sample, as open to a glitch as any other: it must
// hold for the debounce period before it counts, like every later change.

func TestSwitchGlitchAtStartDoesNotTurnPrivacyOff(t *testing.T) {
	h := newInputHarness(t, false)
	s, err := camgpio.NewSwitch(camgpio.SwitchConfig{
		Pin: h.pin, Clock: h.clk,
		OnChange: func(on bool) { h.events <- fmt.Sprintf("privacy %v at %v", on, h.clk.Now().Sub(t0)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.set(gpio.Low) // a glitch: the switch is open (privacy on), but the first read sees closed
	h.start(s.Run)
	h.timer() // the first read is done
	h.set(gpio.High)
	h.until(time.Second)
	h.expect("privacy true at 60ms")
	h.expectNoMore()
}

func TestButtonHeldAtStartWithAGlitchIsNotALongPress(t *testing.T) {
	h := newInputHarness(t, false)
	b, err := camgpio.NewButton(camgpio.ButtonConfig{
		Pin: h.pin, Clock: h.clk, OnShortPress: h.record("short press"), OnLongPress: h.record("long press"),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.set(gpio.High) // a bounce: the button is stuck down, but the first read sees it released
	h.start(b.Run)
	h.timer() // the first read is done
	h.set(gpio.Low)
	h.until(30 * time.Second) // stuck for good: no factory reset
	h.expectNoMore()
}
