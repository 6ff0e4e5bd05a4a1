package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/agent/privacy/onboard"
	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/transport/mqtt/topic"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// LoadPrivacy registers the device's sensitive values, from the settings sealed in dir at
// onboarding, with g: the Wi-Fi network name, its passphrase and the camera's nickname. From
// then on g refuses any publish, and redacts any log line, that carries one of them in any
// common encoding (P1, P3). A device never onboarded has none and g is left empty. The claim
// token is not registered: it is the one value that is meant to reach the cloud.
func LoadPrivacy(dir string, g *egress.Guard) error {
	_, st, err := loadSettings(dir, false)
	if err != nil || st == nil {
		return err
	}
	setGuard(g, *st)
	return nil
}

func setGuard(g *egress.Guard, st seal.Settings) {
	g.Set(egress.KindSSID, nonEmpty(st.SSID)...)
	g.Set(egress.KindPassphrase, nonEmpty(st.Passphrase)...)
	g.Set(egress.KindNickname, nonEmpty(st.Nickname)...)
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// SettingsError reports sealed settings (or their device secret) that cannot be used: damaged,
// sealed under another secret, a secret others could read, or a format from a newer camagent.
// The agent runs on without them, so a camera whose settings broke still rotates in a breach
// (R6: never a crash loop): it cannot leak values it no longer knows, and it forwards no claim
// token. Onboarding again restores them.
type SettingsError struct {
	// Wiped reports that the secret and the sealed settings were removed (crypto-shredded):
	// everything but a format from a newer camagent, which is kept for that camagent.
	Wiped bool
	Err   error
}

func (e *SettingsError) Error() string {
	if e.Wiped {
		return "agent: sealed settings unusable, wiped (onboard the camera again): " + e.Err.Error()
	}
	return "agent: sealed settings unusable: " + e.Err.Error()
}

func (e *SettingsError) Unwrap() error { return e.Err }

// loadSettings opens the sealed settings; nil settings mean the device was never onboarded.
// Settings that cannot be used give a *SettingsError, after wiping them if repair is set (the
// caller holds the state directory: agent.New). Any other error (I/O, permissions of the
// directory) is returned as it is.
func loadSettings(dir string, repair bool) (*seal.Secret, *seal.Settings, error) {
	sec, err := seal.LoadSecret(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, unusableSettings(dir, err, repair)
	}
	if fi, err := os.Lstat(filepath.Join(dir, seal.SettingsFile)); err == nil && !fi.Mode().IsRegular() {
		// A directory (or anything else) where the file should be: reading it fails the
		// same way at every start, which is no I/O error to wait out.
		return nil, nil, unusableSettings(dir, fmt.Errorf("%w: %s is not a regular file (mode %s)", seal.ErrMalformed, seal.SettingsFile, fi.Mode()), repair)
	}
	st, err := seal.LoadSettings(dir, sec)
	if errors.Is(err, fs.ErrNotExist) {
		return sec, nil, nil
	}
	if err != nil {
		return nil, nil, unusableSettings(dir, err, repair)
	}
	return sec, &st, nil
}

func unusableSettings(dir string, err error, repair bool) error {
	switch {
	case errors.Is(err, seal.ErrVersion):
		return &SettingsError{Err: err}
	case errors.Is(err, seal.ErrBadSecret), errors.Is(err, seal.ErrOpen), errors.Is(err, seal.ErrMalformed):
		if !repair {
			return &SettingsError{Err: err}
		}
		if werr := seal.Wipe(dir); werr != nil {
			return fmt.Errorf("agent: sealed settings unusable (%w), and wiping them failed: %w", err, werr)
		}
		return &SettingsError{Wiped: true, Err: err}
	}
	return fmt.Errorf("agent: %w", err)
}

// Onboard seals the setup a phone app handed the camera into dir: the Wi-Fi network name and
// passphrase, the nickname and the time zone never leave the device; the opaque claim token is
// kept, sealed too, until the agent has forwarded it to the cloud once. Onboarding again
// replaces the settings. It does not need the device to be enrolled.
func Onboard(dir string, s onboard.Setup) error {
	if err := s.Validate(); err != nil {
		return err
	}
	sec, err := seal.LoadOrCreateSecret(dir)
	if err != nil {
		return fmt.Errorf("agent: onboard: %w", err)
	}
	return seal.SaveSettings(dir, sec, seal.Settings{
		SSID: s.SSID, Passphrase: s.Passphrase, Hidden: s.Hidden,
		Nickname: s.Nickname, TimeZone: s.TimeZone, Claim: s.Claim,
	})
}

// forwardClaim sends the onboarding claim token to the cloud once, in its typed message, then
// forgets it: the sealed settings are saved without it, so it is sent at most until the broker
// has acknowledged it once. It runs at every connect.
//
// It reads the sealed settings afresh rather than trusting those loaded at start: `camagent
// onboard` may have run since (the agent of a camera was already running when its owner set
// it up, or the owner onboarded again after a wrong Wi-Fi passphrase). The agent then forwards
// the new token, never the replaced one; it never writes the settings it started with back
// over the new ones; and its guard, which the CLI's log redaction shares, takes the new values
// (until this connect, a reload or a restart, only the old ones are guarded).
func (a *Agent) forwardClaim(ctx context.Context) {
	a.privMu.Lock()
	defer a.privMu.Unlock()
	sec, st, err := loadSettings(a.cfg.StateDir, true)
	if err != nil {
		a.log.Warn("could not read the sealed settings; the owner's claim token, if any, is not forwarded", "err", err)
		return
	}
	if st == nil {
		return
	}
	if a.settings == nil || *a.settings != *st {
		a.log.Info("the device was onboarded since the agent started; guarding the new values")
		setGuard(a.guard, *st)
		a.secret, a.settings = sec, st
	}
	if st.Claim == "" {
		return
	}
	m := &wire.Claim{V: wire.Version, Claim: st.Claim, Updated: a.clk.Now().Unix()}
	if err := a.publish(ctx, topic.Claim(a.DeviceID()), false, m); err != nil {
		a.log.Warn("could not forward the owner's claim token; will try at the next connect", "err", err)
		return
	}
	next := *st
	next.Claim = ""
	if err := seal.SaveSettings(a.cfg.StateDir, sec, next); err != nil {
		a.log.Error("could not forget the forwarded claim token", "err", err)
		return
	}
	a.settings = &next
	a.log.Info("forwarded the owner's claim token to the cloud", "claim", onboardClaimHash(m.Claim))
}

func onboardClaimHash(c string) string { return onboard.Setup{Claim: c}.ClaimHash() }

// Privacy reports whether privacy mode is on.
func (a *Agent) Privacy() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.privacyLocked()
}

