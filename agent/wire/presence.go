package wire

import (
	"fmt"

	"github.com/camagent/camagent/internal/shape"
)

// Signer presence states (SignerPresence.State).
const (
	// SignerServing: the instance is running and answering requests.
	SignerServing = "serving"
	// SignerStopped: the instance stopped cleanly.
	SignerStopped = "stopped"
	// SignerLost: the instance's connection ended without it stopping (it crashed, was
	// killed, or its network was cut): its will, which the broker publishes. An instance
	// that comes back says SignerServing again at once. Where no will was left (a broker
	// that lost it), its last "serving" ages instead.
	SignerLost = "lost"
)

// MaxSignerPresenceEvery caps SignerPresence.Every, in seconds.
const MaxSignerPresenceEvery = 3600

// SignerNameRe is the shape of a signer instance's name (fleetctl serve --name).
var SignerNameRe = shape.New(`^[A-Za-z0-9._-]*$`, 1, 64)

// SignerPresence is what each signer instance keeps retained on fleet/signers/<instance>, for
// operators only: that it serves, since when, and when it last said so. Devices never see it.
type SignerPresence struct {
	V int `json:"v"`
	// Name is the instance's name (fleetctl serve --name).
	Name string `json:"name"`
	// State is SignerServing, SignerStopped or SignerLost.
	State string `json:"state"`
	// Since is when the instance started, Unix seconds by its clock.
	Since int64 `json:"since"`
	// At is when this message was sent, Unix seconds by its clock.
	At int64 `json:"at"`
	// Every is how many seconds apart a serving instance sends it.
	Every int64 `json:"every_s"`
}

// Validate checks every field's shape.
func (p *SignerPresence) Validate() error {
	switch {
	case p.V != Version:
		return fmt.Errorf("%w: version %d", ErrMalformed, p.V)
	case !SignerNameRe.MatchString(p.Name):
		return fmt.Errorf("%w: signer name %q", ErrMalformed, p.Name)
	case p.State != SignerServing && p.State != SignerStopped && p.State != SignerLost:
		return fmt.Errorf("%w: signer state %q", ErrMalformed, p.State)
	case p.Since <= 0 || p.At < p.Since:
		return fmt.Errorf("%w: since %d, at %d", ErrMalformed, p.Since, p.At)
	case p.Every < 1 || p.Every > MaxSignerPresenceEvery:
		return fmt.Errorf("%w: every_s %d", ErrMalformed, p.Every)
	}
	return nil
}
