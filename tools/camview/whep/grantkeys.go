package whep

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock"
)

// Reload intervals of GrantKeys.
const (
	// unknownKeyReload is the shortest time between two loads for a grant signed by a key
	// the relay does not trust: one just made by `fleetctl keys rotate`, or a made-up one.
	unknownKeyReload = 5 * time.Second
	// keysMaxAge is how long loaded keys are used before they are loaded again, so that a
	// key a rotation dropped stops being taken here too.
	keysMaxAge = time.Minute
)

// GrantKeys checks view grants against a fleet's grant keys, for Config.CheckGrant. It loads
// them again at most every minute, and at most every 5 s for a grant signed by a key it does
// not trust, so grants signed after `fleetctl keys rotate` are taken without a restart and
// grants of a dropped key are refused within a minute. Its methods are safe for concurrent
// use.
type GrantKeys struct {
	load  func() (*certs.Verifier, error)
	clock clock.Clock
	log   *slog.Logger

	mu      sync.Mutex
	v       *certs.Verifier
	loaded  time.Time // when the last load started
	loading bool      // a load is under way
}

// NewGrantKeys loads the grant keys with load, which it calls again to reload them. clk nil
// means the system clock, log nil discards the reload failures it would log.
func NewGrantKeys(load func() (*certs.Verifier, error), clk clock.Clock, log *slog.Logger) (*GrantKeys, error) {
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v, err := load()
	if err != nil {
		return nil, err
	}
	return &GrantKeys{load: load, clock: clk, log: log, v: v, loaded: clk.Now()}, nil
}

// Check opens grant with the fleet's grant keys and checks it is a view grant for device,
// valid now (with certs.ClockSkew). It does not know the camera's epoch: the camera checks
// that. The errors are ErrNotViewGrant for another scope, and certs' (ErrMalformed,
// ErrUnknownKey, ErrBadSignature, ErrWrongTarget, ErrExpired, …), which name fields, never the
// grant's bytes.
func (k *GrantKeys) Check(device string, grant []byte) error {
	g, err := certs.OpenGrant(k.verifier(false), grant)
	if errors.Is(err, certs.ErrUnknownKey) {
		g, err = certs.OpenGrant(k.verifier(true), grant)
	}
	if err != nil {
		return err
	}
	if g.Scope != certs.ScopeView {
		return fmt.Errorf("%w: scope %q", ErrNotViewGrant, g.Scope)
	}
	return certs.CheckGrant(g, device, 0, certs.ScopeView, k.clock.Now())
}

// Stale marks the keys loaded so far as out of date: the next Check loads them again first.
// For a relay that learnt of a new key set.
func (k *GrantKeys) Stale() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.loaded = time.Time{}
}

// verifier returns the keys, loaded again first if they are older than keysMaxAge, or than
// unknownKeyReload when unknown is true. One caller loads while the others go on with the keys
// loaded before; a failed load keeps them.
func (k *GrantKeys) verifier(unknown bool) *certs.Verifier {
	k.mu.Lock()
	now := k.clock.Now()
	age := now.Sub(k.loaded)
	if k.loading || age < keysMaxAge && (!unknown || age < unknownKeyReload) {
		v := k.v
		k.mu.Unlock()
		return v
	}
	k.loaded, k.loading = now, true
	k.mu.Unlock()

	v, err := k.load()

	k.mu.Lock()
	defer k.mu.Unlock()
	k.loading = false
	if err != nil {
		k.log.Warn("whep: the grant keys could not be loaded again; keeping those loaded before", "err", err)
		return k.v
	}
	k.v = v
	return v
}
