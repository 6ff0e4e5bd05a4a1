package registry

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"math/big"
	"regexp"
	"time"

	"github.com/camagent/camagent/certs"
)

// Type is the kind of a record.
type Type string

// The record types.
const (
	// TypeIssued records a certificate the fleet CA issued.
	TypeIssued Type = "issued"
	// TypeConfirmed records that a device is connected with a certificate it was issued
	// (the rotation's confirmation), so it counts as a success for the rollout controls.
	TypeConfirmed Type = "confirmed"
	// TypeRevoked records that a serial must no longer be accepted by any broker.
	TypeRevoked Type = "revoked"
	// TypeRetired records that a device left the fleet for good (`fleetctl retire`): no
	// certificate is issued to it again, through either of its identities, until it is
	// reinstated. It carries no serial: the certificates are revoked by records of their own.
	TypeRetired Type = "retired"
	// TypeReinstated ends a device's retirement (`fleetctl enroll --reinstate`).
	TypeReinstated Type = "reinstated"
)

// How a certificate came to be issued (Record.Via).
const (
	// ViaEnroll is `fleetctl enroll`.
	ViaEnroll = "enroll"
	// ViaCSR is a rotation request on dev/<id>/up/csr.
	ViaCSR = "csr"
	// ViaBoot is a rotation request through the bootstrap identity, on boot/<id>/up/csr.
	ViaBoot = "boot"
	// ViaViewer is `fleetctl viewer` or camview --fleet: a viewer relay's certificate, recorded
	// so that it can be revoked (its record's Device is the identity viewer:<name>).
	ViaViewer = "viewer"
)

// MaxRecordSize caps one line of the log; a longer line is skipped as malformed.
const MaxRecordSize = 16 << 10

var (
	serialRe    = regexp.MustCompile(`^[0-9a-f]{1,40}$`)
	tokenHashRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reqIDRe     = regexp.MustCompile(`^[0-9a-f]{16,32}$`)
)

// Record is one line of the log. Which fields are set depends on Type; Validate says.
type Record struct {
	Type Type `json:"type"`
	// Serial is the certificate serial in lower-case hex, without leading zeros; empty in
	// TypeRetired and TypeReinstated records.
	Serial string `json:"serial,omitempty"`
	// Device is the device id the certificate belongs to (for a bootstrap certificate, the
	// device it serves), or for a viewer relay's certificate its identity viewer:<name>.
	Device string `json:"device"`
	// Role is certs.RoleDevice, certs.RoleBootstrap or certs.RoleViewer (TypeIssued).
	Role certs.Role `json:"role,omitempty"`
	// Via is ViaEnroll, ViaCSR or ViaBoot, or ViaViewer for a viewer relay (TypeIssued).
	Via string `json:"via,omitempty"`
	// Epoch is the credential epoch the certificate was requested for (TypeIssued).
	Epoch uint64 `json:"epoch,omitempty"`
	// TokenHash is the hex SHA-256 of the device token registered with the certificate
	// (TypeIssued, device role); the token itself is never recorded.
	TokenHash string `json:"token_hash,omitempty"`
	// ReqID is the device's rotation attempt id (TypeIssued via CSR or boot, TypeConfirmed).
	ReqID string `json:"req_id,omitempty"`
	// NotAfter is the certificate's expiry, Unix seconds (TypeIssued).
	NotAfter int64 `json:"not_after,omitempty"`
	// Time is when the record was made, by the clock of the process that made it.
	Time time.Time `json:"time"`
	// Cert is the certificate, DER (base64 in JSON) (TypeIssued). It is public.
	Cert []byte `json:"cert,omitempty"`
}

// SerialHex formats a certificate serial the way records, device state and wire messages do.
func SerialHex(n *big.Int) string { return n.Text(16) }

// IssuedRecord returns the TypeIssued record of c. device is the device id c belongs to; c's
// identity must be that device's (certs.RoleDevice) or its bootstrap identity
// (certs.RoleBootstrap). tokenHash may be empty; reqID is empty for ViaEnroll.
func IssuedRecord(c *x509.Certificate, device, via string, epoch uint64, tokenHash, reqID string, now time.Time) (Record, error) {
	role, name, err := certs.ParseIdentity(certs.CertIdentity(c))
	if err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	r := Record{
		Type: TypeIssued, Serial: SerialHex(c.SerialNumber), Device: name, Role: role, Via: via,
		Epoch: epoch, TokenHash: tokenHash, ReqID: reqID, NotAfter: c.NotAfter.Unix(), Time: now.UTC(), Cert: c.Raw,
	}
	if name != device {
		return Record{}, fmt.Errorf("%w: certificate for %q recorded for device %q", ErrInvalidRecord, certs.CertIdentity(c), device)
	}
	return r, r.Validate()
}

