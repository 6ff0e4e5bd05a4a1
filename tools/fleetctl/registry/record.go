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
	// ViaFleet is the fleet directory issuing one of its own client identities, operator:<name>
	// or signer:<name> (fleetctl init, a renewal, fleetctl replace), recorded so that it can be
	// revoked (its record's Device is the identity).
	ViaFleet = "fleet"
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
	// device it serves), or for a certificate of a viewer relay, an operator or a signer its
	// identity (viewer:<name>, operator:<name>, signer:<name>).
	Device string `json:"device"`
	// Role is certs.RoleDevice, certs.RoleBootstrap, certs.RoleViewer, certs.RoleOperator or
	// certs.RoleSigner (TypeIssued).
	Role certs.Role `json:"role,omitempty"`
	// Via is ViaEnroll, ViaCSR or ViaBoot, ViaViewer for a viewer relay, ViaFleet for an
	// operator or a signer (TypeIssued).
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
	if role, ok := identityRole(certs.CertIdentity(c)); !ok || role != certs.RoleViewer {
		return Record{}, fmt.Errorf("%w: %q is no viewer relay", ErrInvalidRecord, certs.CertIdentity(c))
	}
	return IdentityIssuedRecord(c, now)
}

// IdentityIssuedRecord returns the TypeIssued record of c, a certificate of a viewer relay,
// an operator or a signer: recorded under its identity, so that it can be revoked.
func IdentityIssuedRecord(c *x509.Certificate, now time.Time) (Record, error) {
	role, ok := identityRole(certs.CertIdentity(c))
	if !ok {
		return Record{}, fmt.Errorf("%w: %q is no viewer, operator or signer identity", ErrInvalidRecord, certs.CertIdentity(c))
	}
	r := Record{
		Type: TypeIssued, Serial: SerialHex(c.SerialNumber), Device: certs.CertIdentity(c), Role: role,
		Via: identityVia(role), NotAfter: c.NotAfter.Unix(), Time: now.UTC(), Cert: c.Raw,
	}
	return r, r.Validate()
}

// identityRole returns the role of subject if it is an identity recorded under its own name
// rather than a device id: viewer:<name>, operator:<name> or signer:<name>.
func identityRole(subject string) (certs.Role, bool) {
	role, _, err := certs.ParseIdentity(subject)
	if err != nil {
		return "", false
	}
	switch role {
	case certs.RoleViewer, certs.RoleOperator, certs.RoleSigner:
		return role, true
	}
	return "", false
}

// identityVia is the Via of a record of an identity of role.
func identityVia(role certs.Role) string {
	if role == certs.RoleViewer {
		return ViaViewer
	}
	return ViaFleet
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
	idRole, named := identityRole(r.Device)
	if err := certs.ValidDeviceID(r.Device); err != nil && !named {
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
		case named && (r.Role != idRole || r.Via != identityVia(idRole) || r.Epoch != 0 || r.TokenHash != "" || r.ReqID != ""):
			return bad("the record of %s with role %q, via %q or device fields", r.Device, r.Role, r.Via)
		case !named && r.Role != certs.RoleDevice && r.Role != certs.RoleBootstrap:
			return bad("role %q", r.Role)
		case !named && r.Via != ViaEnroll && r.Via != ViaCSR && r.Via != ViaBoot:
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
		if !named {
			want, _ = certs.IdentityFor(r.Role, r.Device)
		}
		if SerialHex(c.SerialNumber) != r.Serial || certs.CertIdentity(c) != want || c.NotAfter.Unix() != r.NotAfter {
			return bad("cert does not match the record (serial %s, identity %q)", SerialHex(c.SerialNumber), certs.CertIdentity(c))
		}
	case TypeConfirmed, TypeRevoked:
		if named && r.Type == TypeConfirmed {
			return bad("%s confirms no rotation", r.Device)
		}
		if r.Role != "" || r.Via != "" || r.Epoch != 0 || r.TokenHash != "" || r.NotAfter != 0 || len(r.Cert) != 0 {
			return bad("carries fields of an issued record")
		}
	default:
		return fmt.Errorf("%w: type %q", ErrInvalidRecord, r.Type)
	}
	return nil
}
