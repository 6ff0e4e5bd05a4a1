package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/pem"
	"errors"
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

// flipNotBeforeDecade flips one bit in the certificate file p: the tens of its NotBefore's
// year, ten years later. It still parses.
func flipNotBeforeDecade(t *testing.T, p string) {
	t.Helper()
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
}

// A state file a storage fault lost (its directory entry gone) is recovered from like a
// corrupt one when the device had written it: the floor file or a rotated generation shows it.
// Before, the agent started as a device enrolled a moment ago: generation 0 active, whose key
// a rotated device had wiped, so New failed at every start without a bootstrap identity (with
// one, the working generation was wiped as stale); command high-water mark 0; and grant epoch
// 0, honouring grants from before the last breach until the retained notice came again.
func TestALostStateFileIsRecoveredWhenTheDeviceHadWrittenOne(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(p string) error
		says string
	}{
		{"gone", os.Remove, "state file is gone"},
		// Before, a symbolic link to nothing loaded as a device enrolled a moment ago.
		{"a link to nothing in its place", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Symlink(p+".gone", p)
		}, "state file was corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) { testLostStateFile(t, tc.lose, tc.says) })
	}
}

func testLostStateFile(t *testing.T, lose func(string) error, says string) {
	const id = "cam-0001"
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	now := time.Now()
	dir := enrolledWith(t, pki, b.URL(), id, now, 0, false)
	rotatedByHand(t, pki, dir, id, now)
	hwm := uint64(now.UnixNano())
	store := state.NewFileStore(filepath.Join(dir, StateFile), nil)
	if err := store.Save(state.State{CommandHWM: hwm, DesiredEpoch: 3, Cred: state.Cred{Active: 1, Epoch: 3}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FloorFile), []byte(`{"v":1,"grant_epoch":3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := lose(filepath.Join(dir, StateFile)); err != nil {
		t.Fatal(err)
	}

	log, rec := logtest.New()
	a, err := New(Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("the agent does not start: %v", err)
	}
	if !strings.Contains(rec.Text(), says) {
		t.Errorf("the agent did not say %q; log:\n%s", says, rec.Text())
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

// A state file that was not a regular file is moved away when found (state.FileStore.Load):
// a device killed before it saved the state it rebuilt, or whose disk was full, has no state
// file at its next start. The quarantined copy shows the device wrote one, and it is rebuilt
// again. Before, the device started as new: command mark 0, commands it ran accepted again.
func TestAStateFileMovedAsideIsRebuiltAgainAfterAKill(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	p := filepath.Join(f.dir, StateFile)
	hwm := uint64(time.Now().UnixNano())
	if err := state.NewFileStore(p, nil).Save(state.State{CommandHWM: hwm}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p, p); err != nil { // a loop
		t.Fatal(err)
	}
	var ce *state.CorruptError
	if _, err := state.NewFileStore(p, nil).Load(); !errors.As(err, &ce) { // and killed here
		t.Fatalf("Load = %v, want a CorruptError", err)
	}
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if m := a.state().CommandHWM; m < hwm {
		t.Fatalf("command mark %d, below the %d the device had; log:\n%s", m, hwm, rec.Text())
	}
	if !strings.Contains(rec.Text(), "state file is gone") {
		t.Errorf("the agent did not say the state file is gone; log:\n%s", rec.Text())
	}
}