// ViewerIssuedRecord returns the TypeIssued record of c, a viewer relay's certificate.
func ViewerIssuedRecord(c *x509.Certificate, now time.Time) (Record, error) {
	r := Record{
		Type: TypeIssued, Serial: SerialHex(c.SerialNumber), Device: certs.CertIdentity(c), Role: certs.RoleViewer,
		Via: ViaViewer, NotAfter: c.NotAfter.Unix(), Time: now.UTC(), Cert: c.Raw,
	}
	return r, r.Validate()
}

// isViewer reports whether subject is a viewer relay identity, viewer:<name>.
func isViewer(subject string) bool {
	role, _, err := certs.ParseIdentity(subject)
	return err == nil && role == certs.RoleViewer
}

// Validate checks a record's fields for its type. It refuses a certificate that does not
// match the record's serial, device and role, and any byte string that holds a PEM private
// key (S6).
func (r *Record) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s record: %s", ErrInvalidRecord, r.Type, fmt.Sprintf(format, args...))
	}
	if r.Type == TypeRetired || r.Type == TypeReinstated {
		// A device's status, not a certificate's: no serial, no certificate fields.
		if err := certs.ValidDeviceID(r.Device); err != nil {
			return bad("%v", err)
		}
		if r.Serial != "" || r.Role != "" || r.Via != "" || r.Epoch != 0 || r.TokenHash != "" || r.ReqID != "" || r.NotAfter != 0 || len(r.Cert) != 0 {
			return bad("carries certificate fields")
		}
		if r.Time.IsZero() {
			return bad("no time")
		}
		return nil
	}
	if !serialRe.MatchString(r.Serial) {
		return bad("serial %q", r.Serial)
	}
	viewer := isViewer(r.Device)
	if err := certs.ValidDeviceID(r.Device); err != nil && !viewer {
		return bad("%v", err)
	}
	if r.Time.IsZero() {
		return bad("no time")
	}
	if r.ReqID != "" && !reqIDRe.MatchString(r.ReqID) {
		return bad("req_id %q", r.ReqID)
	}
	switch r.Type {
	case TypeIssued:
		switch {
		case viewer && (r.Role != certs.RoleViewer || r.Via != ViaViewer || r.Epoch != 0 || r.TokenHash != "" || r.ReqID != ""):
			return bad("a viewer relay's record with role %q, via %q or device fields", r.Role, r.Via)
		case !viewer && r.Role != certs.RoleDevice && r.Role != certs.RoleBootstrap:
			return bad("role %q", r.Role)
		case !viewer && r.Via != ViaEnroll && r.Via != ViaCSR && r.Via != ViaBoot:
			return bad("via %q", r.Via)
		}
		if r.TokenHash != "" && (r.Role != certs.RoleDevice || !tokenHashRe.MatchString(r.TokenHash)) {
			return bad("token hash")
		}
		if bytes.Contains(r.Cert, []byte("PRIVATE KEY")) {
			return bad("cert holds a private key")
		}
		c, err := x509.ParseCertificate(r.Cert)
		if err != nil {
			return bad("cert: %v", err)
		}
		want := r.Device
		if !viewer {
			want, _ = certs.IdentityFor(r.Role, r.Device)
		}
		if SerialHex(c.SerialNumber) != r.Serial || certs.CertIdentity(c) != want || c.NotAfter.Unix() != r.NotAfter {
			return bad("cert does not match the record (serial %s, identity %q)", SerialHex(c.SerialNumber), certs.CertIdentity(c))
		}
	case TypeConfirmed, TypeRevoked:
		if viewer && r.Type == TypeConfirmed {
			return bad("a viewer relay confirms no rotation")
		}
		if r.Role != "" || r.Via != "" || r.Epoch != 0 || r.TokenHash != "" || r.NotAfter != 0 || len(r.Cert) != 0 {
			return bad("carries fields of an issued record")
		}
	default:
		return fmt.Errorf("%w: type %q", ErrInvalidRecord, r.Type)
	}
	return nil
}
