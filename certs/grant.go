package certs

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/camagent/camagent/internal/strictjson"

	"github.com/camagent/camagent/internal/shape"
)

// MaxGrantSize caps a signed grant accepted from outside.
const MaxGrantSize = 4 << 10

// MaxGrantLifetime caps ExpiresAt-IssuedAt of a grant.
const MaxGrantLifetime = 30 * 24 * time.Hour

// ErrOldEpoch reports a grant issued for an epoch below the device's current one: it was
// voided by a credential rotation (S7).
var ErrOldEpoch = errors.New("certs: grant from an older epoch")

// Grant scopes.
const (
	ScopeView        = "view"        // watch live video
	ScopeIntegration = "integration" // a voice assistant or other integration
	ScopeOwner       = "owner"       // the owner's own controls (privacy mode)
)

var (
	scopes    = map[string]bool{ScopeView: true, ScopeIntegration: true, ScopeOwner: true}
	subjectRe = shape.New(`^[A-Za-z0-9._:-]*$`, 1, 64)
)

// Grant lets a viewer or an integration use one device, for one scope, until it expires or
// the device's epoch passes it. It is signed by a grant key of the fleet's key set.
type Grant struct {
	// Device is the device id the grant is for.
	Device string `json:"device"`
	// Epoch is the device's grant epoch the grant was issued under.
	Epoch uint64 `json:"epoch"`
	// Scope is one of the Scope constants.
	Scope string `json:"scope"`
	// Subject is an opaque id of the viewer or integration (never an email or a name).
	Subject string `json:"sub"`
	// IssuedAt and ExpiresAt are Unix seconds.
	IssuedAt  int64 `json:"iat"`
	ExpiresAt int64 `json:"exp"`
}

func (g *Grant) validate() error {
	if err := ValidDeviceID(g.Device); err != nil {
		return fmt.Errorf("%w: grant device: %v", ErrMalformed, err)
	}
	if !scopes[g.Scope] {
		return fmt.Errorf("%w: grant scope %q", ErrMalformed, g.Scope)
	}
	if !subjectRe.MatchString(g.Subject) {
		return fmt.Errorf("%w: grant subject %q", ErrMalformed, g.Subject)
	}
	if !lifetimeWithin(g.IssuedAt, g.ExpiresAt, MaxGrantLifetime) {
		return fmt.Errorf("%w: grant lifetime %d..%d", ErrMalformed, g.IssuedAt, g.ExpiresAt)
	}
	return nil
}

// Expiry returns the grant's expiry time.
func (g *Grant) Expiry() time.Time { return time.Unix(g.ExpiresAt, 0) }

// SignGrant signs g with a grant key.
func SignGrant(k *SigningKey, g Grant) ([]byte, error) {
	if err := g.validate(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal grant: %w", err)
	}
	return seal(k, domainGrant, body)
}

// OpenGrant verifies a signed grant against the trusted grant keys.
func OpenGrant(v *Verifier, b []byte) (*Grant, error) {
	body, _, err := open(b, MaxGrantSize, domainGrant, v.lookup)
	if err != nil {
		return nil, fmt.Errorf("certs: grant: %w", err)
	}
	var g Grant
	if err := strictjson.Unmarshal(body, &g); err != nil {
		return nil, fmt.Errorf("certs: grant body: %w: %v", ErrMalformed, err)
	}
	if err := g.validate(); err != nil {
		return nil, err
	}
	return &g, nil
}

// GrantExpiryUnverified returns the expiry a signed grant states, without checking its
// signature or anything else about it. It is for bookkeeping that trusts nothing in it: a
// relay that bounds how long it remembers a session the camera accepted the grant for (the
// camera ends the session at that expiry). Never for deciding to serve.
func GrantExpiryUnverified(b []byte) (time.Time, error) {
	body, err := openUnverified(b, MaxGrantSize)
	if err != nil {
		return time.Time{}, fmt.Errorf("certs: grant: %w", err)
	}
	var g Grant
	if err := strictjson.Unmarshal(body, &g); err != nil {
		return time.Time{}, fmt.Errorf("certs: grant body: %w: %v", ErrMalformed, err)
	}
	if err := g.validate(); err != nil {
		return time.Time{}, err
	}
	return g.Expiry(), nil
}

// GrantDigest returns the SHA-256 of a signed grant's body. It is the same for every spelling
// of one signed grant (its envelope's JSON and base64 can be written many ways without
// touching the signature) and differs between grants. It checks nothing: it is for
// bookkeeping of grants checked otherwise, such as a relay counting one grant's offers.
func GrantDigest(b []byte) ([32]byte, error) {
	body, err := openUnverified(b, MaxGrantSize)
	if err != nil {
		return [32]byte{}, fmt.Errorf("certs: grant: %w", err)
	}
	return sha256.Sum256(body), nil
}

// CheckGrant checks an opened grant for device at epoch, for scope, at now (with ClockSkew).
func CheckGrant(g *Grant, device string, epoch uint64, scope string, now time.Time) error {
	if g.Device != device {
		return fmt.Errorf("%w: grant for %q, this is %q", ErrWrongTarget, g.Device, device)
	}
	if g.Scope != scope {
		return fmt.Errorf("certs: grant scope %q, need %q", g.Scope, scope)
	}
	if g.Epoch < epoch {
		return fmt.Errorf("%w: grant epoch %d, device epoch %d", ErrOldEpoch, g.Epoch, epoch)
	}
	if now.Add(ClockSkew).Before(time.Unix(g.IssuedAt, 0)) {
		return fmt.Errorf("%w: grant issued at %d", ErrNotYetValid, g.IssuedAt)
	}
	if now.Add(-ClockSkew).After(g.Expiry()) {
		return fmt.Errorf("%w: grant expired at %s", ErrExpired, g.Expiry().UTC().Format(time.RFC3339))
	}
	return nil
}
