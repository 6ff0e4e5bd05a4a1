package certs

import (
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/camagent/camagent/internal/shape"
)

// Role is what an identity may do on the fleet's MQTT broker (see docs/protocol.md).
type Role string

// The roles. A device's identity is its bare id; every other role is "<role>:<name>", and a
// colon never appears in a device id, so the two can never be confused.
const (
	RoleDevice    Role = "device"
	RoleOperator  Role = "operator"
	RoleSigner    Role = "signer"
	RoleViewer    Role = "viewer"
	RoleBootstrap Role = "bootstrap"
	// RoleServer is a broker's server certificate; it is never an MQTT client identity.
	RoleServer Role = "server"
)

var (
	deviceIDRe = shape.New(`^[a-z0-9][a-z0-9-]*$`, 3, 63)
	nameRe     = shape.New(`^[a-z0-9][a-z0-9._-]*$`, 1, 63)
)

// ValidDeviceID reports whether id is a well-formed device id: 3 to 63 characters of lower-case
// letters, digits and '-', starting with a letter or digit.
func ValidDeviceID(id string) error {
	if !deviceIDRe.MatchString(id) {
		return fmt.Errorf("%w: device id %q must match %s", ErrBadIdentity, id, deviceIDRe)
	}
	return nil
}

// IdentityFor returns the certificate identity (CN) for a role and a name. For RoleDevice the
// name is the device id; for RoleBootstrap it is the device id the bootstrap identity serves.
func IdentityFor(role Role, name string) (string, error) {
	switch role {
	case RoleDevice:
		if err := ValidDeviceID(name); err != nil {
			return "", err
		}
		return name, nil
	case RoleBootstrap:
		if err := ValidDeviceID(name); err != nil {
			return "", err
		}
		return string(role) + ":" + name, nil
	case RoleOperator, RoleSigner, RoleViewer:
		if !nameRe.MatchString(name) {
			return "", fmt.Errorf("%w: %s name %q must match %s", ErrBadIdentity, role, name, nameRe)
		}
		return string(role) + ":" + name, nil
	case RoleServer:
		if name == "" {
			return "", fmt.Errorf("%w: empty server name", ErrBadIdentity)
		}
		return name, nil
	}
	return "", fmt.Errorf("%w: unknown role %q", ErrBadIdentity, role)
}

// ParseIdentity splits an MQTT client identity into its role and name. It returns an error for
// anything that is not a well-formed client identity of a known role.
func ParseIdentity(identity string) (Role, string, error) {
	r, name, ok := strings.Cut(identity, ":")
	if !ok {
		if err := ValidDeviceID(identity); err != nil {
			return "", "", err
		}
		return RoleDevice, identity, nil
	}
	role := Role(r)
	if role == RoleServer || role == RoleDevice {
		return "", "", fmt.Errorf("%w: %q is not a client role", ErrBadIdentity, r)
	}
	want, err := IdentityFor(role, name)
	if err != nil {
		return "", "", err
	}
	if want != identity {
		return "", "", fmt.Errorf("%w: %q", ErrBadIdentity, identity)
	}
	return role, name, nil
}

// CertIdentity returns the identity a client certificate carries: its Subject CN.
func CertIdentity(c *x509.Certificate) string { return c.Subject.CommonName }

var sessionSuffixRe = shape.New(`^[0-9a-z]*$`, 1, 32)

// ClientIDAllowed reports whether an MQTT client ID may be used by a client whose certificate
// carries identity. A device's client ID is exactly its identity, so one device can never take
// over another's session. Other roles may add "~" and 1 to 32 lower-case letters or digits,
// so that several sessions of one operator or signer identity can coexist
// (operator:alice~3f2a9c1b); the broker still authorises by identity, never by client ID.
func ClientIDAllowed(identity, clientID string) bool {
	if clientID == identity {
		return true
	}
	role, _, err := ParseIdentity(identity)
	if err != nil || role == RoleDevice {
		return false
	}
	base, suffix, ok := strings.Cut(clientID, "~")
	return ok && base == identity && sessionSuffixRe.MatchString(suffix)
}

// ClientIDSession returns the session suffix of a client ID (after "~"), or the whole client
// ID when it has none.
func ClientIDSession(clientID string) string {
	if _, suffix, ok := strings.Cut(clientID, "~"); ok {
		return suffix
	}
	return clientID
}

// ClientIDIdentity returns the identity part of a client ID that ClientIDAllowed admitted:
// the client ID without its "~" suffix.
func ClientIDIdentity(clientID string) string {
	if base, _, ok := strings.Cut(clientID, "~"); ok {
		return base
	}
	return clientID
}
