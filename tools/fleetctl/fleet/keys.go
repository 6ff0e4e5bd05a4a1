package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
)

// ErrPendingKeySet reports a `keys rotate` when a key set it made earlier was never published.
var ErrPendingKeySet = errors.New("fleet: a newer key set is already waiting to be published")

// RootKeyPath is where `fleetctl init` put the offline root key.
func (f *Fleet) RootKeyPath() string { return filepath.Join(f.Dir, rootKeyFile) }

// LoadRootKey reads the offline root key from path (RootKeyPath if it was not moved) and
// checks that it is this fleet's root: the one whose public half devices pin.
func (f *Fleet) LoadRootKey(path string) (*certs.SigningKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("fleet: offline root key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("fleet: offline root key %s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fleet: offline root key: %w", err)
	}
	k, err := certs.ParseSigningKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("fleet: offline root key %s: %w", path, err)
	}
	if !bytes.Equal(k.Public().Key, f.root) {
		return nil, fmt.Errorf("fleet: %s is not this fleet's root key (%s)", path, certs.KeyID(f.root))
	}
	return k, nil
}

// RotateKeys is RotateKeysWith with the options' Drop only: the broker floor is carried
// forward.
func (f *Fleet) RotateKeys(root *certs.SigningKey, drop []string, now time.Time) (string, *certs.KeySet, error) {
	return f.RotateKeysWith(root, RotateOptions{Drop: drop}, now)
}

// RotateOptions configures RotateKeysWith.
type RotateOptions struct {
	// Drop lists ids of command or grant keys of the set in force to leave out; nil: none.
	Drop []string
	// RetireBrokers makes the new set's broker floor (certs.KeySet.BrokerNotBefore) the
	// NotBefore of the fleet directory's broker certificate (broker/server.crt), so that
	// every broker certificate issued before it is retired. It is refused unless that
	// certificate is newer than the floor of the set in force (run ReplaceBroker first).
	// False carries the floor of the set in force forward.
	RetireBrokers bool
}

