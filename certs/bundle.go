package certs

import (
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/camagent/camagent/internal/strictjson"
)

// MaxBundleSize caps a device bundle read from outside.
const MaxBundleSize = 64 << 10

// Bundle is what `fleetctl enroll` hands a device: everything public it needs to join the
// fleet. It holds no secret; the device key never left the device.
type Bundle struct {
	V        int    `json:"v"`
	DeviceID string `json:"device_id"`
	// CertPEM is the device's client certificate.
	CertPEM string `json:"cert"`
	// CAPEM is the fleet CA the device pins for the broker (and for its own new certificates).
	CAPEM string `json:"ca"`
	// RootKey is the fleet's offline root public key (Ed25519), pinned for key sets.
	RootKey []byte `json:"root_key"`
	// KeySet is the root-signed key set, as SignKeySet wrote it.
	KeySet json.RawMessage `json:"keyset"`
	// Broker is the broker URL, mqtts://host:port.
	Broker string `json:"broker"`
	// BootstrapCertPEM is the long-lived bootstrap certificate (identity bootstrap:<id>), used
	// only to ask for a new certificate when the device's own expired or was revoked.
	BootstrapCertPEM string `json:"bootstrap_cert,omitempty"`
}

// ParseBundle decodes a bundle strictly; Verify checks it.
func ParseBundle(b []byte) (*Bundle, error) {
	if len(b) > MaxBundleSize {
		return nil, fmt.Errorf("%w: bundle of %d bytes, cap %d", ErrTooLarge, len(b), MaxBundleSize)
	}
	var bu Bundle
	if err := strictjson.Unmarshal(b, &bu); err != nil {
		return nil, fmt.Errorf("%w: bundle: %v", ErrMalformed, err)
	}
	if bu.V != 1 {
		return nil, fmt.Errorf("%w: bundle version %d", ErrMalformed, bu.V)
	}
	return &bu, nil
}

// VerifiedBundle is a bundle whose parts were checked together.
type VerifiedBundle struct {
	Bundle *Bundle
	Cert   *x509.Certificate
	Pool   *x509.CertPool
	Root   ed25519.PublicKey
	KeySet *KeySet
	// ServerName is the host part of Broker, used to verify the broker's certificate.
	ServerName string
	// Bootstrap is the bootstrap certificate, or nil.
	Bootstrap *x509.Certificate
}

// Verify checks that the certificate chains to the bundle's CA for the bundle's device id with
// key's public half (key may be nil when only the public parts are checked), that the key set
// is signed by the root key, and that the broker URL is mqtts. now is used for the chain check:
// a certificate not yet valid at now is still accepted (the device clock may be behind, R5) but
// an expired one is not. A zero now checks the chain at the certificate's own NotBefore, for a
// device that must load a certificate that expired while it was offline in order to recover.
func (bu *Bundle) Verify(key crypto.Signer, now time.Time) (*VerifiedBundle, error) {
	if err := ValidDeviceID(bu.DeviceID); err != nil {
		return nil, fmt.Errorf("certs: bundle: %w", err)
	}
	pool, err := NewPool([]byte(bu.CAPEM))
	if err != nil {
		return nil, fmt.Errorf("certs: bundle: %w", err)
	}
	c, err := ParseCertPEM([]byte(bu.CertPEM))
	if err != nil {
		return nil, fmt.Errorf("certs: bundle certificate: %w", err)
	}
	if CertIdentity(c) != bu.DeviceID {
		return nil, fmt.Errorf("certs: bundle: %w: certificate for %q, bundle for %q", ErrBadIdentity, CertIdentity(c), bu.DeviceID)
	}
	at := now
	if at.IsZero() || at.Before(c.NotBefore) {
		at = c.NotBefore
	}
	if _, err := VerifyClient(c, pool, at); err != nil {
		return nil, fmt.Errorf("certs: bundle: %w", err)
	}
	if key != nil && !SamePublicKey(c, key) {
		return nil, fmt.Errorf("certs: bundle: %w: certificate is not for this device's key", ErrKeyMismatch)
	}
	if len(bu.RootKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: bundle root key of %d bytes", ErrMalformed, len(bu.RootKey))
	}
	root := ed25519.PublicKey(bu.RootKey)
	ks, err := OpenKeySet(root, bu.KeySet)
	if err != nil {
		return nil, fmt.Errorf("certs: bundle: %w", err)
	}
	host, err := BrokerHost(bu.Broker)
	if err != nil {
		return nil, fmt.Errorf("certs: bundle: %w", err)
	}
	vb := &VerifiedBundle{Bundle: bu, Cert: c, Pool: pool, Root: root, KeySet: ks, ServerName: host}
	if bu.BootstrapCertPEM != "" {
		bc, err := ParseCertPEM([]byte(bu.BootstrapCertPEM))
		if err != nil {
			return nil, fmt.Errorf("certs: bundle bootstrap certificate: %w", err)
		}
		want, _ := IdentityFor(RoleBootstrap, bu.DeviceID)
		if CertIdentity(bc) != want {
			return nil, fmt.Errorf("certs: bundle: %w: bootstrap certificate for %q", ErrBadIdentity, CertIdentity(bc))
		}
		if _, err := VerifyClient(bc, pool, bc.NotBefore); err != nil {
			return nil, fmt.Errorf("certs: bundle bootstrap certificate: %w", err)
		}
		vb.Bootstrap = bc
	}
	return vb, nil
}

// BrokerHost checks that u is an mqtts:// (or ssl://, tls://) URL with a host and port and
// returns the host. Plaintext MQTT is a configuration error.
func BrokerHost(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		// url.Error quotes the whole URL, which may carry a password: give only why.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("%w: broker url: %v", ErrMalformed, err)
	}
	if pu.User != nil {
		// The client certificate is the identity; a user or password in the URL would be
		// ignored by the broker and could end up in a log.
		return "", fmt.Errorf("%w: broker url %q carries a user or password: the client certificate is the only credential; give mqtts://host:port", ErrMalformed, pu.Redacted())
	}
	switch pu.Scheme {
	case "mqtts", "ssl", "tls":
	default:
		return "", fmt.Errorf("%w: broker url %q: scheme %q is not TLS; use mqtts://", ErrMalformed, u, pu.Scheme)
	}
	if pu.Hostname() == "" || pu.Port() == "" {
		return "", fmt.Errorf("%w: broker url %q needs host and port", ErrMalformed, u)
	}
	return pu.Hostname(), nil
}
