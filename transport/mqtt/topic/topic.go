// Package topic builds and parses the MQTT topic names of the camagent protocol
// (docs/protocol.md), so that no other package spells a topic by hand.
//
// Device topics live under dev/<id>/{up,down}/<leaf>, fleet-wide commands under
// fleet/down/<shard>/<leaf>, and the bootstrap identity's topics under boot/<id>/{up,down}/<leaf>.
// "up" is device → cloud, "down" is cloud → device.
//
// The fleet-wide topics are spread over FleetShards shards, each device reading its own
// (FleetShard): operators publish every fleet-wide message on every shard. One filter that
// every device subscribes to makes a broker's per-filter work O(fleet size) — Mosquitto
// walks the list of a filter's subscribers whenever one of them takes over its persistent
// session, so a fleet-wide rotation on one Mosquitto was O(N²) — and the shards divide it by
// FleetShards (docs/scale-out.md).
//
// The builders do not validate their argument: they must only be given device ids that have
// already been validated (certs.ValidDeviceID, or the identity of a verified certificate).
// The parsers are strict and are what must be used on topic names that arrive from a broker:
// they accept only the topics listed in the protocol, with a well-formed device id, and
// never panic. This package never touches the network.
package topic

import (
	"crypto/sha256"
	"slices"
	"strings"

	"github.com/camagent/camagent/certs"
)

// Directions: the third segment of a device topic.
const (
	// Up is device → cloud.
	Up = "up"
	// Down is cloud → device.
	Down = "down"
)

// Leaves: the last segment of a topic.
const (
	LeafCmd       = "cmd"       // signed command envelope (down)
	LeafDesired   = "desired"   // desired state (down)
	LeafReply     = "reply"     // command reply (up)
	LeafState     = "state"     // device state, retained (up)
	LeafCSR       = "csr"       // certificate signing request (up)
	LeafCert      = "cert"      // issued certificate (down)
	LeafSignal    = "signal"    // WebRTC signaling (up and down)
	LeafTelemetry = "telemetry" // telemetry (up)
	LeafClaim     = "claim"     // the owner's claim token from onboarding, once (up)
)

// FleetShards is how many shards the fleet-wide topics are spread over. Devices and operators
// must agree on it: it is part of the protocol (docs/protocol.md).
const FleetShards = 64

// FleetShard returns the shard whose fleet-wide topics device id reads: two lower-case hex
// digits, "00" to "3f", from the first byte of the id's SHA-256.
func FleetShard(id string) string {
	h := sha256.Sum256([]byte(id))
	return shardName(h[0] % FleetShards)
}

func shardName(i byte) string {
	const hex = "0123456789abcdef"
	return string([]byte{hex[i>>4], hex[i&15]})
}

// Shards returns every shard's name, in order: the shards an operator publishes a fleet-wide
// message on.
func Shards() []string {
	s := make([]string, FleetShards)
	for i := range s {
		s[i] = shardName(byte(i))
	}
	return s
}

func validShard(s string) bool {
	if len(s) != 2 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return (hexVal(s[0])<<4 | hexVal(s[1])) < FleetShards
}

