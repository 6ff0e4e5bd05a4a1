package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// flipInPEM flips the bits of mask in the byte at index at(der) of the DER inside the PEM file
// p, as a storage fault would: the file still decodes.
func flipInPEM(t *testing.T, p string, at func(der []byte) int, mask byte) {
	t.Helper()
	blk, _ := pem.Decode(mustRead(t, p))
	if blk == nil {
		t.Fatalf("%s holds no PEM", p)
	}
	i := at(blk.Bytes)
	if i < 0 {
		t.Fatalf("%s: the byte to flip is not there", p)
	}
	blk.Bytes[i] ^= mask
	if err := os.WriteFile(p, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
}

// flipInKey flips one bit inside the private scalar of the key file p: the key still loads,
// and is another key.
func flipInKey(t *testing.T, p string) {
	t.Helper()
	k, err := certs.LoadKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	flipInPEM(t, p, func(der []byte) int { return bytes.Index(der, d) + 10 }, 0x04)
	if _, err := certs.LoadKeyFile(p); err != nil {
		t.Fatalf("the key no longer loads: %v", err)
	}
}

// A key or certificate a storage fault changed by one bit loads and parses: the agent must
// see it is damaged and replace it through the bootstrap identity, as it does a truncated
// one (TestADamagedActiveCredentialIsReplacedThroughTheBootstrapIdentity). Before, a rotated
// generation's certificate was not checked against the fleet CA when loaded, and one whose
// NotBefore a bit moved ten years ahead kept the agent waiting for its clock, never
// connecting; and a key that no longer matched its certificate was taken for an interrupted
// re-enrollment, which made New fail at every start: a camera restarting for good.
func TestAKeyOrCertificateWithABitFlippedIsReplacedThroughTheBootstrapIdentity(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rotated bool // generation 1 is active, generation 0 wiped
		spoil   func(t *testing.T, dir string)
	}{
		{"a rotated generation's certificate valid from ten years later", true, func(t *testing.T, dir string) {
			p := filepath.Join(dir, credsDir, "1", certFile)
			c, err := certs.ParseCertPEM(mustRead(t, p))
			if err != nil {
				t.Fatal(err)
			}
			// The tens of the year in the UTCTime: '2' (0x32) becomes '3'.
			nb := []byte(c.NotBefore.UTC().Format("060102150405Z"))
			flipInPEM(t, p, func(der []byte) int { return bytes.Index(der, nb) }, 0x01)
			if c, err := certs.ParseCertPEM(mustRead(t, p)); err != nil || c.NotBefore.Year() < time.Now().Year()+9 {
				t.Fatalf("the certificate does not parse, or is valid from %v: %v", c.NotBefore, err)
			}
		}},
		{"a rotated generation's key with a bit flipped", true, func(t *testing.T, dir string) {
			flipInKey(t, filepath.Join(dir, credsDir, "1", KeyFile))
		}},
		{"the enrollment key with a bit flipped", false, func(t *testing.T, dir string) {
			flipInKey(t, filepath.Join(dir, KeyFile))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id = "cam-0001"
			pki := mqtttest.NewPKI(t)
			b := mqtttest.StartEmbedded(t, pki)
			now := time.Now()
			dir := enrolledWithBootstrap(t, pki, b.URL(), id, now, 0)
			active := uint64(0)
			if tc.rotated {
				active = 1
				writeGeneration(t, pki, dir, id, 1, now, 0)
				if err := wipeGeneration(dir, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: state.Cred{Active: active, Epoch: 1}}); err != nil {
				t.Fatal(err)
			}
			tc.spoil(t, dir)
			fullSigner(t, b, pki, id)

			log, rec := logtest.New()
			a, err := New(Config{StateDir: dir, Logger: log, SwitchTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second,
				RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
			if err != nil {
				t.Fatalf("the agent does not start: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			deadline := time.Now().Add(30 * time.Second)
			for st := a.Status(); a.Rotations() != 1 || !st.Connected; st = a.Status() {
				if time.Now().After(deadline) {
					t.Fatalf("no recovery; log:\n%s", rec.Text())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if c := a.Certificate(); certs.CertIdentity(c) != id {
				t.Fatalf("connected as %q", certs.CertIdentity(c))
			}
			got, err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Load()
			if err != nil || got.Cred.Phase != state.PhaseNone || got.Cred.Active != active+1 || got.Cred.Epoch != 1 {
				t.Fatalf("journal: %+v, %v", got.Cred, err)
			}
			if !strings.Contains(rec.Text(), "through the bootstrap identity") {
				t.Fatalf("did not go through the bootstrap identity; log:\n%s", rec.Text())
			}
		})
	}
}

// A state file a storage fault lost (its directory entry gone) is recovered from like a
// corrupt one when the device had written it: the floor file or a rotated generation shows it.
// Before, the agent started as a device enrolled a moment ago: generation 0 active, whose key
// a rotated device had wiped, so New failed at every start without a bootstrap identity (with
// one, the working generation was wiped as stale); command high-water mark 0; and grant epoch
// 0, honouring grants from before the last breach until the retained notice came again.
func TestALostStateFileIsRecoveredWhenTheDeviceHadWrittenOne(t *testing.T) {
	const id = "cam-0001"
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	now := time.Now()
	dir := enrolledWith(t, pki, b.URL(), id, now, 0, false)
	writeGeneration(t, pki, dir, id, 1, now, 0)
	if err := wipeGeneration(dir, 0); err != nil {
		t.Fatal(err)
	}
	hwm := uint64(now.UnixNano())
	store := state.NewFileStore(filepath.Join(dir, StateFile), nil)
	if err := store.Save(state.State{CommandHWM: hwm, DesiredEpoch: 3, Cred: state.Cred{Active: 1, Epoch: 3}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FloorFile), []byte(`{"v":1,"grant_epoch":3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, StateFile)); err != nil {
		t.Fatal(err)
	}

	log, rec := logtest.New()
	a, err := New(Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("the agent does not start: %v", err)
	}
	if !strings.Contains(rec.Text(), "state file is gone") {
		t.Errorf("the agent did not say the state file is gone; log:\n%s", rec.Text())
	}
	if g := a.GrantEpoch(); g != 3 {
		t.Errorf("grant epoch %d, want the floor's 3", g)
	}
	if m := a.state().CommandHWM; m < hwm {
		t.Errorf("command high-water mark %d, below the %d the device had", m, hwm)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-a.Connected():
	case <-time.After(30 * time.Second):
		t.Fatalf("never connected; log:\n%s", rec.Text())
	}
	if c := a.Certificate(); certs.CertIdentity(c) != id {
		t.Fatalf("connected as %q", certs.CertIdentity(c))
	}
	if got, err := store.Load(); err != nil || got.Cred.Active != 1 {
		t.Fatalf("journal: %+v, %v", got.Cred, err)
	}
}
