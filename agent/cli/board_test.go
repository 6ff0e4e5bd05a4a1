package cli

import (
	"testing"

	"github.com/camagent/camagent/agent"
	camgpio "github.com/camagent/camagent/device/gpio"
)

func TestTheLEDAndStatusLineFollowTheAgent(t *testing.T) {
	for _, tt := range []struct {
		name   string
		st     agent.Status
		led    camgpio.State
		status string
	}{
		{"waiting for the clock shows connecting", agent.Status{Running: true, ClockBehind: true}, camgpio.Connecting, "waiting for a plausible clock (time sync) before connecting"},
		{"not connected shows connecting", agent.Status{Running: true}, camgpio.Connecting, "connecting to broker"},
		{"connected shows online", agent.Status{Running: true, Connected: true}, camgpio.Online, "connected to broker"},
		{"privacy overrides online", agent.Status{Running: true, Connected: true, Privacy: true}, camgpio.Privacy, "connected to broker; privacy mode on"},
		{"privacy does not hide a lost connection", agent.Status{Running: true, Privacy: true}, camgpio.Connecting, "connecting to broker; privacy mode on"},
		{"a rotation shows rotating", agent.Status{Running: true, Connected: true, Rotating: true, Privacy: true}, camgpio.Rotating, "connected to broker; rotating credentials; privacy mode on"},
		{"a rotation offline shows rotating", agent.Status{Running: true, Rotating: true}, camgpio.Rotating, "connecting to broker; rotating credentials"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ledState(tt.st); got != tt.led {
				t.Errorf("LED %v, want %v", got, tt.led)
			}
			if got := statusLine(tt.st); got != tt.status {
				t.Errorf("status %q, want %q", got, tt.status)
			}
		})
	}
}

func TestABoardWithoutPinsDoesNothing(t *testing.T) {
	b, err := newBoard(boardConfig{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.firstLevel():
	default:
		t.Fatal("without a switch, its level must not be waited for")
	}
	if on, known := b.switchLevel(); on || known || b.hasSwitch() {
		t.Fatalf("switch level %v, known %v", on, known)
	}
	b.setLED(camgpio.Online) // a nil LED ignores it
}
