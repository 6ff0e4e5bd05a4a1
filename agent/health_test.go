package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/internal/logtest"
)

// aliveWithin calls Alive with a deadline d from now.
func aliveWithin(a *Agent, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return a.Alive(ctx)
}

// The service's LED, status line and watchdog follow the agent through Status and Alive: the
// agent answers the watchdog's heartbeat while it waits for the clock and from its reconcile
// loop, and not at all before Run or after it returned.
func TestStatusAndAliveFollowTheAgentsLife(t *testing.T) {
	issued := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := enrolled(t, "cam-0001", issued, closedPort(t))
	clk := clocktest.New(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)) // no RTC
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Clock: clk, Logger: log, ClockRetry: time.Minute, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.Running || st.Connected || st.DeviceID != "cam-0001" || st.CertSerial == "" {
		t.Fatalf("before Run: %+v", st)
	}
	if err := aliveWithin(a, time.Second); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Alive before Run = %v, want ErrNotRunning", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	rec.WaitFor(t, 5*time.Second, "device clock is behind")
	if st := a.Status(); !st.Running || !st.ClockBehind || st.Connected {
		t.Fatalf("waiting for the clock: %+v", st)
	}
	if err := aliveWithin(a, 5*time.Second); err != nil {
		t.Fatalf("Alive while waiting for the clock: %v", err)
	}

	clk.Set(issued.Add(time.Hour)) // NTP arrived; the broker is down
	rec.WaitFor(t, 10*time.Second, "cannot connect to broker")
	if err := aliveWithin(a, 5*time.Second); err != nil {
		t.Fatalf("Alive while connecting: %v", err)
	}
	if st := a.Status(); !st.Running || st.ClockBehind || st.Connected || st.Rotating {
		t.Fatalf("connecting: %+v", st)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := aliveWithin(a, time.Second); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Alive after Run = %v, want ErrNotRunning", err)
	}
	if st := a.Status(); st.Running || st.Connected {
		t.Fatalf("after Run: %+v", st)
	}
}

// A loop that does not take the heartbeat is wedged, except while a rotation attempt runs
// within the time its steps' timeouts allow.
func TestAliveToleratesARotationAttemptOnlyWithinItsTimeouts(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := enrolled(t, "cam-0001", now, closedPort(t))
	clk := clocktest.New(now.Add(time.Hour))
	a, err := New(Config{StateDir: f.dir, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	a.running.Store(true) // as if Run were stuck: nobody takes the heartbeat
	if err := aliveWithin(a, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("Alive of a wedged loop = %v", err)
	}
	a.busySince.Store(clk.Now().UnixNano())
	clk.Advance(a.maxBusy() - time.Second)
	if err := aliveWithin(a, 10*time.Millisecond); err != nil {
		t.Fatalf("Alive during a young rotation attempt = %v", err)
	}
	if st := a.Status(); !st.Rotating {
		t.Fatalf("status during a rotation attempt: %+v", st)
	}
	clk.Advance(2 * time.Second)
	if err := aliveWithin(a, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "rotation attempt") {
		t.Fatalf("Alive during an overlong rotation attempt = %v", err)
	}
}
