// Package status turns the fleet's retained MQTT state into a rollout report: each device's
// retained state (dev/<id>/up/state), the fleet-wide desired state (fleet/down/desired) and
// each device's desired state (dev/<id>/down/desired) go into a Collector, which says per
// device whether it has converged on the credential epoch the operators want, and counts.
//
// Which devices must converge comes from the fleet's registry when the caller has it
// (Collector.Enroll, with the registry's enrolled devices; Collector.Retire, with its retired
// ones): every enrolled device that is not retired is in the report, whether or not the broker
// holds anything of it. One the broker holds no state of is Behind with NoState set: it never
// published one since the broker's retained store began (enrolled and never connected, or a
// broker that lost its retained store and has not heard from it since). So a broker that
// forgot everything reports the whole fleet behind, never an empty fleet that has converged.
//
// A device the broker holds state of that the registry does not know (another fleet's, or one
// enrolled from another copy of the fleet directory since this one was made) is listed in
// Report.NotEnrolled and counted nowhere: it cannot make a rollout converge, and it does not
// hold one up, since `fleetctl retire` could not clear it (it takes enrolled ids only). A
// retired device is left out altogether (Report.Retired counts the retained state left out),
// so cameras gone for good never keep `status --wait` waiting. Without Enroll the report falls
// back to the devices the broker holds something of, which misses a device that never
// published its state.
//
// A report of no device never says it converged.
//
// Desired-state documents are believed only when signed by a command key of the fleet's key
// set (or of a newer set, signed by the fleet's root, that the document carries), the check a
// device makes. The package never touches the network and never writes anything.
package status

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// Device states in a report.
const (
	// Converged: the device's epoch is at least its desired epoch and no rotation is under way.
	Converged = "converged"
	// Rotating: a rotation is under way (pending or issued).
	Rotating = "rotating"
	// Failed: the last rotation attempt failed; the device retries by itself.
	Failed = "failed"
	// Behind: the device's epoch is below its desired epoch and it has not started rotating
	// (it may be offline), or the broker holds no state of it (Device.NoState).
	Behind = "behind"
)

// Where a report's list of devices comes from (Report.Source).
const (
	// SourceRegistry: the devices the fleet's registry enrolled and did not retire
	// (Collector.Enroll).
	SourceRegistry = "registry"
	// SourceBroker: the devices the broker holds a state or a desired state of, for want of a
	// registry.
	SourceBroker = "broker"
)

// Filters returns the topic filters whose messages a Collector takes.
func Filters() []string {
	return []string{"dev/+/up/" + topic.LeafState, topic.FleetDesiredFilter, "dev/+/down/" + topic.LeafDesired, topic.SignersFilter}
}

// Collector accumulates retained messages. It is safe for concurrent use.
type Collector struct {
	root ed25519.PublicKey
	ks   *certs.KeySet

	mu sync.Mutex
	// fleet is the fleet-wide desired state by shard (topic.FleetShard), fleetRaw as signed.
	fleet    map[string]*certs.Desired
	fleetRaw map[string][]byte
	// newestShard holds the newest of fleet (the highest version), newest is its state; "",
	// nil when fleet is empty. Kept by Add: every device's row reads it.
	newestShard string
	newest      *certs.Desired
	desired     map[string]*certs.Desired
	states      map[string]*wire.DeviceState
	retired     map[string]bool
	enrolled    map[string]bool // nil until Enroll
	signers     map[string]*wire.SignerPresence
	rejected    int
	changed     chan struct{}
	// newer is the newest key set, signed by root and newer than ks, that a verified
	// desired-state document carried (newerRaw as signed); nil if none.
	newer    *certs.KeySet
	newerRaw []byte
}

// NewCollector returns a Collector that believes desired-state documents signed by ks's
// command keys, or by a newer key set signed by root.
func NewCollector(root ed25519.PublicKey, ks *certs.KeySet) *Collector {
	return &Collector{root: root, ks: ks, fleet: map[string]*certs.Desired{}, fleetRaw: map[string][]byte{}, desired: map[string]*certs.Desired{}, states: map[string]*wire.DeviceState{}, retired: map[string]bool{}, signers: map[string]*wire.SignerPresence{}, changed: make(chan struct{})}
}

