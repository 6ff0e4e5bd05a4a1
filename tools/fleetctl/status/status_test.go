package status_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func state(epoch uint64, rotation, lastError string) []byte {
	b, err := wire.Encode(&wire.DeviceState{V: wire.Version, Firmware: "1.2.0", CertSerial: "abc123", CertNotAfter: 1798761600,
		KeySet: 1, Epoch: epoch, Rotation: rotation, LastError: lastError, Updated: 1795000000})
	if err != nil {
		panic(err)
	}
	return b
}

func newFleet(t *testing.T) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func desired(t *testing.T, f *fleet.Fleet, target string, epoch uint64, incident string) []byte {
	t.Helper()
	b, err := f.SignDesired(certs.Desired{Target: target, Version: 1, Epoch: epoch, Incident: incident, IssuedAt: 1795000000})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update):\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestAReportCountsDevicesByState(t *testing.T) {
	f := newFleet(t)
	c := status.NewCollector(f.RootKey(), f.KeySet())
	addFleet(c, desired(t, f, certs.TargetFleet, 2, "INC-7"))
	c.Add("dev/cam-0005/down/desired", desired(t, f, "cam-0005", 3, ""))
	c.Add("dev/cam-0001/up/state", state(2, wire.RotationIdle, ""))
	c.Add("dev/cam-0002/up/state", state(1, wire.RotationPending, ""))
	c.Add("dev/cam-0003/up/state", state(1, wire.RotationFailed, wire.ErrCodeRateLimited))
	c.Add("dev/cam-0004/up/state", state(1, wire.RotationIdle, ""))
	c.Add("dev/cam-0005/up/state", state(2, wire.RotationIdle, ""))      // its own desired epoch is 3
	c.Add("dev/cam-0006/down/desired", desired(t, f, "cam-0006", 1, "")) // never reported
	r := c.Report()
	if want := (status.Counts{Converged: 1, Rotating: 1, Failed: 1, Behind: 3}); r.Counts != want || r.Total != 6 || r.Converged {
		t.Fatalf("counts %+v, total %d, converged %v; want %+v", r.Counts, r.Total, r.Converged, want)
	}
	var js, table bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.json", js.Bytes())
	golden(t, "report.txt", table.Bytes())
	var back status.Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Counts != r.Counts {
		t.Fatalf("JSON does not round-trip: %v", err)
	}

	// Convergence: every device reaches its epoch.
	for _, id := range []string{"cam-0002", "cam-0003", "cam-0004"} {
		c.Add("dev/"+id+"/up/state", state(2, wire.RotationIdle, ""))
	}
	c.Add("dev/cam-0005/up/state", state(3, wire.RotationIdle, ""))
	c.Add("dev/cam-0006/down/desired", nil) // cleared
	if r := c.Report(); !r.Converged || r.Counts.Converged != 5 {
		t.Fatalf("after convergence: %+v", r.Counts)
	}
}

func TestForgedOrMisaddressedDocumentsAreIgnored(t *testing.T) {
	f := newFleet(t)
	other := newFleet(t)
	c := status.NewCollector(f.RootKey(), f.KeySet())
	c.Add(topic.FleetDesired("00"), desired(t, other, certs.TargetFleet, 9, "")) // another fleet's key
	c.Add("dev/cam-0001/down/desired", desired(t, f, "cam-0002", 9, ""))         // wrong target
	c.Add(topic.FleetDesired("01"), desired(t, f, "cam-0001", 9, ""))            // a device doc fleet-wide
	c.Add("fleet/down/desired", desired(t, f, certs.TargetFleet, 9, ""))         // no shard
	c.Add("dev/cam-0001/up/state", []byte(`{"v":1,"fw":"my home wifi"}`))        // malformed
	c.Add("dev/cam-0001/up/reply", state(1, "", ""))                             // not a status topic
	if got := c.Rejected(); got != 6 {
		t.Fatalf("rejected %d, want 6", got)
	}
	if e := c.MaxEpoch(); e != 0 {
		t.Fatalf("MaxEpoch %d after only forged documents", e)
	}
}

func TestMaxEpochCoversDevicesAheadOfTheFleet(t *testing.T) {
	f := newFleet(t)
	c := status.NewCollector(f.RootKey(), f.KeySet())
	addFleet(c, desired(t, f, certs.TargetFleet, 2, ""))
	c.Add("dev/cam-0001/down/desired", desired(t, f, "cam-0001", 5, ""))
	c.Add("dev/cam-0002/up/state", state(7, wire.RotationIdle, ""))
	if e := c.MaxEpoch(); e != 7 {
		t.Fatalf("MaxEpoch %d, want 7", e)
	}
	if e := c.DesiredEpoch("cam-0001"); e != 5 {
		t.Fatalf("DesiredEpoch %d, want 5", e)
	}
}

