package cli_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// copyFleetDir copies the fleet directory dir, modes included, as an operator copies it to a
// laptop of their own: a copy with a sequence file of its own.
func copyFleetDir(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "laptop")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// retained reads the fleet's retained messages into a collector.
func retained(t *testing.T, f *fleet.Fleet, url string) *status.Collector {
	t.Helper()
	col := status.NewCollector(f.RootKey(), f.KeySet())
	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: url, Subscriptions: status.Filters(), OnMessage: col.Add})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	if err := op.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return col
}

// retainedFleetVersion reads the version of the retained fleet-wide desired state.
func retainedFleetVersion(t *testing.T, f *fleet.Fleet, url string) uint64 {
	t.Helper()
	d := retained(t, f, url).FleetDesired()
	if d == nil {
		t.Fatal("no retained fleet-wide desired state")
	}
	return d.Version
}

// A device ignores a desired state whose version is not above the last it accepted on that
// topic, and fleetctl's versions are its clock. Two operators with copies of the fleet
// directory on machines whose clocks are minutes apart: the one behind runs breach after the
// one ahead ran rotate --all. Its notice must still reach the cameras that read the first one;
// it used to carry a lower version, so every online camera ignored the breach while status
// showed the new incident and counted them behind.
func TestBreachFromACopyWhoseClockIsBehindReachesOnlineDevices(t *testing.T) {
	dir, f := initFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()
	laptop := copyFleetDir(t, dir)

	log, rec := logtest.New()
	a, err := agent.New(agent.Config{
		StateDir: e.StateDir, BrokerURL: url, Logger: log,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		RequestTimeout: 10 * time.Second, SwitchTimeout: 10 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	raised := make(chan uint64, 16)
	a.OnEpoch(func(epoch uint64) { raised <- epoch })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("agent log:\n%s", rec.Text())
		}
	})
	waitEpoch := func(want uint64) {
		t.Helper()
		deadline := time.After(fleettest.Timeout)
		for {
			select {
			case got := <-raised:
				if got >= want {
					return
				}
			case <-deadline:
				t.Fatalf("the camera's grant epoch did not reach %d (it is %d)", want, a.GrantEpoch())
			}
		}
	}

	// The laptop's clock is ten minutes ahead.
	g, err := fleet.Open(laptop)
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer dcancel()
	op, err := g.Dial(dctx, fleet.OperatorOptions{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	first, err := op.PublishDesired(dctx, certs.Desired{Target: certs.TargetFleet, Epoch: 1}, time.Now().Add(10*time.Minute))
	op.Close()
	if err != nil {
		t.Fatal(err)
	}
	waitEpoch(1)

	out := mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-9")
	if v := retainedFleetVersion(t, f, url); v <= first.Version {
		t.Fatalf("the breach notice has version %d, not above %d of the notice before it: every camera that read that one ignores the breach; breach said:\n%s", v, first.Version, out)
	}
	waitEpoch(2)
}
