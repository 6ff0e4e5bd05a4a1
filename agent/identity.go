package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
)

// Files in the state directory. The directory is 0700 and every file in it 0600 (but for
// LockFile, which holds a process id).
const (
	KeyFile    = "device.key"
	CSRFile    = "device.csr"
	BundleFile = "bundle.json"
	StateFile  = "state.json"
)

// ErrNotEnrolled reports a state directory without a key or bundle.
var ErrNotEnrolled = errors.New("agent: device is not enrolled")

// Enroll makes the device's private key, its device token and its bootstrap key (those that do
// not exist yet) and returns the enrollment request for id: two PEM CSRs, one for the device
// identity carrying the token's SHA-256, one for the bootstrap identity (used only to recover a
// device whose certificate expired or was revoked, R7). Keys and token are written 0600 in the
// 0700 state directory and never leave the device (S2); the request is written beside them as
// device.csr. Enrolling again with the same id reuses keys and token.
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
	th, err := tokenHash(stateDir, 0)
	if err != nil {
		if th, err = newToken(stateDir); err != nil {
			return nil, fmt.Errorf("agent: enroll: %w", err)
		}
	}
	bp := filepath.Join(stateDir, BootstrapKey)
	bkey, err := certs.LoadKeyFile(bp)
	if errors.Is(err, os.ErrNotExist) {
		if bkey, err = certs.GenerateKey(); err == nil {
			err = certs.WriteKeyFile(bp, bkey)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	csr, err := certs.NewCSRWithTokenHash(key, id, th)
	if err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	bid, _ := certs.IdentityFor(certs.RoleBootstrap, id)
	bcsr, err := certs.NewCSR(bkey, bid)
	if err != nil {
		return nil, fmt.Errorf("agent: enroll: %w", err)
	}
	csr = append(csr, bcsr...)
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
	if err := checkBootstrap(stateDir, vb); err != nil {
		return nil, fmt.Errorf("agent: install bundle: %w", err)
	}
	if err := restartJournal(stateDir, now); err != nil {
		return nil, fmt.Errorf("agent: install bundle: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(stateDir, BundleFile), bundle, 0o600); err != nil {
		return nil, fmt.Errorf("agent: install bundle: %w", err)
	}
	return vb, nil
}

// restartJournal makes the enrollment (generation 0) the active credential again in a device
// that rotated, or was rotating, before this enrollment: otherwise the agent would keep to the
// old generation and wipe the new key as a stale generation 0. The epoch and everything else
// the journal holds stay: grants voided before stay void (S7), commands seen stay refused.
// The old generations are wiped at the agent's next start (wipeStale). It runs before the
// bundle is written: killed in between, the old bundle is refused against the new key and
// installing the new one again finishes the job.
func restartJournal(stateDir string, now time.Time) error {
	store := state.NewFileStore(filepath.Join(stateDir, StateFile), func() time.Time { return now })
	st, err := store.Load()
	var ce *state.CorruptError
	switch {
	case errors.As(err, &ce):
		// The corrupt journal stays until saved over, and the agent would recover from it
		// the newest generation on disk, an old one, and wipe the new key as a stale
		// generation 0: the new enrollment is journaled here, with the values the agent's
		// own recovery uses (no command sequenced before now; the grant epoch of the floor).
		f, _ := readFloorFile(stateDir)
		return store.Save(state.State{CommandHWM: uint64(max(now.UnixNano(), 0)), Cred: state.Cred{Epoch: f.GrantEpoch}})
	case err != nil:
		return err
	case st.Cred == (state.Cred{Epoch: st.Cred.Epoch}):
		return nil
	}
	st.Cred = state.Cred{Epoch: st.Cred.Epoch}
	return store.Save(st)
}

// checkBootstrap checks the bundle's bootstrap certificate, if it has one, against the
// device's bootstrap key.
func checkBootstrap(stateDir string, vb *certs.VerifiedBundle) error {
	if vb.Bootstrap == nil {
		return nil
	}
	bkey, err := certs.LoadKeyFile(filepath.Join(stateDir, BootstrapKey))
	if err != nil {
		return fmt.Errorf("bootstrap key: %w", err)
	}
	if !certs.SamePublicKey(vb.Bootstrap, bkey) {
		return fmt.Errorf("bootstrap certificate: %w", certs.ErrKeyMismatch)
	}
	return nil
}

// identity is the device's loaded enrollment key and bundle.
type identity struct {
	bundle *certs.VerifiedBundle
}

func loadIdentity(stateDir string) (*identity, error) {
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
	vb, err := bu.Verify(nil, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", BundleFile, err)
	}
	return &identity{bundle: vb}, nil
}
