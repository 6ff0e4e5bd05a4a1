package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
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

// A camera that rotated (its enrollment key wiped, generation 1 active) and is enrolled again
// without a factory reset (back from repair, fleetctl enroll --reinstate) must start on the
// new enrollment: its journal must not keep it on the old generation and wipe the new key as
// a stale generation 0. Its grant epoch does not go back.
func TestEnrollingARotatedDeviceAgainStartsOnTheNewEnrollment(t *testing.T) {
	const id = "cam-0001"
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, id, time.Now())
	fullSigner(t, b, pki, id)
	cfg := Config{StateDir: dir, SwitchTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}

	// A real rotation to epoch 1: generation 1 active, generation 0 wiped.
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	commits := make(chan uint64, 4)
	a.OnCommit(func(e uint64) { commits <- e })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	<-a.Connected()
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	a.poke()
	deadline := time.Now().Add(30 * time.Second)
	for a.Rotations() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first rotation did not commit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if len(commits) != 1 || <-commits != 1 {
		t.Fatal("the commit hooks did not run once, for epoch 1, at the commit")
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); !os.IsNotExist(err) {
		t.Fatalf("the enrollment key after a rotation: %v", err)
	}

	// Enrolled again: a new key, a new certificate, a new bundle.
	c, nb := reenrollment(t, pki, dir, id, time.Now())
	if _, err := InstallBundle(dir, nb, time.Now()); err != nil {
		t.Fatal(err)
	}

	a2 := startAgent(t, cfg)
	select {
	case <-a2.Connected():
	case <-time.After(30 * time.Second):
		t.Fatal("the re-enrolled device did not connect")
	}
	if got := a2.Certificate().SerialNumber; got.Cmp(c.SerialNumber) != 0 {
		t.Errorf("connected with certificate %x, want the new enrollment's %x", got, c.SerialNumber)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil {
		t.Errorf("the new enrollment key: %v", err)
	}
	if e := a2.Epoch(); e != 1 {
		t.Errorf("epoch %d after re-enrollment, want 1: grants voided by the rotation stay void", e)
	}
}

