package gpio_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	camgpio "github.com/camagent/camagent/device/gpio"
)

func TestOpenWithoutGPIOTurnsFeaturesOff(t *testing.T) {
	if chips, _ := filepath.Glob("/dev/gpiochip*"); len(chips) > 0 {
		t.Skipf("this machine has GPIO (%s)", chips[0])
	}
	pins, err := camgpio.Open(camgpio.Names{LED: "GPIO27", Button: "GPIO17", Privacy: "GPIO22"})
	if err != nil {
		t.Fatalf("Open on a machine without GPIO: %v, want no error", err)
	}
	if pins.LED != nil || pins.Button != nil || pins.Privacy != nil {
		t.Errorf("Open returned pins on a machine without GPIO: %+v", pins)
	}
	if pins.NoGPIO == "" {
		t.Error("NoGPIO is empty: the agent cannot say why the features are off")
	}
	t.Logf("NoGPIO: %s", pins.NoGPIO)

	// The agent wires the nil pins as it would real ones.
	led := camgpio.NewLED(camgpio.LEDConfig{Pin: pins.LED})
	button, err := camgpio.NewButton(camgpio.ButtonConfig{Pin: pins.Button})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := camgpio.NewSwitch(camgpio.SwitchConfig{Pin: pins.Privacy})
	if err != nil {
		t.Fatal(err)
	}
	if led != nil || button != nil || sw != nil {
		t.Fatal("components built from nil pins are not nil")
	}
	led.SetState(camgpio.Error)
	if s := led.State(); s != camgpio.Off {
		t.Errorf("a nil LED's State() = %v, want off", s)
	}
	ctx := context.Background()
	for name, run := range map[string]func(context.Context) error{"LED": led.Run, "button": button.Run, "switch": sw.Run} {
		if err := run(ctx); err != nil {
			t.Errorf("nil %s: Run returned %v, want nil at once", name, err)
		}
	}
}

func TestOpenWithNoNamesTouchesNothing(t *testing.T) {
	pins, err := camgpio.Open(camgpio.Names{})
	if err != nil || pins != (camgpio.Pins{}) {
		t.Errorf("Open(no names) = %+v, %v; want no pins and no error", pins, err)
	}
}

func TestResolve(t *testing.T) {
	gpio17 := &gpiotest.Pin{N: "GPIO17", Num: 17}
	gpio27 := &gpiotest.Pin{N: "GPIO27", Num: 27}
	byName := func(name string) gpio.PinIO {
		switch name {
		case "GPIO17":
			return gpio17
		case "GPIO27":
			return gpio27
		case "BUTTON": // an alias, as gpioreg.RegisterAlias makes
			return &alias{gpio17}
		}
		return nil
	}
	t.Run("named pins are resolved and the others are off", func(t *testing.T) {
		pins, err := camgpio.Resolve(camgpio.Names{LED: "GPIO27", Button: "BUTTON"}, byName)
		if err != nil {
			t.Fatal(err)
		}
		if pins.LED != gpio27 || pins.Button == nil || pins.Button.Name() != "BUTTON" || pins.Privacy != nil {
			t.Errorf("pins = %+v", pins)
		}
	})
	for _, tc := range []struct {
		name    string
		names   camgpio.Names
		is      error
		mention string
	}{
		{"an unknown name is an error naming the key", camgpio.Names{Privacy: "GPIO99"}, camgpio.ErrUnknownPin, `privacy-pin "GPIO99"`},
		{"one pin named twice is an error", camgpio.Names{LED: "GPIO17", Button: "GPIO17"}, camgpio.ErrPinInUse, "button-pin"},
		{"a pin named twice through an alias is an error", camgpio.Names{Button: "BUTTON", Privacy: "GPIO17"}, camgpio.ErrPinInUse, "privacy-pin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := camgpio.Resolve(tc.names, byName)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("err = %v, want %v mentioning %s", err, tc.is, tc.mention)
			}
		})
	}
}

// alias is a pin registered under another name.
type alias struct{ *gpiotest.Pin }

func (a *alias) Name() string     { return "BUTTON" }
func (a *alias) Real() gpio.PinIO { return a.Pin }
func (a *alias) String() string   { return "BUTTON" }
