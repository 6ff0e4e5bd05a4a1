package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// A factory reset killed part way (power cut while the button is held, a removal that failed)
// must never leave a device that comes back into the fleet on its own (S10): not through the
// bootstrap identity standing in for a key the reset removed, nor from the bundle's copy once
// the bundle itself is gone. Each prefix of the reset's removals is laid out and the agent
// started on it: it either refuses to start, or starts with the device's own credential as if
// the reset had not begun.
func TestAResetKilledPartWayNeverBringsTheDeviceBack(t *testing.T) {
	const id = "cam-0001"
	pki := mqtttest.NewPKI(t)
	for _, rotated := range []bool{false, true} {
		for k := 1; k <= len(resetPatterns); k++ {
			t.Run(fmt.Sprintf("rotated %v, killed after removing %v", rotated, resetPatterns[:k]), func(t *testing.T) {
				now := time.Now()
				dir := enrolledWithBootstrap(t, pki, closedPort(t), id, now, 0)
				if rotated {
					rotatedByHand(t, pki, dir, id, now)
					if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: state.Cred{Active: 1, Epoch: 1}}); err != nil {
						t.Fatal(err)
					}
				}
				// What Reset does, up to the kill.
				if err := seal.Wipe(dir); err != nil {
					t.Fatal(err)
				}
				for _, p := range resetPatterns[:k] {
					paths, _ := filepath.Glob(filepath.Join(dir, p))
					for _, path := range paths {
						if err := shredTree(path); err != nil {
							t.Fatal(err)
						}
						if err := os.RemoveAll(path); err != nil {
							t.Fatal(err)
						}
					}
				}
				log, rec := logtest.New()
				a, err := New(Config{StateDir: dir, Logger: log})
				if err != nil {
					return // the device waits to be enrolled again, or says what is missing
				}
				if a.activeCred().lost {
					t.Fatalf("the agent starts, and would get a new credential through the bootstrap identity; log:\n%s", rec.Text())
				}
				if slices.Contains(resetPatterns[:k], BundleFile) {
					t.Fatalf("the agent starts with the bundle removed (from its copy); log:\n%s", rec.Text())
				}
				if _, err := os.Stat(filepath.Join(dir, BundleFile)); errors.Is(err, os.ErrNotExist) {
					t.Fatal("the agent started without its bundle")
				}
			})
		}
	}
}
