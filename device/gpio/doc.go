// Package gpio drives the camera's few pieces of hardware beside the image sensor: a status
// LED, a reset button and a privacy switch. It is built on the periph.io/x/conn/v3/gpio
// interfaces, so the components take any gpio.PinOut or gpio.PinIn: the Raspberry Pi drivers of
// periph.io/x/host/v3 on a board (see Open, which resolves the pin names of the configuration),
// and periph's gpiotest.Pin in tests.
//
// Every pin is optional. A component built from a nil pin is nil, and the methods of a nil
// *LED, *Button or *Switch do nothing, so the agent wires them the same way on a board with all
// three, on one with none, and on a machine without GPIO at all (Open then reports NoGPIO and
// returns no error).
//
// Time comes from an injected clock.Clock, so patterns, debouncing and the long press are tested
// on a fake clock without sleeping. Each component runs in one goroutine, its Run method, which
// returns when its context is cancelled; callbacks are called from that goroutine, one at a time.
//
// # Status LED
//
// LED.SetState never blocks; the last state set wins. The patterns, which repeat until the state
// changes (a state set again does not restart its pattern):
//
//	state       pattern                                        period  meaning
//	Booting     on 100 ms, off 100 ms (5 Hz, fast blink)       200 ms  started; not yet trying the broker (the zero State)
//	Connecting  on 500 ms, off 500 ms (1 Hz)                   1 s     waiting for a plausible clock, or (re)connecting
//	Online      on                                             -       connected and serving
//	Rotating    on 100, off 100, on 100, off 700 (double blink) 1 s    rotating credentials
//	Privacy     on 50 ms, off 2950 ms (a short blip)           3 s     privacy mode: camera off
//	Error       SOS: ··· — — — ··· in 150 ms units             5.1 s   needs a person (not enrolled, factory reset failed, ...)
//	Off         off                                            -       LED off (and whenever Run has returned)
//
// SOS is three dots (on 1 unit, off 1), a letter gap (off 3 units), three dashes (on 3, off 1),
// a letter gap, three dots and a word gap (off 7 units); a unit is 150 ms.
//
// # Reset button
//
// A Button is debounced (the level must hold for Debounce, 50 ms by default; shorter glitches
// are ignored). Released before ShortPress (2 s) it calls OnShortPress (show status); held for
// LongPress (10 s) it calls OnLongPress (factory reset) once, at 10 s, while still held; a press
// between the two does nothing. By default the button shorts the pin to ground against the
// internal pull-up (active low). A button already held when Run starts is ignored until it has
// been released, so a stuck button cannot wipe the device at every boot.
//
// # Privacy switch
//
// A Switch reports its debounced level to OnChange, including the level read when Run starts.
// By default privacy is on while the pin reads high: with the internal pull-up that is the switch
// open, or disconnected, so a broken wire fails safe (privacy on, camera off).
//
// # Edges and polling
//
// Inputs use the pin's edge detection (gpio.BothEdges) where the driver supports it, and sleep
// until an edge; otherwise, or if the driver stops blocking in WaitForEdge, they poll every
// PollInterval (10 ms by default).
//
// The package never touches the network and never decides anything: it reports presses and
// levels, and the agent acts on them (factory reset, privacy mode). It never exits the process.
package gpio
