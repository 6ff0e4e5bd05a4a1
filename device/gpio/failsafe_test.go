package gpio_test

import (
	"fmt"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"

	camgpio "github.com/camagent/camagent/device/gpio"
)

// A pin nothing drives reads what its pull resistor makes it: periph's gpiotest.Pin takes the
// pulled level in In, which models a switch or button whose wire broke.

func TestSwitchWithABrokenWireTurnsPrivacyOn(t *testing.T) {
	for _, activeLow := range []bool{false, true} {
		t.Run(fmt.Sprintf("active low %v", activeLow), func(t *testing.T) {
			h := newInputHarness(t, false)
			s, err := camgpio.NewSwitch(camgpio.SwitchConfig{
				Pin: h.pin, ActiveLow: activeLow, Clock: h.clk,
				OnChange: func(on bool) { h.events <- fmt.Sprintf("privacy %v at %v", on, h.clk.Now().Sub(t0)) },
			})
			if err != nil {
				t.Fatal(err)
			}
			h.start(s.Run) // the pin is left to its pull resistor: the wire is cut
			h.until(50 * ms)
			h.expect("privacy true at 50ms")
			h.until(time.Second)
			h.expectNoMore()
		})
	}
}

func TestButtonActiveHighWithDefaultPullIsNotHeldForever(t *testing.T) {
	h := newInputHarness(t, false)
	b, err := camgpio.NewButton(camgpio.ButtonConfig{
		Pin: h.pin, ActiveHigh: true, Clock: h.clk, OnShortPress: h.record("short press"),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.start(b.Run) // not pressed: the pin is left to its pull resistor
	h.until(100 * ms)
	h.set(gpio.High) // pressed
	h.until(500 * ms)
	h.set(gpio.Low) // released
	h.until(time.Second)
	h.expect("short press at 560ms")
	h.expectNoMore()
}

func TestButtonReleasedJustBeforeTheLongPressDoesNotFire(t *testing.T) {
	h := newButton(t, false, false)
	h.until(100 * ms)
	h.set(gpio.Low) // pressed, seen at 110 ms: the long press is due at 10.11 s
	h.until(10090 * ms)
	h.set(gpio.High) // released, seen at 10.1 s: held 9.99 s
	h.until(11 * time.Second)
	h.expectNoMore()
}

func TestButtonBouncingAtTheLongPressFiresItOnceStillHeld(t *testing.T) {
	h := newButton(t, false, false)
	h.until(100 * ms)
	h.set(gpio.Low) // pressed, seen at 110 ms: the long press is due at 10.11 s
	h.until(10090 * ms)
	h.set(gpio.High) // a bounce, seen at 10.1 s ...
	h.until(10110 * ms)
	h.set(gpio.Low) // ... over by 10.12 s: the button is still held
	h.until(15 * time.Second)
	h.set(gpio.High)
	h.until(16 * time.Second)
	h.expect("long press at 10.12s")
	h.expectNoMore()
}
