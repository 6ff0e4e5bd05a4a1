package certs

import (
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/camagent/camagent/internal/strictjson"
)

// MaxViewerBundleSize caps a viewer bundle read from outside.
const MaxViewerBundleSize = 32 << 10

// ViewerBundle is what `fleetctl viewer` hands a viewer relay (camview) for the key it made
// itself: its certificate, the fleet CA to pin for the broker, and the broker URL. It holds no
// secret. With it, camview runs with its own key and these public parts only, and never sees
// the fleet directory and the CA key in it.
type ViewerBundle struct {
	V int `json:"v"`
	// Identity is viewer:<name>.
	Identity string `json:"identity"`
	// CertPEM is the viewer relay's client certificate.
	CertPEM string `json:"cert"`
	// CAPEM is the fleet CA.
	CAPEM string `json:"ca"`
	// Broker is the broker URL, mqtts://host:port.
	Broker string `json:"broker"`
	// Root is the fleet's root public key (Ed25519) and KeySet the fleet's signed key set
	// (SignKeySet), base64 in JSON: with them the relay checks viewers' grants before it sends
	// their offers on. Both or neither; bundles made before them have neither.
	Root   []byte `json:"root,omitempty"`
	KeySet []byte `json:"key_set,omitempty"`
}

// ParseViewerBundle decodes a viewer bundle strictly; Verify checks it.
func ParseViewerBundle(b []byte) (*ViewerBundle, error) {
	if len(b) > MaxViewerBundleSize {
		return nil, fmt.Errorf("%w: viewer bundle of %d bytes, cap %d", ErrTooLarge, len(b), MaxViewerBundleSize)
	}
	var vb ViewerBundle
	if err := strictjson.Unmarshal(b, &vb); err != nil {
		return nil, fmt.Errorf("%w: viewer bundle: %v", ErrMalformed, err)
	}
	if vb.V != 1 {
		return nil, fmt.Errorf("%w: viewer bundle version %d", ErrMalformed, vb.V)
	}
	return &vb, nil
}

// VerifiedViewerBundle is a viewer bundle whose parts were checked together.
type VerifiedViewerBundle struct {
	Bundle *ViewerBundle
	// Name is the <name> of viewer:<name>.
	Name string
	Cert *x509.Certificate
	Pool *x509.CertPool
	// ServerName is the host part of Broker, used to verify the broker's certificate.
	ServerName string
	// KeySet is the bundle's key set, opened with its root key; nil in a bundle without one.
	KeySet *KeySet
}

// Verify checks that Identity is a viewer identity, that the certificate is for it, chains to
// the bundle's CA with the clientAuth EKU and is valid at now, that it carries key's public
// half (key may be nil when only the public parts are checked), and that the broker URL is
// mqtts, and that its key set, if it has one, is signed by its root key.
func (vb *ViewerBundle) Verify(key crypto.Signer, now time.Time) (*VerifiedViewerBundle, error) {
	role, name, err := ParseIdentity(vb.Identity)
	if err != nil {
		return nil, fmt.Errorf("certs: viewer bundle: %w", err)
	}
	if role != RoleViewer {
		return nil, fmt.Errorf("certs: viewer bundle: %w: %q is not a viewer identity", ErrBadIdentity, vb.Identity)
	}
	pool, err := NewPool([]byte(vb.CAPEM))
	if err != nil {
		return nil, fmt.Errorf("certs: viewer bundle: %w", err)
	}
	c, err := ParseCertPEM([]byte(vb.CertPEM))
	if err != nil {
		return nil, fmt.Errorf("certs: viewer bundle certificate: %w", err)
	}
	if CertIdentity(c) != vb.Identity {
		return nil, fmt.Errorf("certs: viewer bundle: %w: certificate for %q, bundle for %q", ErrBadIdentity, CertIdentity(c), vb.Identity)
	}
	if _, err := VerifyClient(c, pool, now); err != nil {
		return nil, fmt.Errorf("certs: viewer bundle: %w", err)
	}
	if key != nil && !SamePublicKey(c, key) {
		return nil, fmt.Errorf("certs: viewer bundle: %w: certificate is not for this viewer's key", ErrKeyMismatch)
	}
	host, err := BrokerHost(vb.Broker)
	if err != nil {
		return nil, fmt.Errorf("certs: viewer bundle: %w", err)
	}
	var ks *KeySet
	switch {
	case len(vb.Root) == 0 && len(vb.KeySet) == 0:
	case len(vb.Root) != ed25519.PublicKeySize:
		return nil, fmt.Errorf("certs: viewer bundle: %w: root key of %d bytes, want %d", ErrMalformed, len(vb.Root), ed25519.PublicKeySize)
	default:
		if ks, err = OpenKeySet(ed25519.PublicKey(vb.Root), vb.KeySet); err != nil {
			return nil, fmt.Errorf("certs: viewer bundle: %w", err)
		}
	}
	return &VerifiedViewerBundle{Bundle: vb, Name: name, Cert: c, Pool: pool, ServerName: host, KeySet: ks}, nil
}
