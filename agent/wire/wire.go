// Package wire defines every message a device publishes, as typed schemas. Nothing the agent
// publishes is free-form (P1): each field here is listed with its reason in docs/protocol.md,
// and none may carry personal data, network names or addresses.
//
// The decoders are strict (one JSON value, no unknown fields, size-capped) because fleet tools
// read these messages from a shared broker.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/camagent/camagent/internal/strictjson"

	"github.com/camagent/camagent/internal/shape"
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
	// ErrCodeGrant: the command needs the owner's grant, and its grant is missing, not
	// signed by a trusted grant key, for another device, scope or an older epoch, or expired.
	ErrCodeGrant = "grant"
)

var errCodes = map[string]bool{"": true, ErrCodeUnknownType: true, ErrCodeBadArgs: true, ErrCodeInternal: true, ErrCodeGrant: true}

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
	// Privacy is whether privacy mode is on (camera stopped, viewers refused): the one thing
	// the cloud learns of it.
	Privacy bool `json:"privacy"`
	// Updated is when the device published this, Unix seconds by its clock.
	Updated int64 `json:"updated"`
}

// Claim carries the owner's opaque claim token from onboarding to the cloud, once, on
// dev/<id>/up/claim: the only onboarding value that leaves the device.
type Claim struct {
	V int `json:"v"`
	// Claim is the token as the phone app issued it (base64url, 16..128 characters).
	Claim string `json:"claim"`
	// Updated is when the device sent it, Unix seconds by its clock.
	Updated int64 `json:"updated"`
}

var claimRe = shape.New(`^[A-Za-z0-9_-]*$`, 16, 128)

// Validate checks the claim's fields.
func (c *Claim) Validate() error {
	if c.V != Version {
		return fmt.Errorf("%w: version %d", ErrMalformed, c.V)
	}
	if !claimRe.MatchString(c.Claim) {
		return fmt.Errorf("%w: claim token of %d characters", ErrMalformed, len(c.Claim))
	}
	return nil
}

// Telemetry is the device's periodic health report on dev/<id>/up/telemetry (QoS 0, not
// retained). Every field is a count, a duration, a version or a keyed tag: never a network
// name, an address, a nickname or anything a person typed (docs/privacy.md lists each).
type Telemetry struct {
	V        int    `json:"v"`
	Firmware string `json:"fw"`
	UptimeS  int64  `json:"uptime_s"`
	// CertSerial and Epoch identify the credential in use.
	CertSerial string `json:"cert_serial"`
	Epoch      uint64 `json:"epoch"`
	Privacy    bool   `json:"privacy"`
	// Viewers is the number of live viewer sessions; Sessions counts the viewer sessions
	// started since start, FramesCaptured the pictures the camera produced.
	Viewers        int    `json:"viewers"`
	Sessions       uint64 `json:"sessions"`
	FramesCaptured uint64 `json:"frames_captured"`
	// WiFiSignalDBm is the Wi-Fi signal level; absent without Wi-Fi.
	WiFiSignalDBm *int `json:"wifi_signal_dbm,omitempty"`
	// NetworkTag is a keyed hash of the Wi-Fi network the device was onboarded to: it changes
	// when the network does, and cannot be compared across devices (32 hex digits); "" when
	// never onboarded.
	NetworkTag string `json:"network_tag,omitempty"`
	// EgressRefusals counts publishes the egress guard refused since start.
	EgressRefusals uint64 `json:"egress_refusals"`
	Updated        int64  `json:"updated"`
}

var tagRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Validate checks the telemetry's fields.
func (t *Telemetry) Validate() error {
	if t.V != Version {
		return fmt.Errorf("%w: version %d", ErrMalformed, t.V)
	}
	if !firmwareRe.MatchString(t.Firmware) {
		return fmt.Errorf("%w: firmware %q", ErrMalformed, t.Firmware)
	}
	if t.CertSerial != "" && !serialRe.MatchString(t.CertSerial) {
		return fmt.Errorf("%w: cert serial %q", ErrMalformed, t.CertSerial)
	}
	if t.NetworkTag != "" && !tagRe.MatchString(t.NetworkTag) {
		return fmt.Errorf("%w: network tag", ErrMalformed)
	}
	if t.WiFiSignalDBm != nil && (*t.WiFiSignalDBm < -120 || *t.WiFiSignalDBm > 0) {
		return fmt.Errorf("%w: wifi signal %d dBm", ErrMalformed, *t.WiFiSignalDBm)
	}
	if t.UptimeS < 0 || t.Viewers < 0 {
		return fmt.Errorf("%w: negative count", ErrMalformed)
	}
	return nil
}

var (
	firmwareRe = shape.New(`^[A-Za-z0-9._+-]*$`, 1, 64)
	serialRe   = shape.New(`^[0-9a-f]*$`, 1, 40)
	typeRe     = shape.New(`^[a-z][a-z0-9_.-]*$`, 1, 32)
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

// Decode strictly decodes b into m and validates it. Besides what strictjson refuses, it
// refuses a key given twice in one object and a key not spelled exactly as the schema spells
// it: encoding/json would keep the last of two equal keys and match "V" or "ſeq" to "v" or
// "seq", so a reader that takes the first or matches exactly would see another message.
func Decode(b []byte, m validator) error {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, cap %d", ErrMalformed, len(b), MaxMessageSize)
	}
	if err := strictjson.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := checkKeys(b); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return m.Validate()
}

// keyRe is the spelling of every key of every message: lower-case snake_case, which
// encoding/json's case-insensitive matching cannot confuse with another spelling.
var keyRe = shape.New(`^[a-z0-9_]*$`, 1, 32)

// checkKeys walks the JSON text b, which strictjson has already accepted, and refuses a key
// repeated within one object or not shaped like keyRe. It does not quote the key.
func checkKeys(b []byte) error {
	type frame struct {
		obj, wantKey bool
		keys         map[string]bool
	}
	var stack []frame
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].obj {
			f := &stack[n-1]
			if f.wantKey {
				k, _ := tok.(string)
				switch {
				case !keyRe.MatchString(k):
					return errors.New("a key not spelled as the schema spells it")
				case f.keys[k]:
					return errors.New("a key given twice in one object")
				}
				f.keys[k], f.wantKey = true, false
				continue
			}
			f.wantKey = true // the next token after this value is a key or '}'
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, frame{obj: d == '{', wantKey: true, keys: map[string]bool{}})
		}
	}
}
