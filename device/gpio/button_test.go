package gpio_test

import (
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	camgpio "github.com/camagent/camagent/device/gpio"
)

const ms = time.Millisecond

// newButton starts a button on a harness pin, with the default timings.
func newButton(t *testing.T, edges bool, pressedAtStart bool) *inputHarness {
	t.Helper()
	h := newInputHarness(t, edges)
	b, err := camgpio.NewButton(camgpio.ButtonConfig{
		Pin:          h.input(),
		Clock:        h.clk,
		OnShortPress: h.record("short press"),
		OnLongPress:  h.record("long press"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.pin.P != gpio.PullUp {
		t.Errorf("button pin pull = %v, want the default PullUp", h.pin.P)
	}
	if pressedAtStart {
		h.set(gpio.Low)
	}
	h.start(b.Run)
	return h
}

func TestButtonPolled(t *testing.T) {
	// The pin has no edge detection, so the button is read every 10 ms: a press starting at
	// 100 ms is first seen at 110 ms and confirmed 50 ms later.
	for _, tc := range []struct {
		name   string
		script func(h *inputHarness)
		want   []string
	}{{
		name: "a short press is reported when released",
		script: func(h *inputHarness) {
			h.until(100 * ms)
			h.set(gpio.Low)
			h.until(1000 * ms)
			h.set(gpio.High)
			h.until(2000 * ms)
		},
		want: []string{"short press at 1.06s"},
	}, {
		name: "a glitch shorter than the debounce is ignored",
		script: func(h *inputHarness) {
			h.until(100 * ms)
			h.set(gpio.Low)
			h.until(130 * ms) // seen low at 110, 120 and 130 ms: 20 ms < 50 ms
			h.set(gpio.High)
			h.until(500 * ms)
			h.set(gpio.Low) // a real press afterwards still counts
			h.until(700 * ms)
			h.set(gpio.High)
			h.until(1000 * ms)
		},
		want: []string{"short press at 760ms"},
	}, {
		name: "a bouncing release does not end the press early",
		script: func(h *inputHarness) {
			h.until(100 * ms)
			h.set(gpio.Low)
			h.until(1000 * ms)
			h.set(gpio.High) // bounces: high 20 ms, low 20 ms, then high for good
			h.until(1020 * ms)
			h.set(gpio.Low)
			h.until(1040 * ms)
			h.set(gpio.High)
			h.until(2000 * ms)
		},
		want: []string{"short press at 1.1s"},
	}, {
		name: "a long press fires once at 10 s while still held, and its release is not a short press",
		script: func(h *inputHarness) {
			h.until(100 * ms)
			h.set(gpio.Low)
			h.until(15 * time.Second)
			h.set(gpio.High)
			h.until(16 * time.Second)
		},
		want: []string{"long press at 10.11s"},
	}, {
		name: "a press between 2 s and 10 s does nothing",
		script: func(h *inputHarness) {
			h.until(100 * ms)
			h.set(gpio.Low)
			h.until(5 * time.Second)
			h.set(gpio.High)
			h.until(6 * time.Second)
		},
	}, {
		name: "two long presses fire twice",
		script: func(h *inputHarness) {
			h.until(100 * ms)
			h.set(gpio.Low)
			h.until(11 * time.Second)
			h.set(gpio.High)
			h.until(12 * time.Second)
			h.set(gpio.Low)
			h.until(23 * time.Second)
			h.set(gpio.High)
			h.until(24 * time.Second)
		},
		want: []string{"long press at 10.11s", "long press at 22.01s"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newButton(t, false, false)
			if d := h.timer(); d != 10*ms {
				t.Fatalf("first timer %v, want the 10 ms poll", d)
			}
			tc.script(h)
			h.expect(tc.want...)
			h.expectNoMore()
		})
	}
}

func TestButtonHeldAtStartIsIgnoredUntilReleased(t *testing.T) {
	h := newButton(t, false, true)
	h.until(15 * time.Second) // held from the start: no long press
	h.set(gpio.High)
	h.until(16 * time.Second)
	h.set(gpio.Low)
	h.until(16500 * ms)
	h.set(gpio.High)
	h.until(17 * time.Second)
	h.expect("short press at 16.56s")
	h.expectNoMore()
}

func TestButtonEdges(t *testing.T) {
	h := newButton(t, true, false)
	// expectTimer checks the timer the button arms after an edge or a timer.
	expectTimer := func(what string, want time.Duration) {
		t.Helper()
		if d := h.newTimer(); d != want {
			t.Fatalf("%s: the button waits %v, want %v", what, d, want)
		}
	}

	// Released at the start: the level read is debounced like any change.
	expectTimer("at the start", 50*ms)
	h.advance(50 * ms)

	// Pressed at 50 ms: debounced for 50 ms, then the long press is armed for 10 s.
	h.edge(gpio.Low)
	expectTimer("after a press", 50*ms)
	h.advance(50 * ms)
	expectTimer("after the press is confirmed", 9950*ms)

	// Released at 1.05 s, bouncing back to low at 1.07 s and high again: a short press, reported
	// 50 ms after the last bounce.
	h.advance(950 * ms)
	h.edge(gpio.High)
	expectTimer("after a release", 50*ms)
	h.advance(20 * ms)
	h.edge(gpio.Low)
	expectTimer("back to the held level: the long press", 8980*ms)
	h.edge(gpio.High)
	expectTimer("after the last bounce", 50*ms)
	h.advance(50 * ms)
	h.expect("short press at 1.12s")

	// A 30 ms glitch at 2.12 s: no press.
	h.advance(1 * time.Second)
	h.edge(gpio.Low)
	expectTimer("after the glitch starts", 50*ms)
	h.advance(30 * ms)
	h.edge(gpio.High)
	h.noTimer()

	// Held from 4.05 s: the long press fires at 14.05 s, once, and the release is not a short press.
	h.advance(1900 * ms)
	h.edge(gpio.Low)
	expectTimer("after a press", 50*ms)
	h.advance(50 * ms)
	expectTimer("after the press is confirmed", 9950*ms)
	h.advance(9950 * ms)
	h.expect("long press at 14.05s")
	h.advance(5 * time.Second)
	h.edge(gpio.High)
	expectTimer("after the release", 50*ms)
	h.advance(50 * ms)

	// A short press afterwards is the next event.
	h.advance(950 * ms)
	h.edge(gpio.Low)
	expectTimer("after a press", 50*ms)
	h.advance(50 * ms)
	expectTimer("after the press is confirmed", 9950*ms)
	h.advance(200 * ms)
	h.edge(gpio.High)
	expectTimer("after the release", 50*ms)
	h.advance(50 * ms)
	h.expect("short press at 20.35s")
	h.expectNoMore()
}

func TestButtonFallsBackToPollingWhenEdgesDoNotWait(t *testing.T) {
	h := newInputHarness(t, true)
	h.reads = nil // the input ends up polling: sync on its timers
	pin := &noWaitPin{h.pin}
	b, err := camgpio.NewButton(camgpio.ButtonConfig{Pin: pin, Clock: h.clk, OnShortPress: h.record("short press")})
	if err != nil {
		t.Fatal(err)
	}
	h.start(b.Run)
	if d := h.timer(); d != 50*ms {
		t.Fatalf("first timer %v, want the 50 ms debounce of the level at the start", d)
	}
	if d := h.newTimer(); d != 10*ms {
		t.Fatalf("next timer %v, want the 10 ms poll once WaitForEdge proved useless", d)
	}
	h.until(100 * ms)
	h.set(gpio.Low)
	h.until(300 * ms)
	h.set(gpio.High)
	h.until(500 * ms)
	h.expect("short press at 360ms")
	h.expectNoMore()
}

// noWaitPin accepts edge detection but its WaitForEdge returns at once, like a driver that
// cannot wait.
type noWaitPin struct{ *gpiotest.Pin }

func (*noWaitPin) WaitForEdge(time.Duration) bool { return false }

func TestButtonOptions(t *testing.T) {
	t.Run("an active-high button with a pull-down reports presses to high", func(t *testing.T) {
		h := newInputHarness(t, false)
		b, err := camgpio.NewButton(camgpio.ButtonConfig{
			Pin: h.pin, Pull: gpio.PullDown, ActiveHigh: true, Clock: h.clk,
			Debounce: 20 * ms, PollInterval: 5 * ms, ShortPress: time.Second, LongPress: 3 * time.Second,
			OnShortPress: h.record("short press"), OnLongPress: h.record("long press"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if h.pin.P != gpio.PullDown {
			t.Errorf("pull = %v, want PullDown", h.pin.P)
		}
		h.start(b.Run)
		h.until(100 * ms)
		h.set(gpio.High)
		h.until(600 * ms)
		h.set(gpio.Low)
		h.until(1000 * ms)
		h.set(gpio.High)
		h.until(5 * time.Second)
		h.set(gpio.Low)
		h.until(6 * time.Second)
		h.expect("short press at 625ms", "long press at 4.005s")
		h.expectNoMore()
	})
	t.Run("a short press as long as the long press is refused", func(t *testing.T) {
		h := newInputHarness(t, false)
		_, err := camgpio.NewButton(camgpio.ButtonConfig{Pin: h.pin, ShortPress: 10 * time.Second})
		if err == nil {
			t.Fatal("NewButton accepted ShortPress = LongPress")
		}
	})
}
