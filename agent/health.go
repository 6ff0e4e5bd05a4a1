package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/camagent/camagent/agent/state"
)

// Status is a snapshot of what the agent is doing, for the status LED, the service manager's
// status line and the reset button's short press. It carries no secret and no personal data.
type Status struct {
	// DeviceID is the device's id.
	DeviceID string
	// Epoch is the credential and grant epoch.
	Epoch uint64
	// CertSerial and CertNotAfter describe the certificate presented to the broker.
	CertSerial   string
	CertNotAfter time.Time
	// Running is true from the start of Run until it returns.
	Running bool
	// ClockBehind is true while Run waits for a plausible clock before connecting (R5).
	ClockBehind bool
	// Connected is true while the MQTT session is up.
	Connected bool
	// Rotating is true while a credential rotation is under way: an attempt is running, or
	// the journal holds an unfinished one that will be retried.
	Rotating bool
	// Privacy is privacy mode.
	Privacy bool
}

// Status returns what the agent is doing now. It never blocks for long and may be called
// from any goroutine, before, during and after Run.
func (a *Agent) Status() Status {
	c := a.Certificate()
	a.mu.Lock()
	st := Status{
		DeviceID:     a.DeviceID(),
		Epoch:        a.st.Cred.Epoch,
		CertSerial:   serialHex(c),
		CertNotAfter: c.NotAfter,
		Rotating:     a.st.Cred.Phase != state.PhaseNone,
		Privacy:      a.privacyLocked(),
	}
	a.mu.Unlock()
	st.Running = a.running.Load()
	st.ClockBehind = a.clockBehind.Load()
	st.Rotating = st.Rotating || a.busySince.Load() != 0
	if cl := a.mqttc.Load(); cl != nil && st.Running {
		st.Connected = cl.Connected()
	}
	return st
}

// ErrNotRunning is returned by Alive when Run is not running.
var ErrNotRunning = errors.New("agent: not running")

// Alive reports whether the agent's main loop is responsive: the loop that waits for the
// clock and then the reconcile loop, which drives rotations, take a heartbeat whenever they
// wait. While a rotation attempt runs the loop does not wait; the attempt's steps are bounded
// by their timeouts, so Alive accepts an attempt younger than maxBusy. It returns nil once
// the heartbeat is taken, or an error when ctx ends first: the service manager's watchdog is
// then not fed, and systemd restarts a wedged agent (R9). ctx should carry a deadline.
func (a *Agent) Alive(ctx context.Context) error {
	if !a.running.Load() {
		return ErrNotRunning
	}
	select {
	case a.beat <- struct{}{}:
		return nil
	case <-ctx.Done():
	}
	if since := a.busySince.Load(); since != 0 {
		d := a.clk.Now().Sub(time.Unix(0, since))
		if d < a.maxBusy() {
			return nil
		}
		return fmt.Errorf("agent: a rotation attempt has run for %v, longer than its steps' timeouts allow", d.Round(time.Second))
	}
	if !a.running.Load() {
		return ErrNotRunning
	}
	return fmt.Errorf("agent: the main loop did not answer: %w", ctx.Err())
}

// maxBusy bounds one rotation attempt: the signer's answer (sent again after a reconnection,
// maxRequestWaits RequestTimeouts at most), the switch to the new certificate, and a margin for
// connection attempts and publishes on a dying link (keepalive plus connect timeout, twice).
func (a *Agent) maxBusy() time.Duration {
	return maxRequestWaits*a.cfg.RequestTimeout + a.cfg.SwitchTimeout + 2*time.Minute
}

// await waits until ch receives or ctx ends, taking Alive's heartbeats meanwhile. It returns
// false if ctx ended first.
func (a *Agent) await(ctx context.Context, ch <-chan time.Time) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-a.beat:
		case <-ch:
			return true
		}
	}
}
