package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/fleetctl/cli"
)

// tryFleetctl runs one fleetctl command and returns its output and error: for a command that
// must fail.
func tryFleetctl(args ...string) (string, error) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := cli.Run(ctx, args, &out, &out)
	return out.String(), err
}

// A camera that left the fleet for good holds up every rollout: status --wait never sees it
// converge. `fleetctl retire` takes it out: the rollout converges without it, its retained
// state is gone, and the camera, powered on again somewhere, gets back in through neither its
// certificate nor its factory bootstrap identity.
func TestARetiredCameraLeavesTheRolloutAndCannotComeBack(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		live := startAgent(t, enroll(t, e.f, "cam-0000"), e.url, fastRotation)
		goneDir := enroll(t, e.f, "cam-0001")
		gone := startAgent(t, goneDir, e.url, fastRotation)
		live.waitConnected(t)
		gone.waitConnected(t)
		waitFor(t, time.Minute, "both devices in the status", func() bool { r := statusReport(t, e); return r.Total == 2 && r.NoState == 0 })
		gone.stop(t) // broken, in a drawer

		fleetctl(t, "breach", "--dir", e.f.Dir, "--broker", e.url, "--incident", "INC-1")
		waitFor(t, time.Minute, "the live device to converge", func() bool { return live.Epoch() >= 1 })
		out, err := tryFleetctl("status", "--dir", e.f.Dir, "--broker", e.url, "--wait", "2s")
		if err == nil || !strings.Contains(err.Error(), "1 behind") {
			t.Fatalf("status --wait with a dead camera in the fleet: %v\n%s", err, out)
		}

		out = fleetctl(t, "retire", "--dir", e.f.Dir, "--broker", e.url, "--device", "cam-0001")
		if !strings.Contains(out, "retired cam-0001: revoked ") || !strings.Contains(out, "1 devices retired; 2 certificates revoked") {
			t.Fatalf("retire said:\n%s", out)
		}
		e.applyCRL(t)
		fleetctl(t, "status", "--dir", e.f.Dir, "--broker", e.url, "--wait", "30s")
		if r := statusReport(t, e); !r.Converged || r.Total != 1 || r.Retired != 0 {
			t.Fatalf("after the retirement the status is %+v; want cam-0000 alone, and cam-0001's retained state gone", r)
		}

		// The camera is powered on again: the broker refuses its certificate, and its
		// bootstrap identity too, so it never gets in.
		back := startAgent(t, goneDir, e.url, fastRotation)
		select {
		case <-back.Connected():
			t.Fatal("the retired camera connected")
		case <-time.After(3 * time.Second):
		}
		if back.Epoch() != 0 || back.Rotations() != 0 {
			t.Fatalf("the retired camera rotated to epoch %d", back.Epoch())
		}
		if r := statusReport(t, e); r.Total != 1 {
			t.Fatalf("the retired camera is back in the status: %+v", r)
		}
		for _, cmd := range []string{"rotate", "grant"} {
			if _, err := tryFleetctl(cmd, "--dir", e.f.Dir, "--broker", e.url, "--device", "cam-0001"); err == nil || !strings.Contains(err.Error(), "was retired") {
				t.Fatalf("%s --device of a retired camera: %v", cmd, err)
			}
		}
	}, "cam-0000", "cam-0001")
}
