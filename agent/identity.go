package agent

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
)

// Files in the state directory. The directory is 0700 and every file in it 0600.
const (
	KeyFile    = "device.key"
	CSRFile    = "device.csr"
	BundleFile = "bundle.json"
	StateFile  = "state.json"
)

// ErrNotEnrolled reports a state directory without a key or bundle.
var ErrNotEnrolled = errors.New("agent: device is not enrolled")

// Enroll makes the device's private key (if there is none yet) and returns a CSR for id. The
// key is written 0600 in the 0700 state directory and never leaves the device (S2); the CSR is
// written beside it and returned. Enrolling again with the same id reuses the key.
func Enroll(stateDir, id string) ([]byte, error) {
	if err := certs.ValidDeviceID(id); err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	if err := atomicfile.EnsurePrivateDir(stateDir); err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	kp := filepath.Join(stateDir, KeyFile)
	key, err := certs.LoadKeyFile(kp)
	if errors.Is(err, os.ErrNotExist) {
		if key, err = certs.GenerateKey(); err != nil {
			return nil, fmt.Errorf("agent: enroll: %w", err)
		}
		if err = certs.WriteKeyFile(kp, key); err != nil {
			return nil, fmt.Errorf("agent: enroll: %w", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	csr, err := certs.NewCSR(key, id)
	if err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(stateDir, CSRFile), csr, 0o600); err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	return csr, nil
}

// InstallBundle checks a bundle from `fleetctl enroll` against the device key and installs it.
// It refuses a bundle for another device or another key.
func InstallBundle(stateDir string, bundle []byte, now time.Time) (*certs.VerifiedBundle, error) {
	key, err := certs.LoadKeyFile(filepath.Join(stateDir, KeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no device key; run camagent enroll --id ID first", ErrNotEnrolled)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: install bundle: %w", err)
	}
	bu, err := certs.ParseBundle(bundle)
	if err != nil {
		return nil, fmt.Errorf("agent: install bundle: %w", err)
	}
	vb, err := bu.Verify(key, now)
	if err != nil {
		return nil, fmt.Errorf("agent: install bundle: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(stateDir, BundleFile), bundle, 0o600); err != nil {
		return nil, fmt.Errorf("agent: install bundle: %w", err)
	}
	return vb, nil
}

// identity is the device's loaded key and bundle.
type identity struct {
	key    crypto.Signer
	bundle *certs.VerifiedBundle
}

func loadIdentity(stateDir string) (*identity, error) {
	key, err := certs.LoadKeyFile(filepath.Join(stateDir, KeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s; run camagent enroll", ErrNotEnrolled, KeyFile, stateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(stateDir, BundleFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s; install the bundle from fleetctl enroll", ErrNotEnrolled, BundleFile, stateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	bu, err := certs.ParseBundle(b)
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", BundleFile, err)
	}
	// Check at the certificate's own start: an expired certificate still loads, so the run loop
	// can say so and recover, instead of the agent crash-looping.
	vb, err := bu.Verify(key, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", BundleFile, err)
	}
	return &identity{key: key, bundle: vb}, nil
}
