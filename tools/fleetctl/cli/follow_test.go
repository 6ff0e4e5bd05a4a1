package cli

import (
	"context"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// status --wait reads the retained state again when nothing changed for a while: a held-back
// older state of a device (docs/scale-out.md, item 3) must not keep it waiting until the timeout.
func TestFollowReadsTheRetainedStateAgainWhenItStalls(t *testing.T) {
	defer func(a, b time.Duration) { stallResync, maxStallResync = a, b }(stallResync, maxStallResync)
	stallResync, maxStallResync = 50*time.Millisecond, 200*time.Millisecond

	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	notice, err := f.SignDesired(certs.Desired{Target: certs.TargetFleet, Version: 1, Epoch: 1, IssuedAt: time.Now().Unix()})
	if err != nil {
		t.Fatal(err)
	}
	state := func(epoch uint64) []byte {
		b, err := wire.Encode(&wire.DeviceState{V: wire.Version, Firmware: "1.0.0", CertSerial: "ab", KeySet: 1, Epoch: epoch, Rotation: wire.RotationIdle, Updated: time.Now().Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	col := status.NewCollector(f.RootKey(), f.KeySet())
	col.Add(topic.FleetDesired, notice)
	col.Add(topic.State("cam-0001"), state(0)) // the stale copy the subscription kept

	var resyncs atomic.Int32
	resync := func() {
		if resyncs.Add(1) == 2 { // the broker's retained copy is the newer state
			col.Add(topic.State("cam-0001"), state(1))
		}
	}
	r, err := follow(context.Background(), col, 10*time.Second, io.Discard, resync)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Converged || resyncs.Load() != 2 {
		t.Fatalf("converged %v after %d re-reads, want converged after 2", r.Converged, resyncs.Load())
	}
}
