package signer

import (
	"context"
	"errors"
	"log/slog"
	"math/big"
	"sync/atomic"
	"time"

	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/transport/mqtt/broker"
)

// DefaultEnforceInterval is how often an Enforcer looks for new revocations.
const DefaultEnforceInterval = 250 * time.Millisecond

// Disconnecter cuts the live sessions of a certificate serial: the embedded broker.
type Disconnecter interface {
	DisconnectSerial(serial *big.Int) int
}

var _ Disconnecter = (*broker.Broker)(nil)

// Enforcer makes the embedded broker refuse revoked certificates at once: the broker asks
// Registry.Revoked at every CONNECT, and the Enforcer cuts the sessions that were already
// live when their serial was revoked, within Interval.
type Enforcer struct {
	// Registry is the fleet's registry. Required.
	Registry *registry.Registry
	// Broker cuts sessions. Required.
	Broker Disconnecter
	// From is how many revocations to skip: those the registry held before the broker
	// started, which Revoked refuses at CONNECT so no live session can use them. Zero cuts
	// the sessions of every revoked serial once, which costs a scan of every connection per
	// serial (broker.Broker.DisconnectSerial).
	From int
	// Interval is how often the registry is looked at; zero means DefaultEnforceInterval.
	Interval time.Duration
	// Clock makes the timers; nil means the system clock.
	Clock clock.Clock
	// Logger receives the serials cut; nil discards.
	Logger *slog.Logger

	beat atomic.Int64 // Unix nanoseconds of the last pass
}

// Alive returns when the Enforcer last looked at the registry: a watchdog's sign of progress.
func (e *Enforcer) Alive() time.Time { return time.Unix(0, e.beat.Load()) }

// Run cuts the sessions of every serial revoked after the first From, as they are revoked,
// until ctx is done; it then returns nil.
func (e *Enforcer) Run(ctx context.Context) error {
	if e.Registry == nil || e.Broker == nil {
		return errors.New("signer: Enforcer needs a Registry and a Broker")
	}
	every, clk, log := e.Interval, e.Clock, e.Logger
	if every <= 0 {
		every = DefaultEnforceInterval
	}
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cursor := e.From
	for {
		var revs []registry.Revocation
		revs, cursor = e.Registry.RevocationsFrom(cursor)
		e.beat.Store(time.Now().UnixNano())
		for _, r := range revs {
			if n := e.Broker.DisconnectSerial(r.Serial); n > 0 {
				log.Info("signer: cut sessions of a revoked certificate", "device", r.Device, "serial", registry.SerialHex(r.Serial), "sessions", n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-clk.After(every):
		}
	}
}
