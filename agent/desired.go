package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// loadKeySet sets the trusted command and grant keys and the broker floor: the newest key set
// accepted after enrollment, else the bundle's.
func (a *Agent) loadKeySet() error {
	ks, err := heldKeySet(a.id, a.st.KeySet)
	if err != nil {
		// The stored set does not open with the fleet root: damaged inside a state file that
		// still parses. Refusing to start would keep the camera restarting for good; the
		// floor's copy is taken if it opens, else the enrollment's, and the retained desired
		// state brings the set in force again at the first connect.
		a.log.Error("the stored key set does not open with the fleet root; taking the floor's, or the enrollment's", "err", err)
		st := a.st
		st.KeySet = ""
		a.recoverFloor(&st)
		if ks, err = heldKeySet(a.id, st.KeySet); err != nil {
			return err
		}
		if err := a.store.Save(st); err != nil {
			a.log.Error("could not save the state without the damaged key set; the next start does this again", "err", err)
		}
		a.st = st
	}
	a.verifier, a.grants, a.keySet = ks.CommandVerifier(), ks.GrantVerifier(), ks.Version
	a.brokers.Set(ks)
	return nil
}

// heldKeySet returns the key set a device holds: stored (state.State.KeySet, the newest it
// accepted since enrollment; "" for none) if the root signed it and it is newer than the
// bundle's, else the bundle's.
func heldKeySet(id *identity, stored string) (*certs.KeySet, error) {
	ks := id.bundle.KeySet
	if stored != "" {
		got, err := certs.OpenKeySet(id.bundle.Root, []byte(stored))
		if err != nil {
			return nil, fmt.Errorf("agent: stored key set: %w", err)
		}
		if got.Version > ks.Version {
			ks = got
		}
	}
	return ks, nil
}

// handleDesired applies a signed, retained desired-state document. A key set it carries is
// accepted first if the root signed it and it is newer; then the document is verified with the
// (possibly new) command keys. Documents not above the last version accepted for their slot are
// ignored, so duplicates, late and reordered copies change nothing (R2).
func (a *Agent) handleDesired(_ context.Context, t string, payload []byte) {
	if len(payload) == 0 {
		return // a cleared retained message
	}
	a.mu.Lock()
	v, last := a.verifier, a.applied[t]
	a.mu.Unlock()
	if last.verifier == v && bytes.Equal(last.payload, payload) {
		return // applied already under the same keys: a redelivery, which would change nothing
	}
	if ksb, ok := certs.PeekDesiredKeySet(payload); ok {
		a.acceptKeySet(ksb)
		a.mu.Lock()
		v = a.verifier
		a.mu.Unlock()
	}
	d, err := certs.OpenDesired(v, payload)
	if err != nil {
		a.log.Warn("desired state refused", "topic", t, "reason", err)
		return
	}
	_, leaf, fleetWide := topic.ParseFleet(t)
	fleetWide = fleetWide && leaf == topic.LeafDesired
	if (fleetWide && d.Target != certs.TargetFleet) || (!fleetWide && d.Target != a.DeviceID()) {
		a.log.Warn("desired state refused", "topic", t, "reason", fmt.Errorf("%w: target %q", certs.ErrWrongTarget, d.Target))
		return
	}
	changed := false
	err = a.save(func(st *state.State) {
		slot := &st.DeviceDesired
		if fleetWide {
			slot = &st.FleetDesired
		}
		if d.Version <= *slot {
			return
		}
		*slot = d.Version
		changed = d.Epoch > st.DesiredEpoch
		st.DesiredEpoch = max(st.DesiredEpoch, d.Epoch)
	})
	if err != nil {
		a.log.Error("could not persist desired state", "err", err)
		return
	}
	if changed {
		a.keepFloor(a.state())
	}
	a.mu.Lock()
	if a.applied == nil {
		a.applied = make(map[string]appliedDesired)
	}
	a.applied[t] = appliedDesired{payload: bytes.Clone(payload), verifier: v}
	a.mu.Unlock()
	if changed {
		a.log.Info("desired credential epoch raised", "epoch", d.Epoch, "incident", d.Incident, "fleet_wide", fleetWide)
		a.raiseGrantEpoch()
		a.poke()
	}
}

func (a *Agent) acceptKeySet(b []byte) {
	a.mu.Lock()
	cur := a.keySet
	a.mu.Unlock()
	ks, err := certs.AcceptKeySet(a.id.bundle.Root, b, cur)
	if errors.Is(err, certs.ErrNotNewer) {
		return
	}
	if err != nil {
		a.log.Warn("key set refused", "reason", err)
		return
	}
	if err := a.save(func(st *state.State) { st.KeySet = string(b) }); err != nil {
		a.log.Error("could not persist key set", "err", err)
		return
	}
	a.keepFloor(a.state())
	a.mu.Lock()
	a.verifier, a.grants, a.keySet = ks.CommandVerifier(), ks.GrantVerifier(), ks.Version
	a.mu.Unlock()
	retired := a.brokers.Set(ks)
	a.log.Info("key set accepted", "version", ks.Version, "command_keys", len(ks.CommandKeys), "grant_keys", len(ks.GrantKeys), "broker_not_before", ks.BrokerNotBefore)
	if retired {
		// Reconnect never blocks: this runs on the MQTT client's handler goroutine (R3).
		a.log.Warn("the broker certificate in use was retired by the new key set; reconnecting", "code", codeBrokerRetired, "key_set", ks.Version)
		if c := a.mqttc.Load(); c != nil {
			c.Reconnect()
		}
	}
}

// CheckGrant verifies a signed viewer or integration grant for this device and scope: signed
// by a trusted grant key, for this device, not from an epoch below GrantEpoch, not expired.
func (a *Agent) CheckGrant(b []byte, scope string) (*certs.Grant, error) {
	a.mu.Lock()
	v, epoch := a.grants, a.grantEpochLocked()
	a.mu.Unlock()
	g, err := certs.OpenGrant(v, b)
	if err != nil {
		return nil, err
	}
	if err := certs.CheckGrant(g, a.DeviceID(), epoch, scope, a.clk.Now()); err != nil {
		return nil, err
	}
	return g, nil
}
