package relay

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

// The files of a viewer identity directory (camview enroll). The key never leaves it; the
// CSR and the bundle are public.
const (
	IdentityKeyFile    = "viewer.key"
	IdentityCSRFile    = "viewer.csr"
	IdentityBundleFile = "viewer.json"
	// IdentityKeySetFile holds the newest key set the relay learnt from the broker
	// (topic.FleetKeySet), signed by the fleet root of its bundle, when it is newer than the
	// bundle's. It is public.
	IdentityKeySetFile = "keyset.json"
)

// Identity is a viewer relay identity of its own: a key made on this machine and the viewer
// bundle fleetctl viewer wrote for it. Dialing with it needs no fleet directory.
type Identity struct {
	Dir    string
	Key    crypto.Signer
	Bundle *certs.VerifiedViewerBundle

	keySets keySets // the newest of the bundle's and IdentityKeySetFile's; none without a root
}

// KeySet returns the newest key set the identity holds: its bundle's, or a newer one, signed
// by the bundle's root, that a relay dialed with it learnt from the broker since. It is nil for
// a bundle made before bundles carried a key set.
func (id *Identity) KeySet() *certs.KeySet { return id.keySets.get() }

// keepKeySet keeps the key set b, which the relay took from the broker, in
// IdentityKeySetFile, so that the relay still has it after a restart.
func (id *Identity) keepKeySet(b []byte, ks *certs.KeySet) error {
	if err := atomicfile.WriteFile(filepath.Join(id.Dir, IdentityKeySetFile), b, 0o644); err != nil {
		return fmt.Errorf("relay: keep key set v%d in %s: %w", ks.Version, id.Dir, err)
	}
	return nil
}

// loadKeySet sets the identity's key set: the bundle's, or the one in IdentityKeySetFile when
// the bundle's root signed it and it is newer.
func (id *Identity) loadKeySet() error {
	id.keySets.root, id.keySets.ks = ed25519.PublicKey(id.Bundle.Bundle.Root), id.Bundle.KeySet
	if id.keySets.ks == nil {
		return nil
	}
	path := filepath.Join(id.Dir, IdentityKeySetFile)
	b, err := cappedfile.Read(path, certs.MaxKeySetSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	ks, err := certs.OpenKeySet(ed25519.PublicKey(id.Bundle.Bundle.Root), b)
	if err != nil {
		return fmt.Errorf("relay: %s: %w (remove it: the relay then starts from its bundle's key set and reads the fleet's from the broker)", path, err)
	}
	if ks.Version > id.keySets.ks.Version {
		id.keySets.ks = ks
	}
	return nil
}

// Name is the <name> of the identity viewer:<name>.
func (id *Identity) Name() string { return id.Bundle.Name }

// EnrollIdentity makes dir (0700) and its key (0600) unless the key exists already, and writes
// the CSR of viewer:<name> for that key to dir/viewer.csr, for `fleetctl viewer --csr`. It
// returns the CSR's path.
func EnrollIdentity(dir, name string) (string, error) {
	identity, err := certs.IdentityFor(certs.RoleViewer, name)
	if err != nil {
		return "", fmt.Errorf("relay: viewer name: %w", err)
	}
	if err := atomicfile.EnsurePrivateDir(dir); err != nil {
		return "", fmt.Errorf("relay: %w", err)
	}
	keyPath := filepath.Join(dir, IdentityKeyFile)
	key, err := certs.LoadKeyFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		if key, err = certs.GenerateKey(); err != nil {
			return "", fmt.Errorf("relay: %w", err)
		}
		if err := certs.WriteKeyFile(keyPath, key); err != nil {
			return "", fmt.Errorf("relay: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("relay: %w", err)
	}
	csr, err := certs.NewCSR(key, identity)
	if err != nil {
		return "", fmt.Errorf("relay: %w", err)
	}
	csrPath := filepath.Join(dir, IdentityCSRFile)
	if err := atomicfile.WriteFile(csrPath, csr, 0o644); err != nil {
		return "", fmt.Errorf("relay: %w", err)
	}
	return csrPath, nil
}

// InstallIdentity checks the viewer bundle b against dir's key (it must be the certificate of
// that key, chaining to the bundle's CA, valid now, for a viewer identity, with an mqtts
// broker) and installs it as dir/viewer.json.
func InstallIdentity(dir string, b []byte, now time.Time) (*Identity, error) {
	id, err := checkIdentity(dir, b, now)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, IdentityBundleFile), b, 0o644); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if err := id.loadKeySet(); err != nil {
		// A key set learnt under another fleet root (the relay moved fleets): the new
		// bundle's is the one to start from.
		if err := os.Remove(filepath.Join(dir, IdentityKeySetFile)); err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		id.keySets.ks = id.Bundle.KeySet
	}
	return id, nil
}

