package certs

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/camagent/camagent/internal/strictjson"
)

// MaxKeySetSize caps a signed key set accepted from outside.
const MaxKeySetSize = 16 << 10

// maxKeysPerKind bounds how many keys of one kind a key set may carry.
const maxKeysPerKind = 16

// KeySet lists the online keys a device trusts: command-verification and grant-verification
// keys. It is signed by the fleet's offline root key, which devices pin; a device accepts a new
// key set only when the root signed it and its version is higher than the one it holds, and from
// then on refuses anything signed by keys the new set dropped (rotation issue, item 8).
type KeySet struct {
	Version     uint64      `json:"version"`
	IssuedAt    int64       `json:"iat"`
	CommandKeys []PublicKey `json:"command_keys"`
	GrantKeys   []PublicKey `json:"grant_keys"`
	// BrokerNotBefore, when not zero, retires every broker certificate issued before it (Unix
	// seconds, compared with the certificate's NotBefore): a client holding the set refuses a
	// broker that presents one. After a breach that reached a broker's private key, the fleet
	// gives its brokers new keys and certificates and then publishes a set whose floor is the
	// new certificate's NotBefore, so whoever holds the old key can no longer pose as the
	// broker. Zero retires none.
	BrokerNotBefore int64 `json:"broker_not_before,omitempty"`
}

// Validate checks the key set's own consistency.
func (ks *KeySet) Validate() error {
	if ks.Version == 0 {
		return fmt.Errorf("%w: key set version 0", ErrMalformed)
	}
	if ks.BrokerNotBefore < 0 {
		return fmt.Errorf("%w: key set broker_not_before %d", ErrMalformed, ks.BrokerNotBefore)
	}
	for kind, keys := range map[string][]PublicKey{"command_keys": ks.CommandKeys, "grant_keys": ks.GrantKeys} {
		if len(keys) == 0 || len(keys) > maxKeysPerKind {
			return fmt.Errorf("%w: key set has %d %s, want 1..%d", ErrMalformed, len(keys), kind, maxKeysPerKind)
		}
		for _, k := range keys {
			if err := k.check(); err != nil {
				return fmt.Errorf("key set %s: %w", kind, err)
			}
		}
	}
	return nil
}

// CommandVerifier returns a verifier trusting the set's command keys.
func (ks *KeySet) CommandVerifier() *Verifier { return NewVerifier(ks.CommandKeys...) }

// GrantVerifier returns a verifier trusting the set's grant keys.
func (ks *KeySet) GrantVerifier() *Verifier { return NewVerifier(ks.GrantKeys...) }

// SignKeySet signs ks with the fleet root key.
func SignKeySet(root *SigningKey, ks KeySet) ([]byte, error) {
	if err := ks.Validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(ks)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal key set: %w", err)
	}
	return seal(root, domainKeySet, body)
}

// OpenKeySet verifies a signed key set against the pinned root public key and returns it.
// It does not compare versions; use Newer for that.
func OpenKeySet(root ed25519.PublicKey, b []byte) (*KeySet, error) {
	rootID := KeyID(root)
	body, _, err := open(b, MaxKeySetSize, domainKeySet, func(kid string) (ed25519.PublicKey, bool) {
		return root, kid == rootID
	})
	if err != nil {
		return nil, fmt.Errorf("certs: key set: %w", err)
	}
	var ks KeySet
	if err := strictjson.Unmarshal(body, &ks); err != nil {
		return nil, fmt.Errorf("certs: key set body: %w: %v", ErrMalformed, err)
	}
	if err := ks.Validate(); err != nil {
		return nil, err
	}
	return &ks, nil
}

// AcceptKeySet opens a signed key set and accepts it only if its version is above current
// (0 when the device holds none yet). A set whose (unverified) version is not above current is
// refused with ErrNotNewer before its signature is checked: refusing trusts nothing, and every
// desired-state document carries the key set in force, so this is the common case.
func AcceptKeySet(root ed25519.PublicKey, b []byte, current uint64) (*KeySet, error) {
	if v, ok := peekKeySetVersion(b); ok && v <= current {
		return nil, fmt.Errorf("%w: version %d, holding %d", ErrNotNewer, v, current)
	}
	ks, err := OpenKeySet(root, b)
	if err != nil {
		return nil, err
	}
	if ks.Version <= current {
		return nil, fmt.Errorf("%w: version %d, holding %d", ErrNotNewer, ks.Version, current)
	}
	return ks, nil
}

// CheckBroker refuses a broker certificate the set retired: one issued before BrokerNotBefore.
// A nil set retires none.
func (ks *KeySet) CheckBroker(leaf *x509.Certificate) error {
	if ks == nil {
		return nil
	}
	return checkBrokerFloor(ks.BrokerNotBefore, leaf)
}

func checkBrokerFloor(floor int64, leaf *x509.Certificate) error {
	if floor != 0 && leaf.NotBefore.Unix() < floor {
		return fmt.Errorf("%w: serial %s issued %s, the key set accepts brokers issued from %s on",
			ErrRetiredBroker, leaf.SerialNumber.Text(16), leaf.NotBefore.UTC().Format(time.RFC3339), time.Unix(floor, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// IssuedTime returns the key set's issue time.
func (ks *KeySet) IssuedTime() time.Time { return time.Unix(ks.IssuedAt, 0) }

// Verifier checks signatures against a fixed set of trusted Ed25519 keys. Several keys may be
// trusted at once, so a signing key can be rotated without a gap. It is safe for concurrent use.
type Verifier struct {
	keys map[string]ed25519.PublicKey
}

// NewVerifier returns a verifier trusting keys. Keys whose id does not match are ignored.
func NewVerifier(keys ...PublicKey) *Verifier {
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(keys))}
	for _, k := range keys {
		if k.check() == nil {
			v.keys[k.ID] = ed25519.PublicKey(k.Key)
		}
	}
	return v
}

// Trusts reports whether kid is one of the verifier's keys.
func (v *Verifier) Trusts(kid string) bool { _, ok := v.keys[kid]; return ok }

func (v *Verifier) lookup(kid string) (ed25519.PublicKey, bool) {
	k, ok := v.keys[kid]
	return k, ok
}

// peekKeySetVersion reads a signed key set's version without checking its signature.
func peekKeySetVersion(b []byte) (uint64, bool) {
	if len(b) > MaxKeySetSize {
		return 0, false
	}
	var s signed
	if strictjson.Unmarshal(b, &s) != nil {
		return 0, false
	}
	body, err := base64.RawURLEncoding.DecodeString(s.Body)
	if err != nil {
		return 0, false
	}
	var v struct {
		Version uint64 `json:"version"`
	}
	if json.Unmarshal(body, &v) != nil {
		return 0, false
	}
	return v.Version, true
}
