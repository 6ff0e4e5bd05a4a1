package gpio

import (
	"fmt"
	"path/filepath"
	"strings"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"
)

// Names are the pins named in the configuration (keys led-pin, button-pin and privacy-pin), as
// the machine's GPIO drivers name them: "GPIO17" on a Raspberry Pi. An empty name turns the
// feature off.
type Names struct {
	LED     string
	Button  string
	Privacy string
}

// Pins are the pins Open resolved. A nil field means the feature is off; pass the fields to
// NewLED, NewButton and NewSwitch as they are.
type Pins struct {
	LED     gpio.PinOut
	Button  gpio.PinIn
	Privacy gpio.PinIn
	// NoGPIO is set, and every field is nil, when pins were named on a machine without usable
	// GPIO. It says why, for a log line such as "GPIO features off: ...".
	NoGPIO string
}

// Open loads the host's GPIO drivers (periph.io/x/host/v3) and resolves the named pins. It
// touches no hardware when no pin is named.
//
// On a machine without usable GPIO (a PC, a container, or a Pi whose /dev/gpiochip* this user
// cannot open) it returns Pins with every feature off and NoGPIO saying why, and a nil error:
// the agent runs normally without the LED, the button and the switch. An error means the
// configuration is wrong on a machine that has GPIO: a name its drivers do not know
// (ErrUnknownPin) or one pin named twice (ErrPinInUse). Errors name the config key.
func Open(names Names) (Pins, error) {
	if names == (Names{}) {
		return Pins{}, nil
	}
	state, err := host.Init()
	if err != nil {
		return Pins{NoGPIO: "loading the GPIO drivers failed: " + err.Error()}, nil
	}
	if len(gpioreg.All()) == 0 {
		reason := "no GPIO on this machine"
		if chips, _ := filepath.Glob("/dev/gpiochip*"); len(chips) > 0 {
			reason = fmt.Sprintf("%s exists but no pin could be opened (is the service user in the gpio group?)", chips[0])
		}
		var failed []string
		for _, f := range state.Failed {
			failed = append(failed, f.String())
		}
		if len(failed) > 0 {
			reason += "; drivers failed: " + strings.Join(failed, "; ")
		}
		return Pins{NoGPIO: reason}, nil
	}
	return resolve(names, gpioreg.ByName)
}

// resolve looks the names up with byName; a nil result means no such pin.
func resolve(names Names, byName func(string) gpio.PinIO) (Pins, error) {
	var pins Pins
	used := map[string]string{} // real pin name -> config key
	for _, f := range []struct {
		key, name string
		set       func(gpio.PinIO)
	}{
		{"led-pin", names.LED, func(p gpio.PinIO) { pins.LED = p }},
		{"button-pin", names.Button, func(p gpio.PinIO) { pins.Button = p }},
		{"privacy-pin", names.Privacy, func(p gpio.PinIO) { pins.Privacy = p }},
	} {
		if f.name == "" {
			continue
		}
		p := byName(f.name)
		if p == nil {
			return Pins{}, fmt.Errorf("%s %q: %w", f.key, f.name, ErrUnknownPin)
		}
		real := p
		if r, ok := p.(gpio.RealPin); ok {
			real = r.Real()
		}
		if other, ok := used[real.Name()]; ok {
			return Pins{}, fmt.Errorf("%s %q: %w: %s names %s too", f.key, f.name, ErrPinInUse, other, real.Name())
		}
		used[real.Name()] = f.key
		f.set(p)
	}
	return pins, nil
}
