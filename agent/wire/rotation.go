package wire

import (
	"encoding/pem"
	"fmt"
	"regexp"

	"github.com/camagent/camagent/internal/shape"
)

// Rotation message kinds on dev/<id>/up/csr (and boot/<id>/up/csr for the bootstrap identity).
const (
	// KindRequest asks the signer for a certificate for a new key.
	KindRequest = "request"
	// KindConfirm tells the signer the device is connected with the new certificate, so the
	// signer may revoke the old one.
	KindConfirm = "confirm"
)

// Rotation status values in DeviceState.Rotation.
const (
	RotationIdle    = "idle"
	RotationPending = "pending" // new key made, waiting for a certificate
	RotationIssued  = "issued"  // certificate received and verified, switching to it
	RotationFailed  = "failed"  // the last attempt failed; LastError says why; it will retry
)

// Error codes for rotation (DeviceState.LastError, CertResponse.Error).
const (
	ErrCodeRefused      = "refused"       // the signer refused the request
	ErrCodeBadCert      = "bad_cert"      // the issued certificate did not verify
	ErrCodeBrokerRefuse = "broker_refuse" // the broker refused the new certificate
	ErrCodeTimeout      = "timeout"       // no certificate arrived in time
	ErrCodeRateLimited  = "rate_limited"  // the signer is pacing the rollout; retry later
)

var (
	reqIDRe     = shape.New(`^[0-9a-f]*$`, 16, 32)
	tokenHashRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
	rotErrCodes = map[string]bool{"": true, ErrCodeRefused: true, ErrCodeBadCert: true, ErrCodeBrokerRefuse: true, ErrCodeTimeout: true, ErrCodeRateLimited: true, ErrCodeInternal: true}
	rotStatuses = map[string]bool{"": true, RotationIdle: true, RotationPending: true, RotationIssued: true, RotationFailed: true}
)

// CertVersion is the newest version of the rotation messages, CertRequest and CertResponse.
// A version 2 request is a version 1 request that says the device reads version 2 answers;
// a version 2 answer may carry RetryAfter. A signer answers in the version it was asked in, so
// a device that sends version 1 never sees a field it does not know. A signer from before
// version 2 drops a version 2 request as malformed, unanswered: a device whose version 2
// request times out asks in version 1 next (docs/protocol.md, "Versions of the rotation
// messages").
const CertVersion = 2

// MaxRetryAfter bounds CertResponse.RetryAfter, in seconds.
const MaxRetryAfter = 24 * 60 * 60

// CertRequest is what a device sends the signer during a rotation.
type CertRequest struct {
	// V is Version or CertVersion.
	V    int    `json:"v"`
	Kind string `json:"kind"`
	// ReqID names one rotation attempt (random hex); the signer's answer carries it back.
	ReqID string `json:"req_id"`
	// Epoch is the credential epoch the new certificate is for.
	Epoch uint64 `json:"epoch"`
	// CSR is the PEM CSR for the new key (KindRequest).
	CSR string `json:"csr,omitempty"`
	// TokenHash is the hex SHA-256 of the new device token (KindRequest). The token itself never
	// leaves the device over MQTT, so no broker queue or signer log can hold it (S6).
	TokenHash string `json:"token_hash,omitempty"`
	// NewSerial and OldSerial are hex certificate serials (KindConfirm).
	NewSerial string `json:"new_serial,omitempty"`
	OldSerial string `json:"old_serial,omitempty"`
}

// Validate checks every field's shape.
func (r *CertRequest) Validate() error {
	if r.V != Version && r.V != CertVersion {
		return fmt.Errorf("%w: version %d", ErrMalformed, r.V)
	}
	if !reqIDRe.MatchString(r.ReqID) {
		return fmt.Errorf("%w: req_id %q", ErrMalformed, r.ReqID)
	}
	switch r.Kind {
	case KindRequest:
		if !isPEMBlock(r.CSR, "CERTIFICATE REQUEST") {
			return fmt.Errorf("%w: csr is not one PEM CERTIFICATE REQUEST", ErrMalformed)
		}
		if !tokenHashRe.MatchString(r.TokenHash) {
			return fmt.Errorf("%w: token_hash", ErrMalformed)
		}
		if r.NewSerial != "" || r.OldSerial != "" {
			return fmt.Errorf("%w: serials in a request", ErrMalformed)
		}
	case KindConfirm:
		if r.CSR != "" || r.TokenHash != "" {
			return fmt.Errorf("%w: csr or token hash in a confirmation", ErrMalformed)
		}
		if !serialRe.MatchString(r.NewSerial) || !serialRe.MatchString(r.OldSerial) {
			return fmt.Errorf("%w: confirmation serials", ErrMalformed)
		}
	default:
		return fmt.Errorf("%w: kind %q", ErrMalformed, r.Kind)
	}
	return nil
}

// CertResponse is the signer's answer on dev/<id>/down/cert (boot/<id>/down/cert).
type CertResponse struct {
	// V is the version of the request it answers: Version or CertVersion.
	V     int    `json:"v"`
	ReqID string `json:"req_id"`
	// Cert is the PEM certificate, when issued.
	Cert string `json:"cert,omitempty"`
	// Error is an error code when refused.
	Error string `json:"error,omitempty"`
	// RetryAfter (version 2, with ErrCodeRateLimited only) is how many seconds the device
	// should wait before it asks again: the signer's estimate of when a place will be free
	// for it, spread so that the devices it tells do not come back at once. Zero: no hint,
	// the device retries after its own backoff.
	RetryAfter int `json:"retry_after,omitempty"`
}

// Validate checks every field's shape.
func (r *CertResponse) Validate() error {
	if r.V != Version && r.V != CertVersion {
		return fmt.Errorf("%w: version %d", ErrMalformed, r.V)
	}
	if !reqIDRe.MatchString(r.ReqID) {
		return fmt.Errorf("%w: req_id %q", ErrMalformed, r.ReqID)
	}
	if !rotErrCodes[r.Error] || (r.Error == "") == (r.Cert == "") {
		return fmt.Errorf("%w: a response carries a certificate or an error code, not both", ErrMalformed)
	}
	if r.RetryAfter != 0 {
		switch {
		case r.V < CertVersion:
			return fmt.Errorf("%w: retry_after in a version %d response", ErrMalformed, r.V)
		case r.Error != ErrCodeRateLimited:
			return fmt.Errorf("%w: retry_after with error %q, not %q", ErrMalformed, r.Error, ErrCodeRateLimited)
		case r.RetryAfter < 0 || r.RetryAfter > MaxRetryAfter:
			return fmt.Errorf("%w: retry_after %d s, not within 1..%d", ErrMalformed, r.RetryAfter, MaxRetryAfter)
		}
	}
	if r.Cert != "" {
		if !isPEMBlock(r.Cert, "CERTIFICATE") {
			return fmt.Errorf("%w: cert is not one PEM CERTIFICATE", ErrMalformed)
		}
	}
	return nil
}

// isPEMBlock reports whether s is exactly one PEM block of type typ, without headers, as
// pem.EncodeToMemory writes it (RFC 7468 §2, 64-character lines, a final newline).
// pem.Decode alone skips any text before the block, returns what follows it unread and keeps
// RFC 1421 headers: each would let the field carry free text to the broker (P1).
func isPEMBlock(s, typ string) bool {
	blk, rest := pem.Decode([]byte(s))
	if blk == nil || blk.Type != typ || len(blk.Headers) != 0 || len(rest) != 0 {
		return false
	}
	return string(pem.EncodeToMemory(blk)) == s
}
