package cli_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// A breach --keyset that published its notice and stopped before putting the set in force
// (killed, a full disk) left the fleet directory signing with the old keys. The next command
// that reads the fleet's retained state, with or without --keyset, finds the newer set in the
// notice and, since this directory holds its signing keys, puts it in force and says so.
func TestACommandPutsInForceTheKeySetABreachPublishedFromHere(t *testing.T) {
	dir, f := initFleet(t)
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	brk := mqtttest.StartEmbedded(t, pki)
	path := strings.TrimSpace(mustRun(t, "keys", "rotate", "--dir", dir))
	ksb, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// What breach --keyset does up to its crash: the notice, carrying the set, and no more.
	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: brk.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.PublishDesired(ctx, certs.Desired{Target: certs.TargetFleet, Epoch: 1, Incident: "INC-9", KeySet: ksb}, time.Now()); err != nil {
		t.Fatal(err)
	}
	op.Close()
	if g, _ := fleet.Open(dir); g.KeySet().Version != 1 {
		t.Fatalf("the directory is on key set v%d before the next command", g.KeySet().Version)
	}

	out, errOut, err := run(t, "rotate", "--dir", dir, "--broker", brk.URL(), "--all")
	if err != nil {
		t.Fatalf("rotate --all: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "key set v2, which the fleet's breach notice carries, is now in force in this fleet directory too") || !strings.Contains(errOut, "key set v2 sent to viewer relays") {
		t.Fatalf("rotate did not say it put key set v2 in force and sent it to the relays:\n%s\n%s", out, errOut)
	}
	// The relays find it retained, as after a breach that ran to its end.
	var retained []byte
	ctx2, cancel2 := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel2()
	var mu sync.Mutex
	watch, err := f.Dial(ctx2, fleet.OperatorOptions{Broker: brk.URL(), Subscriptions: []string{topic.FleetKeySet}, OnMessage: func(_ string, b []byte) {
		mu.Lock()
		retained = bytes.Clone(b)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if err := watch.Sync(ctx2); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if !bytes.Equal(retained, ksb) {
		t.Fatalf("retained on %s: %d bytes, want the set the notice carries", topic.FleetKeySet, len(retained))
	}
	mu.Unlock()
	g, err := fleet.Open(dir)
	if err != nil || g.KeySet().Version != 2 {
		t.Fatalf("after rotate the directory is on %+v, %v", g.KeySet(), err)
	}
	// The breach run again, as its operator would after the crash, finds the set in force.
	again := mustRun(t, "breach", "--dir", dir, "--broker", brk.URL(), "--incident", "INC-9", "--keyset", path)
	if !strings.Contains(again, "key set v2 is already in force") || !strings.Contains(again, "key set v2 sent to viewer relays") {
		t.Fatalf("breach run again said:\n%s", again)
	}
}

// A copy of the fleet directory made before keys rotate (another operator's laptop) signs with
// a command key the new set dropped: every device, holding the new set, would refuse what it
// publishes. Commands that sign (ping too) refuse to run and say what to copy; status only warns.
func TestAStaleCopyOfTheFleetDirectoryRefusesToSign(t *testing.T) {
	dir, f := initFleet(t)
	stale := filepath.Join(t.TempDir(), "laptop")
	if out, err := exec.Command("cp", "-a", dir, stale).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	brk := mqtttest.StartEmbedded(t, pki)
	path := strings.TrimSpace(mustRun(t, "keys", "rotate", "--dir", dir, "--drop", f.KeySet().CommandKeys[0].ID, "--drop", f.KeySet().GrantKeys[0].ID))
	mustRun(t, "breach", "--dir", dir, "--broker", brk.URL(), "--incident", "INC-10", "--keyset", path)

	for _, args := range [][]string{
		{"rotate", "--all"},
		{"breach", "--incident", "INC-11"},
		{"grant", "--device", "cam-0001"},
		// A ping from the stale copy would carry a signature every device refuses.
		{"ping", "--device", "cam-0001"},
	} {
		_, errOut, err := run(t, append(append([]string{}, args...), "--dir", stale, "--broker", brk.URL())...)
		if err == nil || !strings.Contains(err.Error(), "carries key set v2, newer than this fleet directory's v1") || !strings.Contains(err.Error(), "copy keyset.json and keys/") {
			t.Fatalf("%v from the stale copy: %v\n%s", args, err, errOut)
		}
	}
	if g, _ := fleet.Open(stale); g.KeySet().Version != 1 {
		t.Fatalf("the stale copy was put on key set v%d without its keys", g.KeySet().Version)
	}
	_, errOut, err := run(t, "status", "--dir", stale, "--broker", brk.URL())
	if err != nil || !strings.Contains(errOut, "warning: the fleet's breach notice carries key set v2") {
		t.Fatalf("status from the stale copy: %v\n%s", err, errOut)
	}
	// The directory where the set was made is not stale.
	if _, errOut, err := run(t, "status", "--dir", dir, "--broker", brk.URL()); err != nil || strings.Contains(errOut, "key set") {
		t.Fatalf("status where the set was made: %v\n%s", err, errOut)
	}
}