// Retired reports whether Retire was told about device.
func (c *Collector) Retired(device string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retired[device]
}

// Retire leaves devices out of every report: they left the fleet for good (`fleetctl
// retire`), and whatever retained state of theirs is still around is no rollout's business.
// Reports count them as Retired.
func (c *Collector) Retire(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notifyLocked()
	for _, id := range ids {
		c.retired[id] = true
	}
}

// Enroll tells the Collector the devices the fleet's registry has enrolled (retired ones may
// be among them: Retire still leaves those out). From the first call on, however many ids it
// gives (none: a registry that enrolled nothing), reports list exactly the enrolled devices
// that are not retired, with or without retained state, and put the other devices the broker
// holds state of in Report.NotEnrolled. Calls add up.
func (c *Collector) Enroll(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notifyLocked()
	if c.enrolled == nil {
		c.enrolled = make(map[string]bool, len(ids))
	}
	for _, id := range ids {
		c.enrolled[id] = true
	}
}

// Add takes one message; an empty payload clears what the topic said. Messages on other
// topics, malformed states and unverifiable documents are counted (Rejected) and ignored.
func (c *Collector) Add(t string, payload []byte) {
	id, dir, leaf, ok := topic.Parse(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notifyLocked()
	if instance, isSigner := strings.CutPrefix(t, topic.SignersPrefix); isSigner && instance != "" && !strings.Contains(instance, "/") {
		if len(payload) == 0 {
			delete(c.signers, instance)
			return
		}
		var p wire.SignerPresence
		if err := wire.Decode(payload, &p); err != nil {
			c.rejected++
			return
		}
		c.signers[instance] = &p
		return
	}
	switch {
	case ok && id != "" && dir == topic.Up && leaf == topic.LeafState:
		if len(payload) == 0 {
			delete(c.states, id)
			return
		}
		var s wire.DeviceState
		if err := wire.Decode(payload, &s); err != nil {
			c.rejected++
			return
		}
		c.states[id] = &s
	case ok && dir == topic.Down && leaf == topic.LeafDesired:
		fleetWide := id == ""
		shard, _, _ := topic.ParseFleet(t)
		if len(payload) == 0 {
			if fleetWide {
				delete(c.fleet, shard)
				delete(c.fleetRaw, shard)
				c.findNewestLocked()
			} else {
				delete(c.desired, id)
			}
			return
		}
		d, err := c.open(payload)
		if err != nil || (fleetWide && d.Target != certs.TargetFleet) || (!fleetWide && d.Target != id) {
			c.rejected++
			return
		}
		if fleetWide {
			c.fleet[shard], c.fleetRaw[shard] = d, bytes.Clone(payload)
			c.findNewestLocked()
		} else {
			c.desired[id] = d
		}
	default:
		c.rejected++
	}
}

// open verifies a desired-state document as a device would: with the key set it carries if
// that is signed by the root and newer, else with the fleet's. It notes the newest such set of
// a document that verifies (NewerKeySet). c.mu is held.
func (c *Collector) open(b []byte) (*certs.Desired, error) {
	v := c.ks.CommandVerifier()
	var carried *certs.KeySet
	var raw []byte
	if ksb, ok := certs.PeekDesiredKeySet(b); ok {
		if ks, err := certs.AcceptKeySet(c.root, ksb, c.ks.Version); err == nil {
			v, carried, raw = ks.CommandVerifier(), ks, ksb
		}
	}
	d, err := certs.OpenDesired(v, b)
	if err == nil && carried != nil && (c.newer == nil || carried.Version > c.newer.Version) {
		c.newer, c.newerRaw = carried, bytes.Clone(raw)
	}
	return d, err
}

// NewerKeySet returns the newest key set, signed by the root and newer than the one the
// Collector was made with, that a desired-state document it took carried (a breach --keyset
// published it), with its signed bytes; nil, nil if none did. Devices trust that set, so a
// fleet directory still on an older one signs with keys they may have dropped.
func (c *Collector) NewerKeySet() (*certs.KeySet, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.newer, bytes.Clone(c.newerRaw)
}

func (c *Collector) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Changed returns a channel closed at the next Add.
func (c *Collector) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Rejected counts the messages ignored so far.
func (c *Collector) Rejected() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rejected
}

