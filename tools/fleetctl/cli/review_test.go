package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// statusJSON runs status --json and decodes its report.
func statusJSON(t *testing.T, dir, url string) status.Report {
	t.Helper()
	js := mustRun(t, "status", "--dir", dir, "--broker", url, "--json")
	var r status.Report
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, js)
	}
	return r
}

// A mistyped id given to rotate --device would leave a retained desired state for a device
// that does not exist: status would count it behind for good, so status --wait never
// converges again, and retire refuses it (never enrolled), so nothing could clear it. Rotate
// refuses an id that neither the registry nor the broker knows; an enrolled device that never
// connected is still accepted, and rotates when it first connects.
func TestRotateRefusesADeviceNeverEnrolled(t *testing.T) {
	dir, f := initFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	url := brk.URL()

	_, _, err := run(t, "rotate", "--dir", dir, "--broker", url, "--device", "cam-001")
	if err == nil || !strings.Contains(err.Error(), "never enrolled") {
		t.Errorf("rotate --device of an id never enrolled: %v, want a refusal saying it was never enrolled", err)
	}
	// Nothing was published for cam-001: status knows the enrolled cam-0001 alone, which has
	// not reported (status --wait waits for it, and only for it).
	if r := statusJSON(t, dir, url); r.Total != 1 || r.Devices[0].ID != "cam-0001" || len(r.NotEnrolled) != 0 {
		t.Fatalf("after a refused rotate, status counts %d devices: %+v, and %+v not enrolled", r.Total, r.Devices, r.NotEnrolled)
	}
	if _, _, err := run(t, "status", "--dir", dir, "--broker", url, "--wait", "1s"); err == nil || !strings.Contains(err.Error(), "0 of 1 devices converged") {
		t.Fatalf("status --wait with one enrolled device that never reported: %v", err)
	}

	_, stderr, err := run(t, "rotate", "--dir", dir, "--broker", url, "--device", "cam-0001")
	if err != nil || !strings.Contains(stderr, "cam-0001 has published no state; it will rotate when it connects") {
		t.Fatalf("rotate --device of an enrolled device that never connected: %v\n%s", err, stderr)
	}
}

// status --silent-for lists the enrolled cameras that never published a state too, as the
// flag's help and docs/protocol.md (Retirement) promise, and its list is one retire --from
// takes as it is.
func TestStatusSilentForListsEnrolledCamerasThatNeverReported(t *testing.T) {
	dir, f := initFleet(t)
	for _, id := range []string{"cam-0001", "cam-0002", "cam-0003"} {
		fleettest.Enroll(t, f, id)
	}
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	url := brk.URL()
	publishState(t, f, url, "cam-0002", wire.DeviceState{Epoch: 0, Rotation: wire.RotationIdle}) // heard from now
	if _, err := f.RetireDevices([]string{"cam-0003"}, time.Now()); err != nil {                 // never reported, retired
		t.Fatal(err)
	}

	out := mustRun(t, "status", "--dir", dir, "--broker", url, "--silent-for", "60d")
	ids, err := fleet.ParseDeviceList([]byte(out))
	if err != nil || !slices.Equal(ids, []string{"cam-0001"}) {
		t.Fatalf("status --silent-for 60d listed %q (%v), want cam-0001, enrolled and never heard from:\n%s", ids, err, out)
	}
	list := filepath.Join(t.TempDir(), "gone.txt")
	if err := os.WriteFile(list, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "retire", "--dir", dir, "--broker", url, "--from", list)
	out = mustRun(t, "status", "--dir", dir, "--broker", url, "--silent-for", "60d")
	if ids, err := fleet.ParseDeviceList([]byte(out)); err != nil || len(ids) != 0 {
		t.Fatalf("after retiring them, status --silent-for listed %q (%v)", ids, err)
	}
}

