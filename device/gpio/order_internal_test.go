package gpio

import (
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// settles records what an input tells its handler.
type settles struct{ got []bool }

func (s *settles) settled(active bool, _ time.Time) { s.got = append(s.got, active) }
func (s *settles) deadline() time.Time              { return time.Time{} }
func (s *settles) expire(time.Time)                 {}

// The loop selects at random between a timer and an edge that are both ready. A press read in
// the instant the start's debounce ends must count as a press whichever comes first: the
// released level had held for the debounce period before it, so it is committed first, and
// the press is debounced after it. (Taken the other way, the press was the first level the
// button knew, "held at start", and ignored.)
func TestAReadAfterTheDebounceCommitsTheLevelThatHeldFirst(t *testing.T) {
	pin := &gpiotest.Pin{N: "GPIO27", L: gpio.High} // released (active low)
	in := &input{inputConfig: inputConfig{what: "button", pin: pin, debounce: 50 * time.Millisecond}}
	t0 := time.Unix(1_800_000_000, 0)
	in.raw, in.changedAt = in.read(), t0 // as run starts: the level read, not yet known

	pin.L = gpio.Low // pressed: the edge is read 50 ms on, before the loop took its timer
	h := &settles{}
	in.update(h, t0.Add(50*time.Millisecond), true)
	if len(h.got) != 1 || h.got[0] {
		t.Fatalf("settled %v, want the released level that held first", h.got)
	}
	if !in.pending() || !in.raw {
		t.Fatal("the press is not being debounced")
	}
	in.update(h, t0.Add(100*time.Millisecond), false)
	if len(h.got) != 2 || !h.got[1] {
		t.Fatalf("settled %v, want released, then pressed", h.got)
	}
}