// privacyLocked is Privacy with a.mu held.
func (a *Agent) privacyLocked() bool { return a.st.Privacy || a.privacyUnsaved }

// SetPrivacy turns privacy mode on or off, from the local switch or an owner's command. On,
// the camera stops (its source is closed, not merely muted), every live viewer session ends
// with "privacy" and new offers are refused until it is turned off. The setting is persisted,
// so a camera that reboots stays private; the cloud sees only the one boolean in the device
// state.
//
// Privacy never waits on the disk. Turned on, it takes effect even when it cannot be saved (a
// full or failing flash): SetPrivacy then returns the error, and a later SetPrivacy(true)
// tries the save again; meanwhile its marker (PrivacyMarkerFile, an empty file, which a full
// disk usually still takes) keeps it on across a restart. Turned off, it takes effect only once saved: failing, the camera
// stays private.
func (a *Agent) SetPrivacy(ctx context.Context, on bool, why string) error {
	a.privMu.Lock()
	defer a.privMu.Unlock()
	a.mu.Lock()
	saved, before := a.st.Privacy, a.privacyLocked()
	a.mu.Unlock()
	var saveErr, markErr error
	if on {
		// The marker first, whatever the state says: it may be the one record that lasts.
		if markErr = markPrivacy(a.cfg.StateDir); markErr != nil {
			a.log.Error("privacy mode is on, but its marker could not be written", "file", PrivacyMarkerFile, "err", markErr)
		}
	}
	if saved != on {
		saveErr = a.save(func(st *state.State) { st.Privacy = on })
		if saveErr != nil && !on {
			return fmt.Errorf("agent: privacy mode stays on: %w", saveErr)
		}
	}
	if !on {
		if err := unmarkPrivacy(a.cfg.StateDir); err != nil {
			// The state says off: this run streams, and the next start keeps privacy mode
			// on until it is turned off again.
			a.log.Error("privacy mode is off, but its marker could not be removed: the next start turns it on again", "file", PrivacyMarkerFile, "err", err)
		}
	}
	a.mu.Lock()
	a.privacyUnsaved = on && saveErr != nil
	a.mu.Unlock()
	switch {
	case saveErr != nil && markErr == nil:
		a.log.Error("privacy mode is on, but the state could not be saved; its marker keeps it on across a restart", "by", why, "file", PrivacyMarkerFile, "err", saveErr)
	case saveErr != nil:
		a.log.Error("privacy mode is on, but could not be saved: a restart before it is saved turns it off", "by", why, "err", saveErr)
	case before != on:
		a.log.Info("privacy mode", "on", on, "by", why)
	}
	a.applyPrivacy(on)
	if a.pub.Load() != nil {
		if err := a.publishState(ctx); err != nil {
			a.log.Warn("could not publish the device state", "err", err)
		}
	}
	if saveErr != nil {
		return fmt.Errorf("agent: privacy mode is on but not saved: %w", saveErr)
	}
	return nil
}

