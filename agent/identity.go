package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/transport/mqtt"
)

// Files in the state directory. The directory is 0700 and every file in it 0600 (but for
// LockFile, which holds a process id).
const (
	KeyFile    = "device.key"
	CSRFile    = "device.csr"
	BundleFile = "bundle.json"
	StateFile  = "state.json"
	// BundleCopyFile is a second copy of BundleFile, the only record of the fleet CA, the
	// root key and the bootstrap certificate on the device: the agent starts from it when a
	// storage fault damaged or lost the first, and writes the first again from it (R6).
	BundleCopyFile = "bundle.copy.json"
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
	// Killed before this, the copy is the old bundle's (or none): the agent writes it again
	// from the bundle at its next start.
	if err := atomicfile.WriteFile(filepath.Join(stateDir, BundleCopyFile), bundle, 0o600); err != nil {
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
	case errors.As(err, &ce) || (err == nil && stateLost(stateDir)):
		// The corrupt journal stays until saved over (or the lost one stays lost), and the
		// agent would recover from it the newest generation on disk, an old one, and wipe
		// the new key as a stale generation 0: the new enrollment is journaled here, with
		// the values the agent's own recovery uses (no command sequenced before now; the
		// grant epoch of the floor; privacy mode on if the file says so).
		f, _ := readFloorFile(stateDir)
		return store.Save(state.State{CommandHWM: uint64(max(now.UnixNano(), 0)), Cred: state.Cred{Epoch: f.GrantEpoch}, Privacy: ce != nil && ce.Privacy})
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
	// raw is the bundle as read, from BundleFile or, when damaged is set, from BundleCopyFile.
	raw []byte
	// damaged is why BundleFile could not be used; nil when it was.
	damaged error
	// copied reports that BundleCopyFile holds raw.
	copied bool
	// disputed is the broker URL of a copy that verifies, holds the same enrollment (the same
	// certificate) and yet other bytes: a storage fault changed one of the two where no
	// signature covers it (the broker URL), and which one is not known. The copy is written
	// again only once a connection to the bundle's broker proved the bundle right, and the
	// bundle is written from the copy once a connection to the copy's broker proved the copy
	// right (Agent.brokerProven); "" when there is no such copy.
	disputed string
	// disputedRaw is that copy as read.
	disputedRaw []byte
}

// loadIdentity reads the bundle, or its copy when the bundle is damaged or gone. It writes
// nothing (ReadCredentials uses it beside a running agent): Agent.repairBundle does.
func loadIdentity(stateDir string) (*identity, error) {
	vb, raw, err := readBundle(filepath.Join(stateDir, BundleFile))
	cvb, craw, cerr := readBundle(filepath.Join(stateDir, BundleCopyFile))
	switch {
	case err == nil:
		id := &identity{bundle: vb, raw: raw, copied: cerr == nil && bytes.Equal(craw, raw)}
		if cerr == nil && !id.copied && bytes.Equal(cvb.Cert.Raw, vb.Cert.Raw) {
			// Not an enrollment killed between its two writes (InstallBundle): that copy
			// holds the certificate of an enrollment before.
			id.disputed, id.disputedRaw = cvb.Bundle.Broker, craw
		}
		return id, nil
	case cerr == nil:
		return &identity{bundle: cvb, raw: craw, damaged: err, copied: true}, nil
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: no %s in %s; install the bundle from fleetctl enroll", ErrNotEnrolled, BundleFile, stateDir)
	}
	return nil, err
}

// readBundle reads and checks the bundle at path.
func readBundle(path string) (*certs.VerifiedBundle, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	bu, err := certs.ParseBundle(b)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %s: %w", filepath.Base(path), err)
	}
	// Check at the certificate's own start: an expired certificate still loads, so the run loop
	// can say so and recover, instead of the agent crash-looping.
	vb, err := bu.Verify(nil, time.Time{})
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %s: %w", filepath.Base(path), err)
	}
	return vb, b, nil
}

