package relay

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/camagent/camagent/certs"
)

// keySets holds the newest key set a relay knows of its fleet, and takes from the broker
// (topic.FleetKeySet) a newer one that the fleet's root signed. Both kinds of relay use it: an
// identity relay (its bundle's root, kept in IdentityKeySetFile) and a fleet relay (the fleet
// directory's root, kept in memory). Its methods are safe for concurrent use.
type keySets struct {
	root ed25519.PublicKey // the fleet root that signs key sets; nil: none is taken

	mu sync.Mutex
	ks *certs.KeySet // nil: none held (a viewer bundle made before bundles carried one)
}

// get returns the key set held; nil if none.
func (h *keySets) get() *certs.KeySet {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ks
}

// accept takes the key set b, as published on topic.FleetKeySet, if h's root signed it and it
// is newer than the one held, and returns it. keep, if not nil, is then called with b and the
// set, under h's lock so that sets are kept in the order they were taken; its error comes back
// as keepErr, and the set is taken all the same. accept returns nil for a set that is not
// newer, and err for one it refuses.
func (h *keySets) accept(b []byte, keep func([]byte, *certs.KeySet) error) (ks *certs.KeySet, keepErr, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ks == nil || h.root == nil {
		return nil, nil, errors.New("relay: no fleet root key to check key sets with")
	}
	ks, err = certs.AcceptKeySet(h.root, b, h.ks.Version)
	if errors.Is(err, certs.ErrNotNewer) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("relay: key set from the broker: %w", err)
	}
	h.ks = ks
	if keep != nil {
		keepErr = keep(b, ks)
	}
	return ks, keepErr, nil
}

// dial dials a relay with cfg, whose BrokerFloor and OnKeySet it sets: the floor of the set
// held, and, when h holds one, the reading of newer sets from the broker (accept with keep).
// Each set taken is logged, raises the floor and goes to onKeySet, if not nil; a set refused
// is logged.
func (h *keySets) dial(ctx context.Context, cfg Config, keep func([]byte, *certs.KeySet) error, onKeySet func(*certs.KeySet)) (*Relay, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.BrokerFloor = new(certs.BrokerFloor)
	cfg.BrokerFloor.Set(h.get())
	if h.get() == nil {
		return Dial(ctx, cfg)
	}
	cfg.OnKeySet = func(b []byte) *certs.KeySet {
		ks, keepErr, err := h.accept(b, keep)
		if err != nil {
			log.Warn("relay: key set refused", "err", err)
			return nil
		}
		if ks == nil {
			return nil // the one it holds, or an older one
		}
		log.Info("relay: key set accepted", "version", ks.Version, "grant_keys", len(ks.GrantKeys))
		if keepErr != nil {
			log.Warn("relay: the key set is in use but could not be kept: after a restart the relay starts from the older one until the broker sends it again", "err", keepErr)
		}
		if onKeySet != nil {
			onKeySet(ks)
		}
		return ks
	}
	return Dial(ctx, cfg)
}