// LoadIdentity loads the identity installed in dir and checks it as InstallIdentity did, at
// now: an expired certificate is an error that says what to do.
func LoadIdentity(dir string, now time.Time) (*Identity, error) {
	b, err := cappedfile.Read(filepath.Join(dir, IdentityBundleFile), certs.MaxViewerBundleSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("relay: %s holds no viewer bundle: make the key and CSR with camview enroll --identity %s --name NAME, have the CSR signed with fleetctl viewer --csr %s, then run camview enroll --identity %s --bundle FILE", dir, dir, filepath.Join(dir, IdentityCSRFile), dir)
	}
	if err != nil {
		return nil, fmt.Errorf("relay: viewer identity: %w", err)
	}
	id, err := checkIdentity(dir, b, now)
	if errors.Is(err, certs.ErrExpired) {
		return nil, fmt.Errorf("%w; make a new CSR with camview enroll and have it signed with fleetctl viewer", err)
	}
	if err != nil {
		return nil, err
	}
	if err := id.loadKeySet(); err != nil {
		return nil, err
	}
	return id, nil
}

// checkIdentity checks the viewer bundle b against dir's key at now.
func checkIdentity(dir string, b []byte, now time.Time) (*Identity, error) {
	key, err := certs.LoadKeyFile(filepath.Join(dir, IdentityKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("relay: %s has no viewer key: run camview enroll --identity %s --name NAME first", dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	bu, err := certs.ParseViewerBundle(b)
	if err != nil {
		return nil, fmt.Errorf("relay: viewer bundle: %w", err)
	}
	vb, err := bu.Verify(key, now)
	if err != nil {
		return nil, fmt.Errorf("relay: viewer identity in %s: %w", dir, err)
	}
	return &Identity{Dir: dir, Key: key, Bundle: vb}, nil
}

// DialIdentity connects a relay as id, to brokerOverride or else the bundle's broker. When the
// bundle carries the fleet's root key, the relay also reads the key set operators publish on
// topic.FleetKeySet after a breach: a newer one the root signed becomes id.KeySet (kept in
// IdentityKeySetFile when it can be) and is handed to onKeySet, if not nil. A broker whose ACL
// does not let the relay read that topic is logged, and the relay goes on without it. The
// relay refuses a broker whose certificate id.KeySet retired (certs.KeySet.BrokerNotBefore),
// and when a set it learns retires the broker it is connected to, it disconnects and connects
// again (Config.BrokerFloor). log may be nil.
func DialIdentity(ctx context.Context, id *Identity, brokerOverride string, log *slog.Logger, onKeySet func(*certs.KeySet)) (*Relay, error) {
	cert, err := certs.TLSCertificate(id.Bundle.Cert, id.Key)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	broker, host := id.Bundle.Bundle.Broker, id.Bundle.ServerName
	if brokerOverride != "" {
		if host, err = certs.BrokerHost(brokerOverride); err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
		broker = brokerOverride
	}
	return id.keySets.dial(ctx, Config{
		BrokerURL: broker,
		TLS:       certs.ClientTLSConfig(id.Bundle.Pool, host, certs.NewHolder(cert)),
		ClientID:  fleet.ClientID(id.Bundle.Bundle.Identity),
		Logger:    log,
	}, id.keepKeySet, onKeySet)
}