// The same with the rotated camera's journal corrupt when it is enrolled again: it starts on
// the new enrollment, not on the newest old generation the agent would recover from the disk,
// and neither the commands it accepted nor the grants it voided come back. Before, the install
// moved the corrupt journal away, and the agent started from a zero State: command high-water
// mark 0, grant epoch 0.
func TestEnrollingARotatedDeviceWithACorruptJournalAgainStartsOnTheNewEnrollment(t *testing.T) {
	for name, spoil := range map[string]func(path string) error{
		"corrupt": func(p string) error { return os.WriteFile(p, []byte("{\x00garbage"), 0o600) },
		// Gone, beside the floor and the old generation: the agent recovers as from a
		// corrupt one (TestALostStateFileIsRecoveredWhenTheDeviceHadWrittenOne), so the
		// install journals the new enrollment as it does for a corrupt one.
		"gone": os.Remove,
	} {
		t.Run(name, func(t *testing.T) {
			const id = "cam-0001"
			pki := mqtttest.NewPKI(t)
			now := time.Now()
			fx := enrolledFleet(t, pki, closedPort(t), id, now, 0, true)
			writeGeneration(t, pki, fx.dir, id, 1, now, 0)
			if err := wipeGeneration(fx.dir, 0); err != nil {
				t.Fatal(err)
			}
			hwm := uint64(now.UnixNano())
			if err := state.NewFileStore(filepath.Join(fx.dir, StateFile), nil).Save(state.State{CommandHWM: hwm, DesiredEpoch: 1, Cred: state.Cred{Active: 1, Epoch: 1}}); err != nil {
				t.Fatal(err)
			}
			if _, err := New(Config{StateDir: fx.dir}); err != nil { // writes the floor
				t.Fatal(err)
			}
			if err := spoil(filepath.Join(fx.dir, StateFile)); err != nil {
				t.Fatal(err)
			}

			c, nb := reenrollment(t, pki, fx.dir, id, now)
			if _, err := InstallBundle(fx.dir, nb, time.Now()); err != nil {
				t.Fatal(err)
			}

			a, err := New(Config{StateDir: fx.dir})
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Certificate().SerialNumber; got.Cmp(c.SerialNumber) != 0 {
				t.Errorf("starts with certificate %x, want the new enrollment's %x", got, c.SerialNumber)
			}
			if _, err := os.Stat(filepath.Join(fx.dir, KeyFile)); err != nil {
				t.Errorf("the new enrollment key: %v", err)
			}
			if e := a.GrantEpoch(); e != 1 {
				t.Errorf("grant epoch %d after re-enrollment, want 1: grants voided by the rotation stay void", e)
			}
			cmd, _ := certs.SignCommand(fx.cmdKey, certs.Command{Type: "ping", Target: id, Seq: hwm, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
			a.handleCommand(context.Background(), "dev/"+id+"/down/cmd", cmd)
			if a.cmdsOK.Load() != 0 {
				t.Error("a command accepted before the re-enrollment was accepted again")
			}
		})
	}
}

// reenrollment enrolls id in dir again, as a person does: a new key and CSR (Enroll), a
// certificate for it from pki, issued at now, and the bundle in dir with that certificate. It
// returns the certificate and the new bundle, which the caller installs (or not).
func reenrollment(t *testing.T, pki *mqtttest.PKI, dir, id string, now time.Time) (*x509.Certificate, []byte) {
	t.Helper()
	csrPEM, err := Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := certs.ParseCSR(csrPEM)
	c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, CSR: csr, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	var bu certs.Bundle
	if err := json.Unmarshal(mustRead(t, filepath.Join(dir, BundleFile)), &bu); err != nil {
		t.Fatal(err)
	}
	bu.CertPEM = string(certs.EncodeCertPEM(c))
	nb, err := json.Marshal(bu)
	if err != nil {
		t.Fatal(err)
	}
	return c, nb
}

// `camagent enroll --id` on a camera that rotated makes a new enrollment key while its old
// bundle and generation stay in use until the new bundle is installed. An agent started in
// between (the service after a reboot) must keep that key: it is not a stale generation 0
// but the key of the request the operator took to fleetctl. Before, the agent wiped it and
// installing the bundle then failed with "no device key". A leftover enrollment key the
// installed bundle's certificate carries (a wipe killed half-way) is still wiped.
func TestAnEnrollmentWaitingForItsBundleKeepsItsKeyThroughAnAgentStart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		request func(t *testing.T, p string) // what happens to device.csr meanwhile
	}{
		{"its request whole", func(*testing.T, string) {}},
		// The request is not what tells: a fault in it must not cost the key.
		{"its request truncated", func(t *testing.T, p string) {
			if err := os.WriteFile(p, mustRead(t, p)[:100], 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"its request gone", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { testEnrollmentWaiting(t, tc.request) })
	}
}

func testEnrollmentWaiting(t *testing.T, request func(t *testing.T, p string)) {
	const id = "cam-0001"
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	now := time.Now()
	dir := enrolledOn(t, pki, b, id, now)
	rotatedByHand(t, pki, dir, id, now)
	if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: state.Cred{Active: 1, Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{StateDir: dir, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}

	c, nb := reenrollment(t, pki, dir, id, now)
	request(t, filepath.Join(dir, CSRFile))
	key := mustRead(t, filepath.Join(dir, KeyFile))
	log, rec := logtest.New()
	cfg.Logger = log
	_, stop := runFor(t, cfg)
	rec.WaitFor(t, 10*time.Second, "connected to broker")
	stop()
	if got, err := os.ReadFile(filepath.Join(dir, KeyFile)); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the waiting enrollment's key was not kept (%v); log:\n%s", err, rec.Text())
	}
	if !strings.Contains(rec.Text(), "waits for its bundle") {
		t.Errorf("the agent did not say an enrollment waits for its bundle; log:\n%s", rec.Text())
	}
	if _, err := InstallBundle(dir, nb, time.Now()); err != nil {
		t.Fatalf("the bundle of the waiting enrollment: %v", err)
	}
	a := startAgent(t, cfg)
	select {
	case <-a.Connected():
	case <-time.After(30 * time.Second):
		t.Fatal("the re-enrolled device did not connect")
	}
	if got := a.Certificate().SerialNumber; got.Cmp(c.SerialNumber) != 0 {
		t.Errorf("connected with certificate %x, want the new enrollment's %x", got, c.SerialNumber)
	}
}

// The enrollment key of the installed bundle, left by a wipe killed half-way through, is a
// stale generation 0 on a rotated device, and is wiped at start.
func TestALeftoverEnrollmentKeyOfTheInstalledBundleIsWiped(t *testing.T) {
	const id = "cam-0001"
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	now := time.Now()
	dir := enrolledOn(t, pki, b, id, now)
	writeGeneration(t, pki, dir, id, 1, now, 0) // generation 0 left in place
	if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: state.Cred{Active: 1, Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	if _, err := New(Config{StateDir: dir, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); !os.IsNotExist(err) {
		t.Fatalf("the stale enrollment key: %v; log:\n%s", err, rec.Text())
	}
}