// newestFleetLocked returns the shard holding the newest fleet-wide desired state (the highest
// version), and that state; "", nil when no shard holds one. c.mu is held.
func (c *Collector) newestFleetLocked() (string, *certs.Desired) { return c.newestShard, c.newest }

// findNewestLocked sets newestShard and newest from fleet. c.mu is held.
func (c *Collector) findNewestLocked() {
	c.newestShard, c.newest = "", nil
	for s, d := range c.fleet {
		if c.newest == nil || d.Version > c.newest.Version || (d.Version == c.newest.Version && (d.Epoch > c.newest.Epoch || (d.Epoch == c.newest.Epoch && s < c.newestShard))) {
			c.newestShard, c.newest = s, d
		}
	}
}

// FleetShardsBehind returns the newest fleet-wide desired state as signed, and the shards
// (topic.Shards) that do not hold it: a publication that stopped part-way (PartialError of
// fleetctl's operator) left their devices without it. Both are nil when no shard holds one,
// and behind is nil when every shard does.
func (c *Collector) FleetShardsBehind() (raw []byte, behind []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fleetShardsBehindLocked()
}

func (c *Collector) fleetShardsBehindLocked() (raw []byte, behind []string) {
	at, newest := c.newestFleetLocked()
	if newest == nil {
		return nil, nil
	}
	for _, s := range topic.Shards() {
		if !bytes.Equal(c.fleetRaw[s], c.fleetRaw[at]) {
			behind = append(behind, s)
		}
	}
	return bytes.Clone(c.fleetRaw[at]), behind
}

// DesiredEpoch returns the epoch wanted of device: the highest of the fleet-wide and the
// device's own desired state.
func (c *Collector) DesiredEpoch(device string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.desiredEpochLocked(device)
}

func (c *Collector) desiredEpochLocked(device string) uint64 {
	// The newest fleet-wide state, whichever shard has it: a device whose shard lacks it is
	// behind the operator's intent, not converged (Report.FleetShardsBehind says why).
	var e uint64
	if _, f := c.newestFleetLocked(); f != nil {
		e = f.Epoch
	}
	if d := c.desired[device]; d != nil {
		e = max(e, d.Epoch)
	}
	return e
}

// FleetDesired returns a copy of the newest fleet-wide desired state as verified (of every
// shard's, the highest version), or nil when none was published (or none verified).
func (c *Collector) FleetDesired() *certs.Desired {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, f := c.newestFleetLocked()
	if f == nil {
		return nil
	}
	d := *f
	d.KeySet = slices.Clone(d.KeySet)
	return &d
}

// DeviceEpoch returns the epoch device reports, and whether it reported any state.
func (c *Collector) DeviceEpoch(device string) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.states[device]
	if s == nil {
		return 0, false
	}
	return s.Epoch, true
}

// MaxEpoch returns the highest epoch anything says: the fleet-wide and every device's desired
// state, and every device's reported epoch. A fleet-wide rotation raises the fleet's desired
// epoch above it, so that every device rotates.
func (c *Collector) MaxEpoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var e uint64
	for _, d := range c.fleet {
		e = max(e, d.Epoch)
	}
	for _, d := range c.desired {
		e = max(e, d.Epoch)
	}
	for _, s := range c.states {
		e = max(e, s.Epoch)
	}
	return e
}

// MaxVersion returns the highest version of the desired-state documents taken, fleet-wide and
// per device: a document published next must be above it, or a device that read that one
// ignores it.
func (c *Collector) MaxVersion() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var v uint64
	for _, d := range c.fleet {
		v = max(v, d.Version)
	}
	for _, d := range c.desired {
		v = max(v, d.Version)
	}
	return v
}

