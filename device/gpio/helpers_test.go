package gpio_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/internal/clock/clocktest"
)

// t0 is when every test's fake clock starts.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// guard bounds every wait for the goroutine under test, in real time. It is a deadline for a
// failure, not a sleep: a passing test never waits for it.
const guard = 10 * time.Second

// afterClock is a fake clock that reports the duration of every timer made on it, after the
// timer is registered, so a test knows what the component waits for.
type afterClock struct {
	*clocktest.Fake
	afters chan time.Duration
}

var _ clock.Clock = afterClock{}

func (c afterClock) After(d time.Duration) <-chan time.Time {
	ch := c.Fake.After(d)
	c.afters <- d
	return ch
}

// inputHarness runs a Button or a Switch on a gpiotest pin and a fake clock, and records what
// its callbacks report with the fake time they were called at.
type inputHarness struct {
	t       *testing.T
	pin     *gpiotest.Pin
	reads   chan gpio.Level // with edges: the levels the input read
	clk     afterClock
	events  chan string
	pending time.Duration // the timer the input waits on; valid when armed
	armed   bool
	stop    func()
}

// newInputHarness returns a harness whose pin has edge detection when edges is true (periph's
// gpiotest.Pin then delivers levels sent on EdgesChan) and is polled otherwise.
func newInputHarness(t *testing.T, edges bool) *inputHarness {
	t.Helper()
	h := &inputHarness{
		t:      t,
		pin:    &gpiotest.Pin{N: "GPIO17", Num: 17},
		clk:    afterClock{clocktest.New(t0), make(chan time.Duration, 64)},
		events: make(chan string, 16),
	}
	if edges {
		h.pin.EdgesChan = make(chan gpio.Level)
		h.reads = make(chan gpio.Level, 64)
	}
	return h
}

// input returns the pin to give the Button or Switch.
func (h *inputHarness) input() gpio.PinIO {
	if h.reads == nil {
		return h.pin
	}
	return readPin{h.pin, h.reads}
}

// readPin reports the levels its Read returns, and waits for edges without a timeout, so that
// only the test makes the input read the pin. To stop the input, the test offers edges until
// Run returns.
type readPin struct {
	*gpiotest.Pin
	reads chan gpio.Level
}

func (p readPin) Read() gpio.Level {
	l := p.Pin.Read()
	select {
	case p.reads <- l:
	default: // the test is not listening
	}
	return l
}

func (p readPin) WaitForEdge(time.Duration) bool { return p.Pin.WaitForEdge(-1) }

// record returns a callback that records name at the current fake time.
func (h *inputHarness) record(name string) func() {
	return func() { h.events <- fmt.Sprintf("%s at %v", name, h.clk.Now().Sub(t0)) }
}

// start runs run (a Button's or a Switch's Run) until the test ends.
func (h *inputHarness) start(run func(context.Context) error) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			var unblock chan gpio.Level // nil, unless the edge goroutine may wait for an edge
			if h.reads != nil {
				unblock = h.pin.EdgesChan
			}
			for {
				select {
				case err := <-done:
					if err != nil {
						h.t.Errorf("Run returned %v", err)
					}
					return
				case unblock <- h.pin.Read():
				case <-time.After(guard):
					h.t.Errorf("Run did not return after cancel")
					return
				}
			}
		})
	}
	h.t.Cleanup(h.stop)
}

// timer waits until the input has armed a timer and returns how long it is.
func (h *inputHarness) timer() time.Duration {
	h.t.Helper()
	if !h.armed {
		select {
		case h.pending = <-h.clk.afters:
			h.armed = true
		case <-time.After(guard):
			h.t.Fatalf("at %v: the input armed no timer", h.clk.Now().Sub(t0))
		}
	}
	return h.pending
}

// newTimer waits for the input to arm a new timer, replacing the one it waited on, and
// returns how long it is.
func (h *inputHarness) newTimer() time.Duration {
	h.t.Helper()
	h.armed = false
	return h.timer()
}

// advance moves the fake clock by d. When that fires the pending timer of an input with
// edges, it returns once the input has read the level for it.
func (h *inputHarness) advance(d time.Duration) {
	h.t.Helper()
	fires := h.armed && d >= h.pending
	if fires && h.reads != nil {
		for len(h.reads) > 0 {
			<-h.reads
		}
	}
	h.clk.Advance(d)
	if !h.armed {
		return
	}
	if h.pending -= d; !fires {
		return
	}
	h.armed = false
	if h.reads != nil {
		select {
		case <-h.reads:
		case <-time.After(guard):
			h.t.Fatalf("at %v: the input did not handle its timer", h.clk.Now().Sub(t0))
		}
	}
}

// noTimer records that the input dropped its timer: the test expects it has nothing to wait
// for.
func (h *inputHarness) noTimer() { h.armed = false }

// until moves the fake clock, timer by timer, to t0+at, and returns once the input has
// handled every timer due by then and armed its next one (polling inputs always have one).
func (h *inputHarness) until(at time.Duration) {
	h.t.Helper()
	target := t0.Add(at)
	for {
		d := h.timer()
		now := h.clk.Now()
		if !now.Before(target) {
			return
		}
		h.advance(min(d, target.Sub(now)))
	}
}

// set drives the pin of a polled input to l.
func (h *inputHarness) set(l gpio.Level) {
	h.t.Helper()
	if err := h.pin.Out(l); err != nil {
		h.t.Fatal(err)
	}
}

// edge delivers an edge to l on a pin with edge detection, and returns once the input has
// read the new level. (gpiotest.Pin sets the level only after the edge was taken.) If the
// edge makes the input arm a timer, call newTimer before moving the clock.
func (h *inputHarness) edge(l gpio.Level) {
	h.t.Helper()
	for len(h.reads) > 0 {
		<-h.reads
	}
	select {
	case h.pin.EdgesChan <- l:
	case <-time.After(guard):
		h.t.Fatalf("at %v: nobody waits for an edge", h.clk.Now().Sub(t0))
	}
	for {
		select {
		case got := <-h.reads:
			if got == l {
				return
			}
		case <-time.After(guard):
			h.t.Fatalf("at %v: the input did not read the edge to %v", h.clk.Now().Sub(t0), l)
		}
	}
}

// expect checks the next recorded events.
func (h *inputHarness) expect(want ...string) {
	h.t.Helper()
	for _, w := range want {
		select {
		case got := <-h.events:
			if got != w {
				h.t.Fatalf("got event %q, want %q", got, w)
			}
		case <-time.After(guard):
			h.t.Fatalf("at %v: no event, want %q", h.clk.Now().Sub(t0), w)
		}
	}
}

// expectNoMore stops the input and checks that it recorded nothing more.
func (h *inputHarness) expectNoMore() {
	h.t.Helper()
	h.stop()
	close(h.events)
	for e := range h.events {
		h.t.Errorf("unexpected event %q", e)
	}
}
