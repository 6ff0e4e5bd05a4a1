package cli_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// statusRows runs status --json and returns the report, the ids of its devices with their
// state and no_state ("cam-0003=behind/no state"), and the ids of the devices not enrolled.
func statusRows(t *testing.T, dir, url string) (status.Report, []string, []string) {
	t.Helper()
	js := mustRun(t, "status", "--dir", dir, "--broker", url, "--json")
	var r status.Report
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, js)
	}
	// The fields read here by name, not through status.Report, are the ones this contract
	// added: the test decodes the same JSON as a script would.
	var extra struct {
		Devices []struct {
			ID      string `json:"device"`
			State   string `json:"state"`
			NoState bool   `json:"no_state"`
		} `json:"devices"`
		NotEnrolled []struct {
			ID string `json:"device"`
		} `json:"not_enrolled"`
	}
	if err := json.Unmarshal([]byte(js), &extra); err != nil {
		t.Fatal(err)
	}
	rows, others := []string{}, []string{}
	for _, d := range extra.Devices {
		row := d.ID + "=" + d.State
		if d.NoState {
			row += "/no state"
		}
		rows = append(rows, row)
	}
	for _, d := range extra.NotEnrolled {
		others = append(others, d.ID)
	}
	return r, rows, others
}

// An enrolled camera that never connected has no retained state, but it is in the fleet:
// status lists it behind with no state, the fleet is not converged while it is silent, and
// status --wait says which devices it waits for. A device on the broker that the registry
// never enrolled is shown apart and holds nothing up.
func TestStatusCountsEnrolledDevicesThatNeverConnected(t *testing.T) {
	dir, f := initFleet(t)
	for _, id := range []string{"cam-0001", "cam-0002", "cam-0003", "cam-0004"} {
		fleettest.Enroll(t, f, id)
	}
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	url := brk.URL()
	mustRun(t, "rotate", "--dir", dir, "--broker", url, "--all")
	publishState(t, f, url, "cam-0001", wire.DeviceState{Epoch: 1, Rotation: wire.RotationIdle})
	publishState(t, f, url, "cam-0002", wire.DeviceState{Epoch: 1, Rotation: wire.RotationIdle})
	publishState(t, f, url, "cam-0099", wire.DeviceState{Epoch: 0, Rotation: wire.RotationIdle}) // never enrolled here

	r, rows, others := statusRows(t, dir, url)
	if want := (status.Counts{Converged: 2, Behind: 2}); r.Counts != want || r.Total != 4 || r.Converged {
		t.Fatalf("status --json: counts %+v, total %d, converged %v; want %+v of 4, not converged", r.Counts, r.Total, r.Converged, want)
	}
	if want := []string{"cam-0001=converged", "cam-0002=converged", "cam-0003=behind/no state", "cam-0004=behind/no state"}; !slices.Equal(rows, want) {
		t.Fatalf("devices %v, want %v", rows, want)
	}
	if !slices.Equal(others, []string{"cam-0099"}) {
		t.Fatalf("not enrolled %v, want cam-0099", others)
	}
	table, stderr, err := run(t, "status", "--dir", dir, "--broker", url)
	if err != nil || !strings.Contains(table, "4 devices: 2 converged, 0 rotating, 0 failed, 2 behind (2 with no state on the broker)") ||
		!strings.Contains(table, "cam-0003  behind") || !strings.Contains(table, "1 devices on the broker that the registry has not enrolled") {
		t.Fatalf("status table (%v):\n%s", err, table)
	}
	if !strings.Contains(stderr, "has not enrolled, left out of the counts: cam-0099") {
		t.Errorf("status did not warn of the device the registry does not know:\n%s", stderr)
	}

	_, _, err = run(t, "status", "--dir", dir, "--broker", url, "--wait", "300ms")
	if err == nil || !strings.Contains(err.Error(), "not converged") || !strings.Contains(err.Error(), "2 of 4 devices converged") ||
		!strings.Contains(err.Error(), "no state of 2 of the 4 devices (cam-0003, cam-0004)") {
		t.Fatalf("status --wait with two enrolled devices silent: %v", err)
	}

	// They connect at last: the fleet converges, cam-0099 still behind and not counted.
	_, done := following(t, "--dir", dir, "--broker", url, "--wait", "20s")
	for _, id := range []string{"cam-0003", "cam-0004"} {
		publishState(t, f, url, id, wire.DeviceState{Epoch: 1, Rotation: wire.RotationIdle})
	}
	if err := <-done; err != nil {
		t.Fatalf("status --wait once every enrolled device reported: %v", err)
	}
}

