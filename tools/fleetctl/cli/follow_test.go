package cli

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// followFixture is a collector of a new fleet that holds its breach notice to epoch 1, and
// state(epoch), the retained state of a converged device at epoch.
func followFixture(t *testing.T) (*status.Collector, func(epoch uint64) []byte) {
	t.Helper()
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
	for _, sh := range topic.Shards() {
		col.Add(topic.FleetDesired(sh), notice)
	}
	return col, state
}

// status --wait reads the retained state again when nothing changed for a while: a held-back
// older state of a device (docs/scale-out.md, item 3) must not keep it waiting until the timeout.
func TestFollowReadsTheRetainedStateAgainWhenItStalls(t *testing.T) {
	defer func(a, b time.Duration) { stallResync, maxStallResync = a, b }(stallResync, maxStallResync)
	stallResync, maxStallResync = 50*time.Millisecond, 200*time.Millisecond

	col, state := followFixture(t)
	col.Add(topic.State("cam-0001"), state(0)) // the stale copy the subscription kept

	var resyncs atomic.Int32
	resync := func() {
		if resyncs.Add(1) == 2 { // the broker's retained copy is the newer state
			col.Add(topic.State("cam-0001"), state(1))
		}
	}
	r, err := follow(context.Background(), col, 10*time.Second, io.Discard, resync, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Converged || resyncs.Load() != 2 {
		t.Fatalf("converged %v after %d re-reads, want converged after 2", r.Converged, resyncs.Load())
	}
}

// syncBuffer is an io.Writer a test may read while another goroutine writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitUntil polls cond every 10 ms until it holds or d has passed.
func waitUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// The progress bar of status --wait shows the count as it is, at once: the last change
// before a quiet spell must not be lost (a camera converged while the bar still says 0 of 2),
// and the elapsed time moves on while nothing changes, so that a waiting operator does not
// take a quiet rollout for a hung command.
func TestFollowShowsTheLastChangeAndTheTimeGoingOn(t *testing.T) {
	defer func(a, b time.Duration) { stallResync, maxStallResync = a, b }(stallResync, maxStallResync)
	stallResync, maxStallResync = time.Hour, time.Hour // no re-read renders it for the bar

	col, state := followFixture(t)
	col.Add(topic.State("cam-0001"), state(0))
	col.Add(topic.State("cam-0002"), state(0))

	var w syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := follow(ctx, col, time.Minute, &w, func() {}, nil)
		done <- err
	}()
	defer func() { cancel(); <-done }()
	if !waitUntil(10*time.Second, func() bool { return strings.Contains(w.String(), "(0/2)") }) {
		t.Fatalf("no bar at 0 of 2:\n%q", w.String())
	}
	col.Add(topic.State("cam-0001"), state(1))
	if !waitUntil(2*time.Second, func() bool { return strings.Contains(w.String(), "(1/2)") }) {
		t.Errorf("the bar did not show 1 of 2 converged within 2 s of it:\n%q", w.String())
	}
	if !waitUntil(3*time.Second, func() bool { return strings.Contains(w.String(), "[2s]") }) {
		t.Errorf("the bar's elapsed time did not reach 2 s while nothing changed:\n%q", w.String())
	}
}

// While status --wait has lost the broker, the bar says so: the count it shows is the last
// the broker sent, and nothing new can come until the session is back.
func TestFollowSaysWhenTheBrokerConnectionIsLost(t *testing.T) {
	col, state := followFixture(t)
	col.Add(topic.State("cam-0001"), state(0))

	var up atomic.Bool
	up.Store(true)
	var w syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := follow(ctx, col, time.Minute, &w, func() {}, up.Load)
		done <- err
	}()
	defer func() { cancel(); <-done }()
	if !waitUntil(10*time.Second, func() bool { return strings.Contains(w.String(), "(0/1)") }) {
		t.Fatalf("no bar at 0 of 1:\n%q", w.String())
	}
	if strings.Contains(w.String(), "BROKER CONNECTION LOST") {
		t.Fatalf("the bar says the connection is lost while it is up:\n%q", w.String())
	}
	up.Store(false)
	if !waitUntil(3*time.Second, func() bool { return strings.Contains(w.String(), "BROKER CONNECTION LOST") }) {
		t.Errorf("the bar did not say the broker connection was lost:\n%q", w.String())
	}
}
