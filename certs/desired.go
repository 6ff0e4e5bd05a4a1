package certs

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/camagent/camagent/internal/strictjson"

	"github.com/camagent/camagent/internal/shape"
)

// MaxDesiredSize caps a signed desired-state document; it may carry a key set.
const MaxDesiredSize = 32 << 10

var incidentRe = shape.New(`^[A-Za-z0-9._-]*$`, 1, 64)

// Desired is the state operators want a device (or the whole fleet) to reach. It is published
// signed and retained, so a device that was offline converges when it returns (R2). Documents
// are idempotent: a device acts on the highest epoch it has seen, so duplicates, late and
// reordered copies change nothing.
type Desired struct {
	// Target is a device id, or TargetFleet for the fleet-wide notice.
	Target string `json:"target"`
	// Version orders documents for the same target; a device ignores one not above the last it
	// accepted for that target. fleetctl uses Unix nanoseconds.
	Version uint64 `json:"version"`
	// Epoch is the credential epoch the target must reach: a device whose epoch is below it
	// rotates its key, certificate and token and raises its grant epoch to it.
	Epoch uint64 `json:"epoch"`
	// Incident names the breach that raised the epoch, for the operators' records.
	Incident string `json:"incident,omitempty"`
	// KeySet, if set, is a new root-signed key set (a breach may reach the online keys).
	KeySet json.RawMessage `json:"keyset,omitempty"`
	// IssuedAt is Unix seconds.
	IssuedAt int64 `json:"iat"`
}

func (d *Desired) validate() error {
	if d.Target != TargetFleet {
		if err := ValidDeviceID(d.Target); err != nil {
			return fmt.Errorf("%w: desired target: %v", ErrMalformed, err)
		}
	}
	if d.Version == 0 {
		return fmt.Errorf("%w: desired version 0", ErrMalformed)
	}
	if d.Incident != "" && !incidentRe.MatchString(d.Incident) {
		return fmt.Errorf("%w: incident id %q", ErrMalformed, d.Incident)
	}
	return nil
}

// SignDesired signs a desired-state document with a command key.
func SignDesired(k *SigningKey, d Desired) ([]byte, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal desired: %w", err)
	}
	return seal(k, domainState, body)
}

// OpenDesired verifies a signed desired-state document against the trusted command keys.
func OpenDesired(v *Verifier, b []byte) (*Desired, error) {
	body, _, err := open(b, MaxDesiredSize, domainState, v.lookup)
	if err != nil {
		return nil, fmt.Errorf("certs: desired: %w", err)
	}
	var d Desired
	if err := strictjson.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("certs: desired body: %w: %v", ErrMalformed, err)
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// PeekDesiredKeySet returns the key set a signed desired-state document carries, without
// checking the document's own signature. That is safe only because a key set is itself signed
// by the offline root and must be checked with AcceptKeySet before use; it lets a device learn a
// new command key from the same breach notice that the new key signed.
func PeekDesiredKeySet(b []byte) (json.RawMessage, bool) {
	if len(b) > MaxDesiredSize {
		return nil, false
	}
	var s signed
	if strictjson.Unmarshal(b, &s) != nil {
		return nil, false
	}
	body, err := base64.RawURLEncoding.DecodeString(s.Body)
	if err != nil {
		return nil, false
	}
	var d Desired
	if strictjson.Unmarshal(body, &d) != nil || len(d.KeySet) == 0 {
		return nil, false
	}
	return d.KeySet, true
}
