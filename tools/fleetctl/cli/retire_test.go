package cli_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// Bad arguments are refused before anything is retired, each with an error saying what was
// wrong.
func TestRetireArguments(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	list := filepath.Join(t.TempDir(), "gone.txt")
	if err := os.WriteFile(list, []byte("# recall\ncam-0001\ncam 0002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no device", []string{"retire", "--dir", f.Dir}, "--device ID"},
		{"an id that is not one", []string{"retire", "--dir", f.Dir, "--device", "cam/0001"}, "flag -device"},
		{"a list with a bad line", []string{"retire", "--dir", f.Dir, "--from", list}, "line 3"},
		{"a device never enrolled", []string{"retire", "--dir", f.Dir, "--device", "cam-0001", "--device", "cam-0009"}, "cam-0009 was never enrolled"},
		{"a stray argument", []string{"retire", "--dir", f.Dir, "cam-0001"}, "unexpected argument"},
	} {
		if _, _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if ids := reg.RetiredDevices(); len(ids) != 0 {
		t.Fatalf("refused commands retired %v", ids)
	}
}

// status --silent-for lists the devices gone quiet, in the form retire --from reads, so the
// cameras that hold up every rollout can be found and retired in two commands. It lists
// enrolled devices only: retire --from refuses a list with one the registry never enrolled.
func TestStatusSilentForFindsTheCamerasToRetire(t *testing.T) {
	dir, f := initFleet(t)
	for _, id := range []string{"cam-0001", "cam-0002", "cam-0003", "cam-0004"} {
		fleettest.Enroll(t, f, id)
	}
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		url := b.URL()
		now := time.Now()
		publishState(t, f, url, "cam-0001", wire.DeviceState{Epoch: 1, Updated: now.Unix()})
		publishState(t, f, url, "cam-0002", wire.DeviceState{Epoch: 1, Updated: now.Add(-90 * 24 * time.Hour).Unix()})
		publishState(t, f, url, "cam-0003", wire.DeviceState{Epoch: 1, Updated: now.Add(-40 * 24 * time.Hour).Unix()})
		publishState(t, f, url, "cam-0009", wire.DeviceState{Epoch: 1, Updated: now.Add(-90 * 24 * time.Hour).Unix()}) // not enrolled here
		mustRun(t, "rotate", "--dir", dir, "--broker", url, "--device", "cam-0004")                                    // never reported
		out := mustRun(t, "status", "--dir", dir, "--broker", url, "--silent-for", "60d")
		ids, err := fleet.ParseDeviceList([]byte(out))
		if err != nil || !slices.Equal(ids, []string{"cam-0002", "cam-0004"}) {
			t.Fatalf("status --silent-for 60d listed %q (%v):\n%s", ids, err, out)
		}
		if out := mustRun(t, "status", "--dir", dir, "--broker", url, "--silent-for", "720h"); !strings.Contains(out, "\ncam-0003\n") {
			t.Fatalf("status --silent-for 720h:\n%s", out)
		}
		for _, bad := range [][]string{{"--silent-for", "0d"}, {"--silent-for", "6 days"}, {"--silent-for", "60d", "--json"}} {
			if _, _, err := run(t, append([]string{"status", "--dir", dir, "--broker", url}, bad...)...); err == nil {
				t.Errorf("status %q succeeded", bad)
			}
		}
	}, fleettest.Identities())
}

// A retired camera back from repair, with new keys, is enrolled again only when the operator
// says --reinstate.
func TestEnrollReinstatesARetiredDeviceOnlyWhenAsked(t *testing.T) {
	dir, f := initFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	if _, err := f.RetireDevices([]string{"cam-0001"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	req, err := agent.Enroll(filepath.Join(t.TempDir(), "cam"), "cam-0001")
	if err != nil {
		t.Fatal(err)
	}
	csr := filepath.Join(t.TempDir(), "device.csr")
	if err := os.WriteFile(csr, req, 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "cam.bundle.json")
	if _, _, err := run(t, "enroll", "--dir", dir, "--csr", csr, "--out", bundle); err == nil || !strings.Contains(err.Error(), "--reinstate") {
		t.Fatalf("enrolling a retired device: %v, want a refusal naming --reinstate", err)
	}
	if _, err := os.Stat(bundle); err == nil {
		t.Fatal("a refused enrollment wrote a bundle")
	}
	out := mustRun(t, "enroll", "--dir", dir, "--csr", csr, "--out", bundle, "--reinstate")
	if !strings.Contains(out, "reinstated cam-0001") || !strings.Contains(out, "enrolled cam-0001") {
		t.Fatalf("enroll --reinstate said:\n%s", out)
	}
}
