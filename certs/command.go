package certs

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/camagent/camagent/internal/strictjson"

	"github.com/camagent/camagent/internal/shape"
)

// Command envelope limits and clock tolerance. They are part of the protocol
// (docs/protocol.md, "Signed commands").
const (
	// MaxEnvelopeSize caps a command envelope; larger ones are refused before parsing.
	MaxEnvelopeSize = 16 << 10
	// MaxCommandLifetime caps ExpiresAt-IssuedAt.
	MaxCommandLifetime = 24 * time.Hour
	// ClockSkew is how far a device's clock may differ from the operator's: a command is accepted
	// from IssuedAt-ClockSkew until ExpiresAt+ClockSkew.
	ClockSkew = 2 * time.Minute
	// TargetFleet addresses every device.
	TargetFleet = "*"
)

var commandTypeRe = shape.New(`^[a-z][a-z0-9_.-]*$`, 1, 32)

// Command is the signed body of a fleet command.
type Command struct {
	// Type names the command ("ping", "rotate", ...).
	Type string `json:"type"`
	// Target is a device id, or TargetFleet.
	Target string `json:"target"`
	// Seq must be above the device's persisted high-water mark; fleetctl uses
	// max(unix nanoseconds, last+1).
	Seq uint64 `json:"seq"`
	// IssuedAt and ExpiresAt are Unix seconds.
	IssuedAt  int64 `json:"iat"`
	ExpiresAt int64 `json:"exp"`
	// Args holds the type's own arguments, decoded strictly by the handler of that type.
	Args json.RawMessage `json:"args,omitempty"`
}

func (c *Command) validate() error {
	if !commandTypeRe.MatchString(c.Type) {
		return fmt.Errorf("%w: command type %q", ErrMalformed, c.Type)
	}
	if c.Target != TargetFleet {
		if err := ValidDeviceID(c.Target); err != nil {
			return fmt.Errorf("%w: command target: %v", ErrMalformed, err)
		}
	}
	if c.Seq == 0 {
		return fmt.Errorf("%w: command seq 0", ErrMalformed)
	}
	if c.ExpiresAt <= c.IssuedAt {
		return fmt.Errorf("%w: command expires (%d) before it is issued (%d)", ErrMalformed, c.ExpiresAt, c.IssuedAt)
	}
	if !lifetimeWithin(c.IssuedAt, c.ExpiresAt, MaxCommandLifetime) {
		return fmt.Errorf("%w: command lifetime %ds over %s", ErrMalformed, uint64(c.ExpiresAt-c.IssuedAt), MaxCommandLifetime)
	}
	return nil
}

// lifetimeWithin reports whether exp (Unix seconds) is after iat by at most max. It compares
// seconds, never nanoseconds: a difference of centuries, or one that overflows int64, must not
// wrap into a small or negative time.Duration that passes the cap.
func lifetimeWithin(iat, exp int64, max time.Duration) bool {
	d := exp - iat // exp > iat, so a negative d is a difference that wrapped
	return exp > iat && d > 0 && d <= int64(max/time.Second)
}

// SignCommand validates c and signs it with k.
func SignCommand(k *SigningKey, c Command) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal command: %w", err)
	}
	return seal(k, domainCommand, body)
}

// OpenCommand checks an envelope's size, form and signature against v and returns the
// command with the id of the key that signed it. It does not check target, time or sequence:
// CheckCommand does.
func OpenCommand(v *Verifier, b []byte) (*Command, string, error) {
	body, kid, err := open(b, MaxEnvelopeSize, domainCommand, v.lookup)
	if err != nil {
		return nil, kid, fmt.Errorf("certs: command: %w", err)
	}
	var c Command
	if err := strictjson.Unmarshal(body, &c); err != nil {
		return nil, kid, fmt.Errorf("certs: command body: %w: %v", ErrMalformed, err)
	}
	if err := c.validate(); err != nil {
		return nil, kid, fmt.Errorf("certs: command: %w", err)
	}
	return &c, kid, nil
}

// CheckCommand checks an opened command against the device it arrived at: target, validity
// window (with ClockSkew) and sequence above hwm.
func CheckCommand(c *Command, deviceID string, now time.Time, hwm uint64) error {
	if c.Target != TargetFleet && c.Target != deviceID {
		return fmt.Errorf("%w: for %q, this is %q", ErrWrongTarget, c.Target, deviceID)
	}
	if now.Add(ClockSkew).Before(time.Unix(c.IssuedAt, 0)) {
		return fmt.Errorf("%w: command issued at %s, device clock %s", ErrNotYetValid, time.Unix(c.IssuedAt, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Add(-ClockSkew).After(time.Unix(c.ExpiresAt, 0)) {
		return fmt.Errorf("%w: command expired at %s", ErrExpired, time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	if c.Seq <= hwm {
		return fmt.Errorf("%w: seq %d, high-water mark %d", ErrReplay, c.Seq, hwm)
	}
	return nil
}
