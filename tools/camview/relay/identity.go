package relay

import (
	"context"
	"crypto"
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
)

// Identity is a viewer relay identity of its own: a key made on this machine and the viewer
// bundle fleetctl viewer wrote for it. Dialing with it needs no fleet directory.
type Identity struct {
	Dir    string
	Key    crypto.Signer
	Bundle *certs.VerifiedViewerBundle
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
	return id, err
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

// DialIdentity connects a relay as id, to brokerOverride or else the bundle's broker.
func DialIdentity(ctx context.Context, id *Identity, brokerOverride string, log *slog.Logger) (*Relay, error) {
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
	return Dial(ctx, Config{
		BrokerURL: broker,
		TLS:       certs.ClientTLSConfig(id.Bundle.Pool, host, certs.NewHolder(cert)),
		ClientID:  fleet.ClientID(id.Bundle.Bundle.Identity),
		Logger:    log,
	})
}
