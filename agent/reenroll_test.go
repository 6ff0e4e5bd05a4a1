package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
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
	csrPEM, err := Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := certs.ParseCSR(csrPEM)
	c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, CSR: csr, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	var bu certs.Bundle
	if err := json.Unmarshal(old, &bu); err != nil {
		t.Fatal(err)
	}
	bu.CertPEM = string(certs.EncodeCertPEM(c))
	nb, _ := json.Marshal(bu)
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
