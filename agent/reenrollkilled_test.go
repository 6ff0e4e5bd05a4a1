package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// InstallBundle journals the new enrollment before it writes the bundle: killed in between,
// the old bundle is left beside the new enrollment key, and installing the new bundle again
// must finish the job (restartJournal). The agent started meanwhile (the service, after the
// power came back) must not take that mismatch for a damaged file and get a new credential
// through the bootstrap identity: its commit would wipe the new enrollment key, and the new
// bundle could never be installed.
func TestAReenrollmentKilledBeforeItsBundleIsWrittenIsFinishedByInstallingItAgain(t *testing.T) {
	const id = "cam-0001"
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	now := time.Now()
	dir := enrolledWithBootstrap(t, pki, b.URL(), id, now, 0)
	// Rotated: generation 1 active, the enrollment key wiped.
	rotatedByHand(t, pki, dir, id, now)
	if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: state.Cred{Active: 1, Epoch: 1}}); err != nil {
		t.Fatal(err)
	}

	// Enrolled again: a new key and certificate, the same bootstrap identity.
	c, nb := reenrollment(t, pki, dir, id, now)
	// What InstallBundle leaves when killed after its journal write.
	if err := restartJournal(dir, now); err != nil {
		t.Fatal(err)
	}

	fullSigner(t, b, pki, id)
	log, rec := logtest.New()
	cfg := Config{StateDir: dir, Logger: log, SwitchTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	if a, err := New(cfg); err == nil {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		for deadline := time.Now().Add(10 * time.Second); a.Rotations() == 0 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		<-done
	}

	if _, err := InstallBundle(dir, nb, time.Now()); err != nil {
		t.Fatalf("installing the new bundle again: %v; agent log:\n%s", err, rec.Text())
	}
	a, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Certificate().SerialNumber; got.Cmp(c.SerialNumber) != 0 {
		t.Errorf("starts with certificate %x, want the new enrollment's %x", got, c.SerialNumber)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil {
		t.Errorf("the new enrollment key: %v", err)
	}
}