// repairBundle writes again, from the bundle the agent loaded, a bundle file that was damaged
// or lost, and a copy that is missing, damaged or older (a device enrolled before the copy
// existed, or killed between the two writes of InstallBundle). A write that fails is logged:
// the agent runs on what it loaded, and the next start tries again.
func (a *Agent) repairBundle() {
	dir := a.cfg.StateDir
	if err := a.id.damaged; err != nil {
		a.log.Error("the enrollment bundle is damaged or gone; starting from its copy and writing it again", "err", err)
		if err := atomicfile.WriteFile(filepath.Join(dir, BundleFile), a.id.raw, 0o600); err != nil {
			a.log.Error("could not write the enrollment bundle again", "err", err)
		}
	}
	switch {
	case a.id.disputed != "":
		// Writing the copy over from the bundle would destroy the only good record when
		// the bundle is the damaged one (its broker URL: the camera could never connect).
		a.log.Error("the enrollment bundle and its copy hold the same enrollment but differ: a storage fault changed one of them; trying both brokers, and the one whose broker takes a connection is written over the other",
			"broker", a.id.bundle.Bundle.Broker, "copy_broker", a.id.disputed)
	case !a.id.copied:
		a.writeBundleCopy()
	}
}

// writeBundleCopy writes BundleCopyFile from the bundle loaded, and reports whether it did.
func (a *Agent) writeBundleCopy() bool {
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.StateDir, BundleCopyFile), a.id.raw, 0o600); err != nil {
		a.log.Error("could not write the copy of the enrollment bundle", "err", err)
		return false
	}
	return true
}

// brokerURLs returns the addresses to dial the broker at: Config.BrokerURL or the bundle's,
// and, when the bundle's copy is disputed, the copy's as a fallback; once a connection settled
// the dispute (brokerProven), only the address that took it. An address the MQTT client would
// refuse (a storage fault can leave one that still parses as a URL) is left out, so that a
// damaged bundle with a good copy still connects; error when none is left.
func (a *Agent) brokerURLs() (string, []string, error) {
	if won := a.brokerWon.Load(); won != nil {
		return *won, nil, nil
	}
	urls := []string{a.brokerURL()}
	if a.cfg.BrokerURL == "" && a.id.disputed != "" && a.id.disputed != a.id.bundle.Bundle.Broker {
		urls = append(urls, a.id.disputed)
	}
	var errs []error
	ok := urls[:0:0]
	for _, u := range urls {
		if err := mqtt.CheckBrokerURL(u); err != nil {
			errs = append(errs, err)
			continue
		}
		ok = append(ok, u)
	}
	if len(ok) == 0 {
		return "", nil, errors.Join(errs...)
	}
	return ok[0], ok[1:], nil
}

// brokerProven settles a disputed bundle once a connection shows which record holds the
// broker's address: made to the bundle's broker, it writes the copy again from the bundle;
// made to the copy's, it writes the bundle from the copy. Either is written at most once per
// agent, and only the first connection decides. A broker set in Config.BrokerURL proves only
// the record holding that same address.
func (a *Agent) brokerProven(ctx context.Context) {
	if a.id.disputed == "" {
		return
	}
	switch broker := mqtt.ConnectedBroker(ctx); broker {
	case a.id.bundle.Bundle.Broker:
		a.provenOnce.Do(func() {
			a.settleBroker(broker)
			if a.writeBundleCopy() {
				a.log.Info("the bundle's broker took a connection: wrote the copy of the enrollment bundle again from the bundle", "copy_broker_was", a.id.disputed)
			}
		})
	case a.id.disputed:
		a.provenOnce.Do(func() {
			a.settleBroker(broker)
			if err := atomicfile.WriteFile(filepath.Join(a.cfg.StateDir, BundleFile), a.id.disputedRaw, 0o600); err != nil {
				a.log.Error("the copy's broker took a connection, but the enrollment bundle could not be written again from its copy", "err", err)
				return
			}
			a.log.Info("the copy's broker took a connection: wrote the enrollment bundle again from its copy", "broker_was", a.id.bundle.Bundle.Broker, "broker", a.id.disputed)
		})
	}
}

// settleBroker makes broker, the address that took the first connection of a disputed
// bundle, the only one dialled from now on: by new clients (brokerURLs) and by the running
// ones, Run's and a bootstrap session's under way, which would otherwise still try the losing
// address after every failed attempt.
func (a *Agent) settleBroker(broker string) {
	a.brokerWon.Store(&broker)
	for _, p := range []*atomic.Pointer[mqtt.Client]{&a.mqttc, &a.bootc} {
		if c := p.Load(); c != nil {
			c.DialOnly(broker)
		}
	}
}