// A retired device is left out of the report, so a fleet whose only stragglers are cameras
// that left it for good has converged.
func TestRetiredDevicesAreLeftOut(t *testing.T) {
	f := newFleet(t)
	c := status.NewCollector(f.RootKey(), f.KeySet())
	addFleet(c, desired(t, f, certs.TargetFleet, 2, "INC-7"))
	c.Add("dev/cam-0001/up/state", state(2, wire.RotationIdle, ""))
	c.Add("dev/cam-0002/up/state", state(1, wire.RotationIdle, ""))      // gone for good
	c.Add("dev/cam-0003/down/desired", desired(t, f, "cam-0003", 3, "")) // gone before it reported
	if r := c.Report(); r.Converged || r.Counts.Behind != 2 {
		t.Fatalf("before the retirement: %+v", r.Counts)
	}
	changed := c.Changed()
	c.Retire("cam-0002", "cam-0003", "cam-0009")
	select {
	case <-changed:
	default:
		t.Fatal("Retire did not signal a change to a waiting follower")
	}
	r := c.Report()
	if !r.Converged || r.Total != 1 || r.Retired != 2 || len(r.Devices) != 1 || r.Devices[0].ID != "cam-0001" {
		t.Fatalf("after the retirement: %+v", r)
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(table.Bytes(), []byte("1 devices: 1 converged, 0 rotating, 0 failed, 0 behind (2 retired devices left out)")) {
		t.Fatalf("table:\n%s", table.String())
	}
}

func presence(t *testing.T, name, state string, since, at int64) []byte {
	t.Helper()
	b, err := wire.Encode(&wire.SignerPresence{V: wire.Version, Name: name, State: state, Since: since, At: at, Every: 30})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The signers' retained presence tells the operator whether any signer serves: none ever said
// so, all stopped, or the last word is older than three intervals (a crash) are warnings; one
// fresh "serving" among them is enough.
func TestTheReportSaysWhetherASignerServes(t *testing.T) {
	f := newFleet(t)
	c := status.NewCollector(f.RootKey(), f.KeySet())
	now := time.Unix(1795000000, 0)
	if w := c.Report().SignerWarning(now); !strings.Contains(w, "no signer has said it serves") {
		t.Errorf("no presence: %q", w)
	}
	c.Add("fleet/signers/0a0a0a0a", presence(t, "s1", wire.SignerServing, 1794990000, 1795000000-60))
	r := c.Report()
	if w := r.SignerWarning(now); w != "" || len(r.Signers) != 1 || r.Signers[0].Name != "s1" || !r.Signers[0].Alive(now) {
		t.Fatalf("a signer heard 60 s ago, every 30 s: %q, %+v", w, r.Signers)
	}
	if w := r.SignerWarning(now.Add(31 * time.Second)); !strings.Contains(w, "may have crashed") || !strings.Contains(w, "s1") {
		t.Errorf("a signer silent for 91 s: %q", w)
	}
	c.Add("fleet/signers/0b0b0b0b", presence(t, "s2", wire.SignerStopped, 1794990000, 1795000000-10))
	if w := c.Report().SignerWarning(now); w != "" {
		t.Errorf("s1 still serves beside a stopped s2: %q", w)
	}
	c.Add("fleet/signers/0a0a0a0a", presence(t, "s1", wire.SignerStopped, 1794990000, 1795000000-5))
	if w := c.Report().SignerWarning(now); !strings.Contains(w, "every signer has stopped (the last, s1,") {
		t.Errorf("both stopped: %q", w)
	}
	// serve --retire clears an instance; a malformed presence is rejected, not believed.
	c.Add("fleet/signers/0a0a0a0a", nil)
	before := c.Rejected()
	c.Add("fleet/signers/0c0c0c0c", []byte(`{"v":1,"name":"s3","state":"serving","since":1,"at":1795000000,"every_s":30,"extra":1}`))
	r = c.Report()
	if len(r.Signers) != 1 || r.Signers[0].Name != "s2" || c.Rejected() != before+1 {
		t.Errorf("after a retirement and a malformed presence: %+v, rejected %d", r.Signers, c.Rejected()-before)
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil || !strings.Contains(table.String(), "signers: s2 stopped (said ") {
		t.Errorf("the table does not list the signers: %v\n%s", err, table.String())
	}
}

// With the registry's list (Enroll), every enrolled device that is not retired must converge,
// whether or not the broker holds a state of it: one that never published is behind, marked
// no_state, and holds up convergence. A device the broker holds state of that the registry
// does not know is shown apart and holds nothing up; a retired one is left out.
func TestEnrolledDevicesWithoutStateAreBehind(t *testing.T) {
	f := newFleet(t)
	c := status.NewCollector(f.RootKey(), f.KeySet())
	addFleet(c, desired(t, f, certs.TargetFleet, 2, "INC-7"))
	c.Add("dev/cam-0001/up/state", state(2, wire.RotationIdle, ""))
	c.Add("dev/cam-0002/up/state", state(2, wire.RotationIdle, ""))
	c.Add("dev/cam-0005/up/state", state(1, wire.RotationIdle, "")) // retired, its state still there
	c.Add("dev/cam-0009/up/state", state(1, wire.RotationIdle, "")) // the registry does not know it
	if r := c.Report(); r.Source != status.SourceBroker || !slices.Equal(ids(r.Devices), []string{"cam-0001", "cam-0002", "cam-0005", "cam-0009"}) {
		t.Fatalf("before Enroll, the report is the broker's: %s %v", r.Source, ids(r.Devices))
	}
	changed := c.Changed()
	c.Enroll("cam-0001", "cam-0002", "cam-0003", "cam-0004", "cam-0005") // 3 and 4 never connected
	c.Retire("cam-0005")
	select {
	case <-changed:
	default:
		t.Fatal("Enroll did not signal a change to a waiting follower")
	}
	r := c.Report()
	if want := (status.Counts{Converged: 2, Behind: 2}); r.Counts != want || r.Total != 4 || r.NoState != 2 || r.Converged || r.Retired != 1 || r.Source != status.SourceRegistry {
		t.Fatalf("counts %+v, total %d, no state %d, converged %v, retired %d, source %s", r.Counts, r.Total, r.NoState, r.Converged, r.Retired, r.Source)
	}
	if got := r.NoStateIDs(); !slices.Equal(got, []string{"cam-0003", "cam-0004"}) {
		t.Fatalf("no state: %v", got)
	}
	if got := ids(r.NotEnrolled); !slices.Equal(got, []string{"cam-0009"}) {
		t.Fatalf("not enrolled: %v", got)
	}
	var js, table bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	golden(t, "registry.json", js.Bytes())
	golden(t, "registry.txt", table.Bytes())

	// The silent two come back; the unknown device, still behind, holds nothing up.
	c.Add("dev/cam-0003/up/state", state(2, wire.RotationIdle, ""))
	c.Add("dev/cam-0004/up/state", state(2, wire.RotationIdle, ""))
	if r := c.Report(); !r.Converged || r.Counts.Converged != 4 || r.NoState != 0 || len(r.NotEnrolled) != 1 {
		t.Fatalf("after the silent devices reported: %+v", r)
	}
}

// A broker that lost its retained store (restarted without persistence, a fresh cluster node)
// holds nothing: the enrolled fleet is reported behind, and no report of no device says it
// converged.
func TestAnEmptyBrokerIsNotAConvergedFleet(t *testing.T) {
	f := newFleet(t)
	for _, tc := range []struct {
		name    string
		enroll  []string
		retire  []string
		total   int
		summary string
	}{
		{"an enrolled fleet is all behind, with no state", []string{"cam-0001", "cam-0002", "cam-0003"}, nil, 3,
			"fleet epoch 0: 3 devices: 0 converged, 0 rotating, 0 failed, 3 behind (3 with no state on the broker)"},
		{"a registry that enrolled nothing says so", []string{}, nil, 0, "fleet epoch 0: no devices enrolled\n"},
		{"a registry whose devices all retired says so", []string{"cam-0001"}, []string{"cam-0001"}, 0, "fleet epoch 0: no devices enrolled\n"},
		{"no registry and nothing retained says so", nil, nil, 0, "fleet epoch 0: no devices enrolled (no registry lists any, and the broker holds no device state)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := status.NewCollector(f.RootKey(), f.KeySet())
			if tc.enroll != nil {
				c.Enroll(tc.enroll...)
			}
			c.Retire(tc.retire...)
			r := c.Report()
			if r.Converged || r.Total != tc.total || r.Counts.Behind != tc.total || r.NoState != tc.total {
				t.Fatalf("converged %v, total %d, counts %+v, no state %d", r.Converged, r.Total, r.Counts, r.NoState)
			}
			var table bytes.Buffer
			if err := r.WriteTable(&table); err != nil || !strings.Contains(table.String(), tc.summary) {
				t.Fatalf("table (%v):\n%s\nwant %q", err, table.String(), tc.summary)
			}
		})
	}
}

func ids(ds []status.Device) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// Devices answers for each device what Report lists of it, before and after the registry's
// list of enrolled devices is known: states, desired state alone, retired, not enrolled,
// enrolled without state, and unknown.
func TestDevicesAgreesWithTheReport(t *testing.T) {
	f := newFleet(t)
	c := status.NewCollector(f.RootKey(), f.KeySet())
	addFleet(c, desired(t, f, certs.TargetFleet, 2, "INC-7"))
	c.Add("dev/cam-0001/up/state", state(2, wire.RotationIdle, ""))
	c.Add("dev/cam-0002/up/state", state(2, wire.RotationPending, ""))
	c.Add("dev/cam-0003/up/state", state(1, wire.RotationFailed, "timeout"))
	c.Add("dev/cam-0004/down/desired", desired(t, f, "cam-0004", 3, ""))
	c.Add("dev/cam-0005/up/state", state(1, wire.RotationIdle, ""))
	c.Add("dev/cam-0009/up/state", state(2, wire.RotationIdle, ""))
	all := []string{"cam-0001", "cam-0002", "cam-0003", "cam-0004", "cam-0005", "cam-0006", "cam-0009", "cam-0010"}
	check := func(when string, wantListed []string) {
		t.Helper()
		byID := map[string]status.Device{}
		for _, d := range c.Report().Devices {
			byID[d.ID] = d
		}
		got, listed := c.Devices(all)
		var gotListed []string
		for i, id := range all {
			want, ok := byID[id]
			if listed[i] != ok {
				t.Fatalf("%s: %s listed %v, the report %v", when, id, listed[i], ok)
			}
			if ok {
				gotListed = append(gotListed, id)
				if got[i] != want {
					t.Fatalf("%s: %s is %+v, the report has %+v", when, id, got[i], want)
				}
			}
		}
		if !slices.Equal(gotListed, wantListed) {
			t.Fatalf("%s: listed %v, want %v", when, gotListed, wantListed)
		}
	}
	check("from the broker", []string{"cam-0001", "cam-0002", "cam-0003", "cam-0004", "cam-0005", "cam-0009"})
	c.Enroll("cam-0001", "cam-0002", "cam-0003", "cam-0004", "cam-0005", "cam-0006")
	c.Retire("cam-0005")
	check("with the registry", []string{"cam-0001", "cam-0002", "cam-0003", "cam-0004", "cam-0006"})
}

// addFleet adds a fleet-wide desired-state document on every shard, as fleetctl publishes it.
func addFleet(c *status.Collector, b []byte) {
	for _, sh := range topic.Shards() {
		c.Add(topic.FleetDesired(sh), b)
	}
}

// A fleet-wide notice that reached only some shards (the operator's connection broke part-way)
// leaves the devices of the others behind, and the report names those shards until the same
// document is on every one of them.
func TestAPartialFleetPublicationIsReported(t *testing.T) {
	f := newFleet(t)
	c := status.NewCollector(f.RootKey(), f.KeySet())
	addFleet(c, desired(t, f, certs.TargetFleet, 1, "INC-6"))
	if raw, behind := c.FleetShardsBehind(); raw == nil || behind != nil {
		t.Fatalf("one notice on every shard: raw %d bytes, behind %v", len(raw), behind)
	}
	notice, err := f.SignDesired(certs.Desired{Target: certs.TargetFleet, Version: 2, Epoch: 2, Incident: "INC-7", IssuedAt: 1795000000})
	if err != nil {
		t.Fatal(err)
	}
	shards := topic.Shards()
	for _, sh := range shards[:40] {
		c.Add(topic.FleetDesired(sh), notice)
	}
	c.Add("dev/cam-0001/up/state", state(1, wire.RotationIdle, ""))
	r := c.Report()
	if r.FleetEpoch != 2 || r.Incident != "INC-7" || !slices.Equal(r.FleetShardsBehind, shards[40:]) || r.Converged {
		t.Fatalf("report: epoch %d, incident %q, shards behind %v, converged %v; want 2, INC-7, %v, false", r.FleetEpoch, r.Incident, r.FleetShardsBehind, r.Converged, shards[40:])
	}
	if e := c.DesiredEpoch("cam-0001"); e != 2 {
		t.Fatalf("DesiredEpoch %d, want the newest notice's 2 whatever the device's shard", e)
	}
	raw, behind := c.FleetShardsBehind()
	if !bytes.Equal(raw, notice) || !slices.Equal(behind, shards[40:]) {
		t.Fatalf("FleetShardsBehind: %d bytes (the notice: %v), %v", len(raw), bytes.Equal(raw, notice), behind)
	}
	for _, sh := range behind {
		c.Add(topic.FleetDesired(sh), raw)
	}
	if r := c.Report(); r.FleetShardsBehind != nil {
		t.Fatalf("shards behind after publishing on them: %v", r.FleetShardsBehind)
	}
	c.Add(topic.FleetDesired(shards[7]), nil) // cleared on one
	if _, behind := c.FleetShardsBehind(); !slices.Equal(behind, []string{shards[7]}) {
		t.Fatalf("after clearing shard %s: behind %v", shards[7], behind)
	}
}