// A broker that lost its retained store (restarted without persistence, a fresh cluster
// node) holds no state of anyone. status --wait must not take the empty broker for a
// converged fleet: it waits for every enrolled device and names how many it has not heard
// from, until they publish their state again.
func TestStatusWaitOnABrokerThatLostItsRetainedStore(t *testing.T) {
	dir, f := initFleet(t)
	ids := []string{"cam-0001", "cam-0002", "cam-0003"}
	for _, id := range ids {
		fleettest.Enroll(t, f, id)
	}
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		url := b.URL() // a broker that remembers nothing, for a fleet of 3
		out, _, err := run(t, "status", "--dir", dir, "--broker", url, "--wait", "1s")
		if err == nil || !strings.Contains(err.Error(), "0 of 3 devices converged") || !strings.Contains(err.Error(), "no state of 3 of the 3 devices (cam-0001, cam-0002, cam-0003)") {
			t.Fatalf("status --wait on an empty broker for a fleet of 3: %v\n%s", err, out)
		}
		if !strings.Contains(out, "3 devices: 0 converged, 0 rotating, 0 failed, 3 behind (3 with no state on the broker)") {
			t.Fatalf("status --wait table:\n%s", out)
		}
		if r, _, _ := statusRows(t, dir, url); r.Converged || r.Total != 3 {
			t.Fatalf("status --json on an empty broker: converged %v, total %d", r.Converged, r.Total)
		}
		if _, errOut, _ := run(t, "status", "--dir", dir, "--broker", url); strings.Contains(errOut, "lost the desired state") {
			t.Fatalf("status warned of a lost desired state when no device reported an epoch:\n%s", errOut)
		}
		// The devices reconnect and publish their state again: now it has converged.
		for _, id := range ids {
			publishState(t, f, url, id, wire.DeviceState{Epoch: 0, Rotation: wire.RotationIdle})
		}
		mustRun(t, "status", "--dir", dir, "--broker", url, "--wait", "20s")
		// One of them had rotated to epoch 2 before the broker forgot the breach notice that
		// asked for it: a device offline meanwhile would never rotate, and status says so.
		publishState(t, f, url, "cam-0002", wire.DeviceState{Epoch: 2, Rotation: wire.RotationIdle})
		_, errOut, err := run(t, "status", "--dir", dir, "--broker", url)
		if err != nil || !strings.Contains(errOut, "devices at a credential epoch above any desired state the broker holds for them: 1 (up to epoch 2: cam-0002)") || !strings.Contains(errOut, "fleetctl rotate --all") {
			t.Fatalf("status on a broker that lost the desired state: %v\n%s", err, errOut)
		}
	}, fleettest.Identities())
}

// A fleet with no device to wait for is not a converged one: status says so plainly, and
// status --wait exits non-zero, for a registry that enrolled nothing as for one whose every
// device retired.
func TestStatusSaysSoWhenNoDeviceIsEnrolled(t *testing.T) {
	dir, f := initFleet(t)
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	url := brk.URL()

	if out := mustRun(t, "status", "--dir", dir, "--broker", url); !strings.Contains(out, "no devices enrolled") {
		t.Errorf("status with nothing enrolled:\n%s", out)
	}
	if _, _, err := run(t, "status", "--dir", dir, "--broker", url, "--wait", "1s"); err == nil || !strings.Contains(err.Error(), "no devices enrolled") {
		t.Errorf("status --wait with nothing enrolled: %v, want a failure saying no devices are enrolled", err)
	}

	fleettest.Enroll(t, f, "cam-0001")
	if _, err := f.RetireDevices([]string{"cam-0001"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "status", "--dir", dir, "--broker", url, "--wait", "1s"); err == nil || !strings.Contains(err.Error(), "no devices enrolled") {
		t.Errorf("status --wait with every enrolled device retired: %v, want a failure saying no devices are enrolled", err)
	}
}