// breach run again with the same incident id (its first run timed out waiting for the
// broker's acknowledgement, or the terminal closed) does not start a second rotation wave
// through the whole fleet; a new incident id does.
func TestBreachAgainWithTheSameIncidentDoesNotRotateTheFleetTwice(t *testing.T) {
	dir, f := initFleet(t)
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	url := brk.URL()

	mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-1")
	out := mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-1")
	if r := statusJSON(t, dir, url); r.FleetEpoch != 1 || r.Incident != "INC-1" {
		t.Fatalf("after breach INC-1 twice: fleet epoch %d incident %q, want 1 and INC-1; the second said:\n%s", r.FleetEpoch, r.Incident, out)
	}
	if !strings.Contains(out, "already published") {
		t.Errorf("the second breach INC-1 did not say it was already published:\n%s", out)
	}
	mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-2")
	if r := statusJSON(t, dir, url); r.FleetEpoch != 2 || r.Incident != "INC-2" {
		t.Fatalf("after breach INC-2: fleet epoch %d incident %q", r.FleetEpoch, r.Incident)
	}
}

// The same incident id a day later is a new wave: an operator reusing an id is not told the
// fleet rotates when nothing would.
func TestBreachWithAnOldIncidentIDAgainIsANewWave(t *testing.T) {
	dir, f := initFleet(t)
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	url := brk.URL()
	op, err := f.Dial(context.Background(), fleet.OperatorOptions{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	if _, err := op.PublishDesired(ctx, certs.Desired{Target: certs.TargetFleet, Epoch: 1, Incident: "INC-1"}, time.Now().Add(-25*time.Hour)); err != nil {
		t.Fatal(err)
	}
	op.Close()
	out := mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-1")
	if r := statusJSON(t, dir, url); r.FleetEpoch != 2 {
		t.Fatalf("breach INC-1 a day after INC-1: fleet epoch %d, want 2; it said:\n%s", r.FleetEpoch, out)
	}
}

// A breach notice that reached only some shards (the operator's connection broke part-way
// through publishing it) is named by status, and breach run again with the same incident id —
// even after the retry window — publishes it on the other shards as it was signed, without a
// second rotation wave; so does rotate --all for a rotation of every device.
func TestAFleetWidePublicationThatBrokeOffIsFinishedByRunningItAgain(t *testing.T) {
	dir, f := initFleet(t)
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	url := brk.URL()
	shards := topic.Shards()
	// breakOff publishes d fleet-wide as if the connection broke after the first 20 shards:
	// the others keep what they held before.
	breakOff := func(d certs.Desired, at time.Time) {
		t.Helper()
		before := retainedOn(t, dir, url, topic.FleetDesired(shards[20]))
		op, err := f.Dial(context.Background(), fleet.OperatorOptions{Broker: url})
		if err != nil {
			t.Fatal(err)
		}
		defer op.Close()
		ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
		defer cancel()
		if _, err := op.PublishDesired(ctx, d, at); err != nil {
			t.Fatal(err)
		}
		for _, sh := range shards[20:] {
			if err := op.Client().Publish(ctx, topic.FleetDesired(sh), 1, true, before); err != nil {
				t.Fatal(err)
			}
		}
	}

	breakOff(certs.Desired{Target: certs.TargetFleet, Epoch: 1, Incident: "INC-1"}, time.Now().Add(-25*time.Hour))
	out, errOut, err := run(t, "status", "--dir", dir, "--broker", url)
	if err != nil || !strings.Contains(errOut, "reached 20 of 64 shards") || !strings.Contains(errOut, "fleetctl breach --dir "+dir+" --incident INC-1") {
		t.Fatalf("status after a notice that reached 20 shards: %v, said:\n%s\n%s", err, out, errOut)
	}
	if r := statusJSON(t, dir, url); r.FleetEpoch != 1 || !slices.Equal(r.FleetShardsBehind, shards[20:]) {
		t.Fatalf("status --json: epoch %d, shards behind %v; want 1 and the last 44", r.FleetEpoch, r.FleetShardsBehind)
	}
	out = mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-1")
	if !strings.Contains(out, "had reached 20 of 64 shards; now published on the other 44") {
		t.Errorf("breach INC-1 again did not say it finished the publication:\n%s", out)
	}
	if r := statusJSON(t, dir, url); r.FleetEpoch != 1 || r.FleetShardsBehind != nil {
		t.Fatalf("after breach INC-1 again: epoch %d (want 1: no second wave), shards behind %v", r.FleetEpoch, r.FleetShardsBehind)
	}
	first := retainedOn(t, dir, url, topic.FleetDesired(shards[0]))
	for _, sh := range []string{shards[20], shards[63]} {
		if got := retainedOn(t, dir, url, topic.FleetDesired(sh)); !bytes.Equal(got, first) {
			t.Fatalf("shard %s holds another document than shard %s after the retry", sh, shards[0])
		}
	}

	breakOff(certs.Desired{Target: certs.TargetFleet, Epoch: 2}, time.Now())
	out = mustRun(t, "rotate", "--dir", dir, "--broker", url, "--all")
	if !strings.Contains(out, "now published on the other 44") {
		t.Errorf("rotate --all after a rotation that reached 20 shards did not finish it:\n%s", out)
	}
	if r := statusJSON(t, dir, url); r.FleetEpoch != 2 || r.FleetShardsBehind != nil {
		t.Fatalf("after rotate --all: epoch %d (want 2: the one that broke off, finished), shards behind %v", r.FleetEpoch, r.FleetShardsBehind)
	}
}

// breach --keyset that stopped after publishing the notice and before putting the key set in
// force here: run again, it puts the set in force without a second rotation wave.
func TestBreachWithAKeySetRetriedAfterACrashInstallsIt(t *testing.T) {
	dir, f := initFleet(t)
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	url := brk.URL()
	path := strings.TrimSpace(mustRun(t, "keys", "rotate", "--dir", dir))
	ksb, err := cappedfile.Read(path, certs.MaxKeySetSize)
	if err != nil {
		t.Fatal(err)
	}
	// What the first breach did before it stopped: the notice, with the key set, is out.
	op, err := f.Dial(context.Background(), fleet.OperatorOptions{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	if _, err := op.PublishDesired(ctx, certs.Desired{Target: certs.TargetFleet, Epoch: 1, Incident: "INC-7", KeySet: ksb}, time.Now()); err != nil {
		t.Fatal(err)
	}
	op.Close()

	out, errOut, err := run(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-7", "--keyset", path)
	if err != nil || !strings.Contains(errOut, "key set v2, which the fleet's breach notice carries, is now in force in this fleet directory too") || !strings.Contains(out, "key set v2 is already in force") {
		t.Fatalf("breach INC-7 --keyset again: %v, said:\n%s\n%s", err, out, errOut)
	}
	if g, err := fleet.Open(dir); err != nil || g.KeySet().Version != 2 {
		t.Fatalf("key set in force after the retried breach: %v", err)
	}
	if r := statusJSON(t, dir, url); r.FleetEpoch != 1 {
		t.Fatalf("the retried breach raised the fleet epoch to %d", r.FleetEpoch)
	}
}

// init refuses a device certificate lifetime it cannot keep, instead of making a fleet that
// issues certificates expired at birth (a negative one), or the 30-day default in place of
// what was asked (under a second: fleet.json keeps whole seconds).
func TestInitRefusesADeviceValidityItCannotKeep(t *testing.T) {
	for _, v := range []string{"-720h", "500ms", "90m500ms"} {
		dir := filepath.Join(t.TempDir(), "fleet")
		if _, _, err := run(t, "init", "--dir", dir, "--device-validity", v); err == nil || !strings.Contains(err.Error(), "device-validity") {
			t.Errorf("init --device-validity %s: %v, want a refusal naming the flag", v, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "fleet.json")); err == nil {
			t.Errorf("init --device-validity %s made a fleet", v)
		}
	}
	dir := filepath.Join(t.TempDir(), "fleet")
	mustRun(t, "init", "--dir", dir, "--device-validity", "72h")
	g, err := fleet.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if g.DeviceValidity() != 72*time.Hour {
		t.Fatalf("init --device-validity 72h made a fleet with %v", g.DeviceValidity())
	}
}