// Report is the fleet's rollout status.
type Report struct {
	// FleetEpoch is the fleet-wide desired epoch (0 when none was published).
	FleetEpoch uint64 `json:"fleet_epoch"`
	// Incident is the incident id of the fleet-wide desired state, if any.
	Incident string `json:"incident,omitempty"`
	// FleetShardsBehind are the shards (topic.Shards) that do not hold the fleet-wide desired
	// state of FleetEpoch: its publication stopped part-way, and their devices, counted
	// Behind, cannot converge until it is published again (the same fleetctl breach again
	// does). Absent when every shard holds it.
	FleetShardsBehind []string `json:"fleet_shards_behind,omitempty"`
	// Source says where Devices come from: SourceRegistry or SourceBroker.
	Source string `json:"source"`
	// Total is the number of devices in Devices.
	Total int `json:"total"`
	// Counts are the devices by state.
	Counts Counts `json:"counts"`
	// NoState counts the devices of Devices the broker holds no state of (Device.NoState), all
	// of them counted Behind.
	NoState int `json:"no_state"`
	// Converged is set when Devices is not empty and every one of them has converged. A
	// report of no device is not converged.
	Converged bool `json:"converged"`
	// Devices are the devices that must converge, by id: with Source SourceRegistry, every
	// enrolled device that is not retired; with SourceBroker, those that published state or
	// were given a desired state, except retired ones.
	Devices []Device `json:"devices"`
	// NotEnrolled are the devices, by id, the broker holds a state or a desired state of that
	// the registry has neither enrolled nor retired (Source SourceRegistry only; absent when
	// none). They are in neither Total nor Counts and do not hold up convergence.
	NotEnrolled []Device `json:"not_enrolled,omitempty"`
	// Retired counts the retired devices (Collector.Retire) whose retained state was left out.
	Retired int `json:"retired,omitempty"`
	// Signers are the signer instances that said they serve or stopped (fleet/signers/+), by
	// name.
	Signers []Signer `json:"signers"`
}

// Signer is one signer instance's last word.
type Signer struct {
	Name string `json:"name"`
	// State is wire.SignerServing, wire.SignerStopped or wire.SignerLost.
	State string `json:"state"`
	// Since is when it started and Said when it last spoke, by its clock.
	Since time.Time `json:"since"`
	Said  time.Time `json:"said"`
	// Every is how many seconds apart a serving instance speaks.
	Every int64 `json:"every_s"`
}

// Quiet is how many of its intervals a serving signer may stay silent before SignerWarning
// counts it out: it crashed, or lost the broker.
const Quiet = 3

// Alive reports whether s said it serves within Quiet of its intervals before now.
func (s Signer) Alive(now time.Time) bool {
	return s.State == wire.SignerServing && now.Sub(s.Said) <= Quiet*time.Duration(s.Every)*time.Second
}

// SignerWarning returns what an operator must hear before counting on a rollout, or "" when a
// signer serves: that no signer ever said it serves on this broker, that every one stopped, or
// that none has been heard from lately. Without a signer, devices' certificate requests wait.
func (r Report) SignerWarning(now time.Time) string { return SignerWarning(r.Signers, now) }