func hexVal(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

// FleetCmd is fleet/down/<shard>/cmd: signed commands whose target is "*", published on
// every shard.
func FleetCmd(shard string) string { return fleetDown + shard + "/" + LeafCmd }

// FleetDesired is fleet/down/<shard>/desired: the fleet-wide desired state, retained on every
// shard.
func FleetDesired(shard string) string { return fleetDown + shard + "/" + LeafDesired }

// FleetDownFilter is fleet/down/<shard>/#, the subscription filter of the devices of one
// shard: every fleet-wide topic they read.
func FleetDownFilter(shard string) string { return fleetDown + shard + "/#" }

// FleetDesiredFilter is fleet/down/+/desired: the fleet-wide desired state of every shard, as
// operators read it.
const FleetDesiredFilter = "fleet/down/+/" + LeafDesired

// FleetACLFilter is fleet/down/#: every fleet-wide topic, of every shard. Devices may read it
// (only their own shard is any use to them, and every shard carries the same messages);
// only operators may publish on it.
const FleetACLFilter = "fleet/down/#"

// FleetKeySet holds, retained, the fleet's key set in force as its root key signed it
// (certs.SignKeySet). Operators publish it when a breach puts a new set in force; viewer relays
// read it to check grants with the keys that sign from then on. Devices never see it: they learn
// a new set from the breach notice that carries it.
const FleetKeySet = "fleet/keyset"

// Signer presence: each signer instance keeps a retained wire.SignerPresence on
// SignersPrefix + <instance>, where <instance> is its client id's session suffix. Operators
// read it; devices never see it.
const (
	SignersPrefix = "fleet/signers/"
	SignersFilter = SignersPrefix + "+"
)

const (
	devPrefix  = "dev/"
	fleetDown  = "fleet/down/"
	bootPrefix = "boot/"
)

func dev(id, dir, leaf string) string { return devPrefix + id + "/" + dir + "/" + leaf }

// DeviceCmd is dev/<id>/down/cmd: signed commands for one device.
func DeviceCmd(id string) string { return dev(id, Down, LeafCmd) }

// DeviceDesired is dev/<id>/down/desired: the desired state of one device.
func DeviceDesired(id string) string { return dev(id, Down, LeafDesired) }

// Reply is dev/<id>/up/reply: the device's replies to commands.
func Reply(id string) string { return dev(id, Up, LeafReply) }

// State is dev/<id>/up/state: the device's retained state.
func State(id string) string { return dev(id, Up, LeafState) }

// CSR is dev/<id>/up/csr: the device's certificate signing requests.
func CSR(id string) string { return dev(id, Up, LeafCSR) }

// Cert is dev/<id>/down/cert: certificates issued to the device.
func Cert(id string) string { return dev(id, Down, LeafCert) }

// Signal is dev/<id>/down/signal: WebRTC signaling from viewers to the device.
func Signal(id string) string { return dev(id, Down, LeafSignal) }

// SignalUp is dev/<id>/up/signal: WebRTC signaling from the device to viewers.
func SignalUp(id string) string { return dev(id, Up, LeafSignal) }

// Telemetry is dev/<id>/up/telemetry: the device's telemetry.
func Telemetry(id string) string { return dev(id, Up, LeafTelemetry) }

// Claim is where a device forwards its owner's opaque claim token, once after onboarding.
func Claim(id string) string { return dev(id, Up, LeafClaim) }

// DeviceDownFilter is dev/<id>/down/#, the subscription filter matching every topic addressed
// to one device.
func DeviceDownFilter(id string) string { return devPrefix + id + "/" + Down + "/#" }

// BootCSR is boot/<id>/up/csr: certificate requests sent with the bootstrap identity.
func BootCSR(id string) string { return bootPrefix + id + "/" + Up + "/" + LeafCSR }

// BootCert is boot/<id>/down/cert: certificates issued in answer to a BootCSR.
func BootCert(id string) string { return bootPrefix + id + "/" + Down + "/" + LeafCert }

// BootDownFilter is boot/<id>/down/#, the bootstrap identity's subscription filter.
func BootDownFilter(id string) string { return bootPrefix + id + "/" + Down + "/#" }

// upLeaves are the leaves of dev/<id>/up/ topics, in the order the ACL lists them.
var upLeaves = []string{LeafReply, LeafState, LeafCSR, LeafSignal, LeafTelemetry, LeafClaim}

// UpLeaves returns the leaves a device publishes to, dev/<id>/up/<leaf>: the ACL allows a
// device these and nothing else.
func UpLeaves() []string { return slices.Clone(upLeaves) }

// devLeaves lists, per direction, the leaves a dev/<id>/<dir>/ topic may have.
var devLeaves = map[string]map[string]bool{
	Down: {LeafCmd: true, LeafDesired: true, LeafCert: true, LeafSignal: true},
	Up:   setOf(upLeaves),
}

func setOf(leaves []string) map[string]bool {
	m := make(map[string]bool, len(leaves))
	for _, l := range leaves {
		m[l] = true
	}
	return m
}

// fleetLeaves lists the leaves of fleet/down/<shard>/ topics.
var fleetLeaves = map[string]bool{LeafCmd: true, LeafDesired: true}

// bootLeaves lists, per direction, the leaves of boot/<id>/<dir>/ topics.
var bootLeaves = map[string]map[string]bool{
	Down: {LeafCert: true},
	Up:   {LeafCSR: true},
}

// Parse splits a device or fleet topic of the protocol into its parts. For
// dev/<id>/<dir>/<leaf> it returns the device id, the direction (Up or Down) and the leaf; for
// fleet/down/<shard>/<leaf> it returns an empty device id, Down and the leaf (ParseFleet also
// gives the shard). Anything else — another prefix, a malformed device id or shard, a
// wildcard, an extra or missing level, a leaf the protocol does not define for that direction
// — returns ok == false and empty strings.
func Parse(topic string) (deviceID, dir, leaf string, ok bool) {
	switch {
	case strings.HasPrefix(topic, devPrefix):
		return parseDevice(topic[len(devPrefix):], devLeaves)
	case strings.HasPrefix(topic, fleetDown):
		if _, l, ok := ParseFleet(topic); ok {
			return "", Down, l, true
		}
	}
	return "", "", "", false
}

// ParseFleet splits a fleet-wide topic fleet/down/<shard>/<leaf> into its shard and leaf.
// Anything else returns ok == false and empty strings.
func ParseFleet(topic string) (shard, leaf string, ok bool) {
	rest, found := strings.CutPrefix(topic, fleetDown)
	if !found {
		return "", "", false
	}
	s, l, found := strings.Cut(rest, "/")
	if !found || !validShard(s) || !fleetLeaves[l] {
		return "", "", false
	}
	return s, l, true
}

// ParseBoot splits a bootstrap topic boot/<id>/<dir>/<leaf> into the device id the bootstrap
// identity serves, the direction and the leaf. Anything else returns ok == false.
func ParseBoot(topic string) (deviceID, dir, leaf string, ok bool) {
	if !strings.HasPrefix(topic, bootPrefix) {
		return "", "", "", false
	}
	return parseDevice(topic[len(bootPrefix):], bootLeaves)
}

// parseDevice parses "<id>/<dir>/<leaf>" against the allowed leaves.
func parseDevice(rest string, leaves map[string]map[string]bool) (deviceID, dir, leaf string, ok bool) {
	id, rest, found := strings.Cut(rest, "/")
	if !found {
		return "", "", "", false
	}
	d, l, found := strings.Cut(rest, "/")
	if !found || !leaves[d][l] {
		return "", "", "", false
	}
	if certs.ValidDeviceID(id) != nil {
		return "", "", "", false
	}
	return id, d, l, true
}