// PrivacyMarkerFile exists in the state directory while privacy mode is on: a second record
// of it beside state.json, so that privacy mode survives what leaves nothing of state.json to
// read (a directory or a link to nothing in its place, or the file gone), and a full disk,
// where an empty file can often still be made when state.json cannot be written again. Its
// content means nothing; anything there, even unreadable, keeps privacy mode on. It is made
// before the state says on and removed after the state says off, so a kill between the two
// leaves privacy mode on: a wrong "on" only keeps the camera stopped until its owner turns it
// off, where a wrong "off" would stream against their choice.
const PrivacyMarkerFile = "privacy.on"

// privacyMarked reports whether PrivacyMarkerFile is in dir; true too when that cannot be
// told (an I/O error).
func privacyMarked(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, PrivacyMarkerFile))
	return !errors.Is(err, fs.ErrNotExist)
}

// markPrivacy makes PrivacyMarkerFile in dir, durably.
func markPrivacy(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, PrivacyMarkerFile), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return atomicfile.SyncDir(dir)
}

// unmarkPrivacy removes PrivacyMarkerFile from dir, durably.
func unmarkPrivacy(dir string) error {
	if err := os.Remove(filepath.Join(dir, PrivacyMarkerFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return atomicfile.SyncDir(dir)
}

// applyPrivacy makes the video layer follow privacy mode.
func (a *Agent) applyPrivacy(on bool) {
	v := a.video.Load()
	if v == nil {
		return
	}
	v.gate.SetOpen(!on)
	if on {
		v.s.CloseAll(signal.ByePrivacy)
	}
}

// resetPatterns are what a factory reset removes from the state directory, as glob patterns,
// in order. A reset killed part way must not leave a device that comes back on its own: the
// bootstrap key goes before any credential (the agent would get a new one through it), and
// the bundle's copy before the bundle (the agent would write the bundle again from it).
var resetPatterns = []string{
	BootstrapKey, KeyFile, CSRFile, BundleCopyFile, BundleFile, StateFile, FloorFile, TokenFile, credsDir, PrivacyMarkerFile,
	StateFile + ".corrupt*", ".*.tmp*", ".tmp*",
}

// Reset wipes the device back to the factory: the device secret first (which makes every
// sealed value unreadable at once), then the sealed settings, the bootstrap and device keys,
// the bundle (its copy first), the journal, the device token and the certificates, in the
// order of resetPatterns. Afterwards the device cannot connect until it is enrolled again.
// The agent must not be running. Key files are overwritten with zeros before they are
// removed; on flash storage that is best effort (the sealed settings do not depend on it:
// their key is gone with the secret).
//
// It returns the names of files in dir it did not recognise and left alone.
func Reset(dir string) (left []string, err error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("agent: reset: %w", err)
	}
	var errs []error
	if err := seal.Wipe(dir); err != nil {
		errs = append(errs, err)
	}
	for _, p := range resetPatterns {
		paths, _ := filepath.Glob(filepath.Join(dir, p))
		for _, path := range paths {
			if err := shredTree(path); err != nil {
				errs = append(errs, err)
			}
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		errs = append(errs, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if e.Name() != LockFile { // the lock of whoever resets: it stays
			left = append(left, e.Name())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return left, fmt.Errorf("agent: reset: %w", err)
	}
	return left, nil
}

// shredTree zeroes and removes every key and token file at or under path (see shred).
func shredTree(path string) error {
	return filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && (strings.HasSuffix(p, ".key") || strings.HasSuffix(p, ".token")) {
			return shred(p)
		}
		return nil
	})
}