// SignerWarning is Report.SignerWarning for signers (Collector.Signers).
func SignerWarning(signers []Signer, now time.Time) string {
	if len(signers) == 0 {
		return "no signer has said it serves on this broker: devices' certificate requests wait until one runs (fleetctl serve)"
	}
	var last Signer
	var lost []string
	for _, s := range signers {
		if s.Alive(now) {
			return ""
		}
		if s.State == wire.SignerLost {
			lost = append(lost, s.Name)
		}
		if s.Said.After(last.Said) {
			last = s
		}
	}
	if len(lost) > 0 {
		// A will says nothing of when: the broker published it when the connection ended.
		whose := "its"
		if len(lost) > 1 {
			whose = "their"
		}
		return fmt.Sprintf("no signer serves: the broker says %s lost %s connection without stopping (crashed, killed, or cut off from the broker): devices' certificate requests wait until one runs again (fleetctl serve)",
			strings.Join(lost, ", "), whose)
	}
	if last.State == wire.SignerStopped {
		return fmt.Sprintf("every signer has stopped (the last, %s, at %s): devices' certificate requests wait until one runs (fleetctl serve)", last.Name, last.Said.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("no signer has been heard from since %s (%s said it serves, every %d s): it may have crashed or lost the broker; devices' certificate requests wait until one runs (fleetctl serve)",
		last.Said.UTC().Format(time.RFC3339), last.Name, last.Every)
}

// Counts are the devices by state.
type Counts struct {
	Converged int `json:"converged"`
	Rotating  int `json:"rotating"`
	Failed    int `json:"failed"`
	Behind    int `json:"behind"`
}

// Device is one device's row.
type Device struct {
	ID string `json:"device"`
	// State is Converged, Rotating, Failed or Behind.
	State        string `json:"state"`
	Epoch        uint64 `json:"epoch"`
	DesiredEpoch uint64 `json:"desired_epoch"`
	CertSerial   string `json:"cert_serial,omitempty"`
	// CertNotAfter is the certificate's expiry.
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`
	// Rotation is the device's rotation status (wire.Rotation*); empty when it never reported.
	Rotation  string `json:"rotation,omitempty"`
	LastError string `json:"last_error,omitempty"`
	Firmware  string `json:"fw,omitempty"`
	KeySet    uint64 `json:"keyset,omitempty"`
	// Updated is when the device last published its state, by its clock.
	Updated time.Time `json:"updated,omitzero"`
	// NoState is set when the broker holds no state of the device: it has not published one
	// since the broker's retained store began. Its State is Behind.
	NoState bool `json:"no_state,omitempty"`
}

// Signers returns the signer instances' last word, by name: what Report.Signers holds, without
// the devices.
func (c *Collector) Signers() []Signer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signersLocked()
}

func (c *Collector) signersLocked() []Signer {
	out := make([]Signer, 0, len(c.signers))
	for _, p := range c.signers {
		out = append(out, Signer{Name: p.Name, State: p.State, Since: time.Unix(p.Since, 0).UTC(), Said: time.Unix(p.At, 0).UTC(), Every: p.Every})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Devices returns, for each of ids, the device as Report would list it in Report.Devices,
// and false for one it would not list (nothing retained of it, retired, or not enrolled).
// Without building the whole report: a simulation checks thousands of devices ten times a
// second.
func (c *Collector) Devices(ids []string) ([]Device, []bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, listed := make([]Device, len(ids)), make([]bool, len(ids))
	for i, id := range ids {
		known := c.states[id] != nil || c.desired[id] != nil || c.enrolled[id]
		if !known || c.retired[id] || (c.enrolled != nil && !c.enrolled[id]) {
			continue
		}
		out[i], listed[i] = c.deviceLocked(id), true
	}
	return out, listed
}

// Report returns the status as of the messages added so far.
func (c *Collector) Report() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := Report{Source: SourceBroker}
	if _, f := c.newestFleetLocked(); f != nil {
		r.FleetEpoch, r.Incident = f.Epoch, f.Incident
		_, r.FleetShardsBehind = c.fleetShardsBehindLocked()
	}
	ids := make(map[string]bool, len(c.states)+len(c.enrolled))
	for id := range c.states {
		ids[id] = true
	}
	for id := range c.desired {
		ids[id] = true
	}
	if c.enrolled != nil {
		r.Source = SourceRegistry
		for id := range c.enrolled {
			ids[id] = true
		}
	}
	for id := range ids {
		retained := c.states[id] != nil || c.desired[id] != nil
		if c.retired[id] {
			if retained {
				r.Retired++
			}
			continue
		}
		d := c.deviceLocked(id)
		if c.enrolled != nil && !c.enrolled[id] {
			r.NotEnrolled = append(r.NotEnrolled, d)
			continue
		}
		switch d.State {
		case Converged:
			r.Counts.Converged++
		case Rotating:
			r.Counts.Rotating++
		case Failed:
			r.Counts.Failed++
		default:
			r.Counts.Behind++
		}
		if d.NoState {
			r.NoState++
		}
		r.Devices = append(r.Devices, d)
	}
	sort.Slice(r.Devices, func(i, j int) bool { return r.Devices[i].ID < r.Devices[j].ID })
	sort.Slice(r.NotEnrolled, func(i, j int) bool { return r.NotEnrolled[i].ID < r.NotEnrolled[j].ID })
	r.Signers = c.signersLocked()
	r.Total = len(r.Devices)
	r.Converged = r.Total > 0 && r.Counts.Converged == r.Total
	if r.Devices == nil {
		r.Devices = []Device{}
	}
	return r
}

// deviceLocked returns device id's row.
func (c *Collector) deviceLocked(id string) Device {
	d := Device{ID: id, DesiredEpoch: c.desiredEpochLocked(id), State: Behind}
	s := c.states[id]
	if s == nil {
		d.NoState = true
		return d
	}
	d.Epoch, d.CertSerial, d.Rotation, d.LastError, d.Firmware, d.KeySet = s.Epoch, s.CertSerial, s.Rotation, s.LastError, s.Firmware, s.KeySet
	if s.CertNotAfter > 0 {
		d.CertNotAfter = time.Unix(s.CertNotAfter, 0).UTC()
	}
	if s.Updated > 0 {
		d.Updated = time.Unix(s.Updated, 0).UTC()
	}
	switch {
	case s.Rotation == wire.RotationFailed:
		d.State = Failed
	case s.Rotation == wire.RotationPending || s.Rotation == wire.RotationIssued:
		d.State = Rotating
	case s.Epoch >= d.DesiredEpoch:
		d.State = Converged
	}
	return d
}

// NoStateIDs returns the ids of the devices of Devices the broker holds no state of, by id.
func (r Report) NoStateIDs() []string {
	var ids []string
	for _, d := range r.Devices {
		if d.NoState {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteTable writes a summary line and one row per device; then, if any, the devices the
// registry does not know, in a table of their own.
func (r Report) WriteTable(w io.Writer) error {
	fleet := fmt.Sprintf("fleet epoch %d", r.FleetEpoch)
	if r.Incident != "" {
		fleet += " (incident " + r.Incident + ")"
	}
	noState := ""
	if r.NoState > 0 {
		noState = fmt.Sprintf(" (%d with no state on the broker)", r.NoState)
	}
	retired := ""
	if r.Retired > 0 {
		retired = fmt.Sprintf(" (%d retired devices left out)", r.Retired)
	}
	if r.Total == 0 {
		// Plainly: "0 devices: 0 converged" reads like a rollout that has nothing left to do.
		what := "no devices enrolled"
		if r.Source == SourceBroker {
			what = "no devices enrolled (no registry lists any, and the broker holds no device state)"
		}
		if _, err := fmt.Fprintf(w, "%s: %s%s\n\n", fleet, what, retired); err != nil {
			return err
		}
	} else if _, err := fmt.Fprintf(w, "%s: %d devices: %d converged, %d rotating, %d failed, %d behind%s%s\n\n",
		fleet, r.Total, r.Counts.Converged, r.Counts.Rotating, r.Counts.Failed, r.Counts.Behind, noState, retired); err != nil {
		return err
	}
	if len(r.Signers) > 0 {
		var said []string
		for _, sg := range r.Signers {
			if sg.State == wire.SignerLost {
				said = append(said, fmt.Sprintf("%s lost (its connection ended without it stopping; started %s)", sg.Name, sg.Since.UTC().Format(time.RFC3339)))
				continue
			}
			said = append(said, fmt.Sprintf("%s %s (said %s)", sg.Name, sg.State, sg.Said.UTC().Format(time.RFC3339)))
		}
		if _, err := fmt.Fprintf(w, "signers: %s\n\n", strings.Join(said, ", ")); err != nil {
			return err
		}
	}
	if len(r.Devices) > 0 {
		if err := writeDevices(w, r.Devices); err != nil {
			return err
		}
	}
	if len(r.NotEnrolled) > 0 {
		if _, err := fmt.Fprintf(w, "\n%d devices on the broker that the registry has not enrolled, counted nowhere (another fleet's, or enrolled from another copy of the fleet directory):\n", len(r.NotEnrolled)); err != nil {
			return err
		}
		return writeDevices(w, r.NotEnrolled)
	}
	return nil
}

// writeDevices writes a table of devices.
func writeDevices(w io.Writer, devices []Device) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// LAST STATE is when the device last published its state (every connection and renewal):
	// a straggler silent for months is a camera to retire, not one to wait for. "none": the
	// broker holds no state of it.
	fmt.Fprintln(tw, "DEVICE\tSTATE\tEPOCH\tDESIRED\tCERT SERIAL\tNOT AFTER\tROTATION\tLAST ERROR\tLAST STATE")
	for _, d := range devices {
		last := timeOrDash(d.Updated)
		if d.NoState {
			last = "none"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.State, d.Epoch, d.DesiredEpoch,
			orDash(d.CertSerial), timeOrDash(d.CertNotAfter), orDash(d.Rotation), orDash(d.LastError), last)
	}
	return tw.Flush()
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