// RotateKeysWith makes the next key set: a new command key and a new grant key (written to
// keys/, 0600), added to the keys of the set in force except those in o.Drop, with version+1
// and the broker floor of the set in force (or, with o.RetireBrokers, that of the broker
// certificate in the fleet directory: never lower), signed by root. It writes the signed set
// to keysets/keyset-v<N>.json and returns that path and the set. The set in force does not
// change: `fleetctl breach --keyset` publishes the new one to the fleet and then installs it
// (InstallKeySet), so nothing is signed with a key devices cannot know yet.
func (f *Fleet) RotateKeysWith(root *certs.SigningKey, o RotateOptions, now time.Time) (string, *certs.KeySet, error) {
	drop := o.Drop
	if !bytes.Equal(root.Public().Key, f.root) {
		return "", nil, fmt.Errorf("fleet: keys rotate: %s is not this fleet's root key", root.ID())
	}
	cur := f.ks
	next := certs.KeySet{Version: cur.Version + 1, IssuedAt: now.Unix(), BrokerNotBefore: cur.BrokerNotBefore}
	if o.RetireBrokers {
		c, err := f.BrokerCertificate()
		if err != nil {
			return "", nil, fmt.Errorf("fleet: keys rotate --retire-brokers: %w", err)
		}
		nb := c.NotBefore.Unix()
		if c.NotBefore.After(now.Add(certs.Backdate)) {
			// Issued on a machine whose clock runs ahead: a floor in the future would retire
			// every broker certificate until that date, the one clients could be given too.
			return "", nil, fmt.Errorf("fleet: keys rotate --retire-brokers: the broker certificate in %s is valid only from %s, later than now (%s) on this machine: check the clocks of this machine and of the one that issued it; a floor in the future would cut every camera off every broker until then",
				filepath.Join(f.Dir, serverCert), c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if nb <= cur.BrokerNotBefore {
			return "", nil, fmt.Errorf("fleet: keys rotate --retire-brokers: the broker certificate in %s (serial %s, issued %s) is not newer than the floor of key set v%d (%s): a set with its floor would retire no broker certificate more, or the broker's own; run fleetctl replace broker first",
				filepath.Join(f.Dir, serverCert), c.SerialNumber.Text(16), c.NotBefore.UTC().Format(time.RFC3339), cur.Version, time.Unix(cur.BrokerNotBefore, 0).UTC().Format(time.RFC3339))
		}
		next.BrokerNotBefore = nb
	}
	path := filepath.Join(f.Dir, keySetsDir, PendingKeySetName(next.Version))
	if _, err := os.Stat(path); err == nil {
		return "", nil, fmt.Errorf("%w: %s (publish it with fleetctl breach --keyset, or remove it)", ErrPendingKeySet, path)
	}
	dropped := map[string]bool{}
	for _, kid := range drop {
		if !slices.ContainsFunc(cur.CommandKeys, func(k certs.PublicKey) bool { return k.ID == kid }) &&
			!slices.ContainsFunc(cur.GrantKeys, func(k certs.PublicKey) bool { return k.ID == kid }) {
			ids := func(keys []certs.PublicKey) string {
				var s []string
				for _, k := range keys {
					s = append(s, k.ID)
				}
				return strings.Join(s, " ")
			}
			// The operator has to learn the ids somewhere: keyset.json holds them only inside
			// its signed, encoded body.
			return "", nil, fmt.Errorf("fleet: keys rotate: --drop %s: no such key in key set v%d, whose command keys are %s and grant keys %s",
				kid, cur.Version, ids(cur.CommandKeys), ids(cur.GrantKeys))
		}
		dropped[kid] = true
	}
	keep := func(keys []certs.PublicKey) []certs.PublicKey {
		return slices.DeleteFunc(slices.Clone(keys), func(k certs.PublicKey) bool { return dropped[k.ID] })
	}
	if err := atomicfile.EnsurePrivateDir(filepath.Join(f.Dir, keySetsDir)); err != nil {
		return "", nil, fmt.Errorf("fleet: %w", err)
	}
	cmdKey, err := newKeyFile(f.Dir, "command")
	if err != nil {
		return "", nil, err
	}
	grantKey, err := newKeyFile(f.Dir, "grant")
	if err != nil {
		return "", nil, err
	}
	next.CommandKeys = append(keep(cur.CommandKeys), cmdKey.Public())
	next.GrantKeys = append(keep(cur.GrantKeys), grantKey.Public())
	b, err := certs.SignKeySet(root, next)
	if err != nil {
		return "", nil, fmt.Errorf("fleet: keys rotate: %w (drop old keys with --drop)", err)
	}
	if err := writeFile(f.Dir, filepath.Join(keySetsDir, filepath.Base(path)), b, 0o644); err != nil {
		return "", nil, err
	}
	return path, &next, nil
}

// OpenNewKeySet checks a signed key set for publication: signed by this fleet's root and newer
// than the set in force.
func (f *Fleet) OpenNewKeySet(b []byte) (*certs.KeySet, error) {
	ks, err := certs.AcceptKeySet(f.root, b, f.ks.Version)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return ks, nil
}

// PendingKeySetName is the name, under keysets/, of key set version v made by RotateKeys and
// not yet put in force.
func PendingKeySetName(v uint64) string { return "keyset-v" + strconv.FormatUint(v, 10) + ".json" }

// InstallKeySet makes a signed key set (checked as OpenNewKeySet does) the set in force:
// keyset.json is replaced atomically, and commands, desired state and grants are signed with
// its newest keys from now on. The pending copy under keysets/ is removed.
func (f *Fleet) InstallKeySet(b []byte) error {
	ks, err := f.OpenNewKeySet(b)
	if err != nil {
		return err
	}
	if err := writeFile(f.Dir, keySetFile, b, 0o644); err != nil {
		return err
	}
	f.keySet, f.ks = b, ks
	pending := filepath.Join(f.Dir, keySetsDir, PendingKeySetName(ks.Version))
	if err := os.Remove(pending); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fleet: %w", err)
	}
	return nil
}

// HoldsSigningKeys returns nil when keys/ holds a command key and a grant key that ks trusts,
// the keys this directory would sign with once ks is in force; else an error naming what is
// missing.
func (f *Fleet) HoldsSigningKeys(ks *certs.KeySet) error {
	for _, kind := range []string{"command", "grant"} {
		if _, err := f.signingKeyOf(ks, kind); err != nil {
			return err
		}
	}
	return nil
}

// KeySetBytes returns the signed key set in force, as devices receive it.
func (f *Fleet) KeySetBytes() []byte { return slices.Clone(f.keySet) }

// SignDesired signs a desired-state document. It embeds a key set — d.KeySet if set (a new
// key set being published), else the set in force — and signs with that set's newest command
// key: a device that missed a key-set rotation learns the set from any document it receives
// before it verifies the document (agent/desired.go). Version must be set (NextSeq).
func (f *Fleet) SignDesired(d certs.Desired) ([]byte, error) {
	ks := f.ks
	if len(d.KeySet) == 0 {
		d.KeySet = f.keySet
	} else {
		got, err := certs.OpenKeySet(f.root, d.KeySet)
		if err != nil {
			return nil, fmt.Errorf("fleet: desired state key set: %w", err)
		}
		ks = got
	}
	k, err := f.signingKeyOf(ks, "command")
	if err != nil {
		return nil, err
	}
	b, err := certs.SignDesired(k, d)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return b, nil
}

// SignGrant signs a viewer or integration grant with the newest grant key of the key set in
// force. The grant's Epoch must be the device's current epoch (from its retained state): a
// grant from an older epoch is refused by the device.
func (f *Fleet) SignGrant(g certs.Grant) ([]byte, error) {
	k, err := f.signingKeyOf(f.ks, "grant")
	if err != nil {
		return nil, err
	}
	b, err := certs.SignGrant(k, g)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return b, nil
}
