// Package wire defines every message a device publishes, as typed schemas. Nothing the agent
// publishes is free-form (P1): each field here is listed with its reason in docs/protocol.md,
// and none may carry personal data, network names or addresses.
//
// The decoders are strict (one JSON value, no unknown fields, size-capped) because fleet tools
// read these messages from a shared broker.
package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/camagent/camagent/internal/strictjson"
)

// Version is the schema version every message carries in its "v" field.
const Version = 1

// MaxMessageSize caps a device message accepted by fleet tools.
const MaxMessageSize = 8 << 10

// ErrMalformed reports a message that does not decode strictly or fails validation.
var ErrMalformed = errors.New("wire: malformed message")

// Error codes a device puts in Reply.Error. They are fixed strings, never free text.
const (
	ErrCodeUnknownType = "unknown_type"
	ErrCodeBadArgs     = "bad_args"
	ErrCodeInternal    = "internal"
)

var errCodes = map[string]bool{"": true, ErrCodeUnknownType: true, ErrCodeBadArgs: true, ErrCodeInternal: true}

// Reply answers a verified command on dev/<id>/up/reply.
type Reply struct {
	V int `json:"v"`
	// Seq is the sequence of the command answered.
	Seq uint64 `json:"seq"`
	// Type is the command's type.
	Type string `json:"type"`
	OK   bool   `json:"ok"`
	// Error is one of the ErrCode constants when OK is false.
	Error string `json:"error,omitempty"`
	// Status is set in answer to "ping".
	Status *Status `json:"status,omitempty"`
}

// Status is the device's health, with no personal fields.
type Status struct {
	// Firmware is the agent's version string.
	Firmware string `json:"fw"`
	// UptimeS is seconds since the agent started.
	UptimeS int64 `json:"uptime_s"`
	// CertSerial is the serial of the client certificate in use, in hex.
	CertSerial string `json:"cert_serial"`
	// CertNotAfter is the certificate's expiry, Unix seconds.
	CertNotAfter int64 `json:"cert_not_after"`
	// KeySet is the version of the trusted key set.
	KeySet uint64 `json:"keyset"`
	// CmdsOK and CmdsRejected count commands since start.
	CmdsOK       uint64 `json:"cmds_ok"`
	CmdsRejected uint64 `json:"cmds_rejected"`
}

// DeviceState is retained on dev/<id>/up/state: what an operator needs to see the fleet's
// shape without asking each device.
type DeviceState struct {
	V            int    `json:"v"`
	Firmware     string `json:"fw"`
	CertSerial   string `json:"cert_serial"`
	CertNotAfter int64  `json:"cert_not_after"`
	KeySet       uint64 `json:"keyset"`
	// Epoch is the device's credential and grant epoch.
	Epoch uint64 `json:"epoch"`
	// Rotation is one of the Rotation constants.
	Rotation string `json:"rotation"`
	// LastError is the error code of the last failed rotation step, or "".
	LastError string `json:"last_error,omitempty"`
	// Updated is when the device published this, Unix seconds by its clock.
	Updated int64 `json:"updated"`
}

var (
	firmwareRe = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,64}$`)
	serialRe   = regexp.MustCompile(`^[0-9a-f]{1,40}$`)
	typeRe     = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,31}$`)
)

// Validate checks that every field has the shape the schema allows, so a field can never
// smuggle free text.
func (r *Reply) Validate() error {
	if r.V != Version {
		return fmt.Errorf("%w: version %d", ErrMalformed, r.V)
	}
	if !typeRe.MatchString(r.Type) {
		return fmt.Errorf("%w: type %q", ErrMalformed, r.Type)
	}
	if !errCodes[r.Error] || (r.OK && r.Error != "") {
		return fmt.Errorf("%w: error code %q", ErrMalformed, r.Error)
	}
	if r.Status != nil {
		return r.Status.validate()
	}
	return nil
}

func (s *Status) validate() error {
	if !firmwareRe.MatchString(s.Firmware) {
		return fmt.Errorf("%w: firmware %q", ErrMalformed, s.Firmware)
	}
	if s.CertSerial != "" && !serialRe.MatchString(s.CertSerial) {
		return fmt.Errorf("%w: cert serial %q", ErrMalformed, s.CertSerial)
	}
	return nil
}

// Validate checks the state's fields.
func (s *DeviceState) Validate() error {
	if s.V != Version {
		return fmt.Errorf("%w: version %d", ErrMalformed, s.V)
	}
	if !rotStatuses[s.Rotation] || !rotErrCodes[s.LastError] {
		return fmt.Errorf("%w: rotation %q / last_error %q", ErrMalformed, s.Rotation, s.LastError)
	}
	if !firmwareRe.MatchString(s.Firmware) {
		return fmt.Errorf("%w: firmware %q", ErrMalformed, s.Firmware)
	}
	if s.CertSerial != "" && !serialRe.MatchString(s.CertSerial) {
		return fmt.Errorf("%w: cert serial %q", ErrMalformed, s.CertSerial)
	}
	return nil
}

type validator interface{ Validate() error }

// Encode validates m and marshals it. Devices encode every outbound message through it.
func Encode(m validator) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// Decode strictly decodes b into m and validates it.
func Decode(b []byte, m validator) error {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, cap %d", ErrMalformed, len(b), MaxMessageSize)
	}
	if err := strictjson.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return m.Validate()
}
