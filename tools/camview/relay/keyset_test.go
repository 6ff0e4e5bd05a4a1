package relay_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// enrollIdentity gives a relay an identity of its own in fleet f, the way camview enroll and
// fleetctl viewer do, and loads it.
func enrollIdentity(t *testing.T, f *fleet.Fleet, name string) *relay.Identity {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "relay")
	csrPath, err := relay.EnrollIdentity(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := os.ReadFile(csrPath)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := f.IssueViewer(csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.InstallIdentity(dir, b, time.Now()); err != nil {
		t.Fatal(err)
	}
	id, err := relay.LoadIdentity(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// nextKeySet makes f's next key set with `fleetctl keys rotate`'s code, dropping the keys
// named, and returns it as the root signed it. It is not in force in f.
func nextKeySet(t *testing.T, f *fleet.Fleet, drop ...string) []byte {
	t.Helper()
	rk, err := f.LoadRootKey(f.RootKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	path, _, err := f.RotateKeys(rk, drop, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fleetOn makes a fleet and starts a broker of kind "embedded" or "mosquitto" for it, which
// lets viewer (viewer:<name>) in too, until the test ends; it returns the fleet and the
// broker's URL.
func fleetOn(t *testing.T, kind, viewer string) (*fleet.Fleet, string) {
	t.Helper()
	f, pki := fleettest.NewFleet(t)
	if kind == "embedded" {
		return f, fleettest.StartBroker(t, f)
	}
	return f, mqtttest.StartMosquitto(t, pki, fleettest.Identities(), mqtttest.WithIdentities(viewer)).URL()
}

// following dials a relay as id to the broker at url, handing the key sets it takes to the
// returned channel, and an operator session of fleet f; both end with the test.
func following(t *testing.T, ctx context.Context, f *fleet.Fleet, id *relay.Identity, url string) (<-chan *certs.KeySet, *logtest.Recorder, *fleet.Operator) {
	t.Helper()
	log, rec := logtest.New()
	got := make(chan *certs.KeySet, 8)
	r, err := relay.DialIdentity(ctx, id, url, log, func(ks *certs.KeySet) { got <- ks })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })
	return got, rec, op
}

// After a breach puts a new key set in force, a relay with an identity of its own takes it
// from the broker (retained on fleet/keyset) without a new viewer bundle: only a newer set
// the bundle's root signed, kept across a restart. Before, it went on trusting the grant keys
// of its bundle, including one the breach dropped, until an operator handed it a new bundle.
func TestAnIdentityRelayTakesTheFleetsNewerKeySet(t *testing.T) {
	for _, kind := range []string{"embedded", "mosquitto"} {
		t.Run(kind, func(t *testing.T) {
			f, url := fleetOn(t, kind, "viewer:cloud")
			id := enrollIdentity(t, f, "cloud")
			old := id.KeySet()
			if old == nil || old.Version != f.KeySet().Version {
				t.Fatalf("the identity starts from key set %+v, want the bundle's v%d", old, f.KeySet().Version)
			}

			ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
			defer cancel()
			got, rec, op := following(t, ctx, f, id, url)
			next := takesOnlyNewerKeySets(t, ctx, f, old, got, rec, op)
			if id.KeySet().Version != old.Version+2 {
				t.Errorf("Identity.KeySet is v%d after the relay took v%d", id.KeySet().Version, old.Version+2)
			}

			// Kept across a restart, and the file is what the root signed.
			kept, err := os.ReadFile(filepath.Join(id.Dir, relay.IdentityKeySetFile))
			if err != nil || !bytes.Equal(kept, next) {
				t.Fatalf("%s: %v; holds the set as published: %v", relay.IdentityKeySetFile, err, bytes.Equal(kept, next))
			}
			again, err := relay.LoadIdentity(id.Dir, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if again.KeySet().Version != old.Version+2 {
				t.Errorf("after a restart the identity holds key set v%d, want v%d", again.KeySet().Version, old.Version+2)
			}
		})
	}
}

// takesOnlyNewerKeySets publishes on the broker, through op, key sets that a relay holding
// old, of fleet f, must refuse or ignore (another fleet's, the one it holds, an older one) and
// two it must take in turn (f's next without old's first grant key, then one more), and checks
// that the relay hands exactly those two to got. It returns the last one as its root signed it.
func takesOnlyNewerKeySets(t *testing.T, ctx context.Context, f *fleet.Fleet, old *certs.KeySet, got <-chan *certs.KeySet, rec *logtest.Recorder, op *fleet.Operator) []byte {
	t.Helper()
	dropped := old.GrantKeys[0].ID
	publish := func(b []byte) {
		t.Helper()
		if err := op.Client().Publish(ctx, topic.FleetKeySet, 1, true, b); err != nil {
			t.Fatal(err)
		}
	}

	// Another fleet's next set: signed by a root this relay does not pin.
	other, _ := fleettest.NewFleet(t)
	publish(nextKeySet(t, other))
	// The set the relay holds already.
	if err := op.PublishKeySet(ctx); err != nil {
		t.Fatal(err)
	}
	// The fleet's next set, without the old grant key.
	next := nextKeySet(t, f, dropped)
	publish(next)

	var ks *certs.KeySet
	select {
	case ks = <-got:
	case <-ctx.Done():
		t.Fatalf("the relay never took the new key set; log:\n%s", rec.Text())
	}
	if ks.Version != old.Version+1 || ks.GrantVerifier().Trusts(dropped) {
		t.Fatalf("the relay took key set v%d (trusts the dropped key: %v), want v%d without it", ks.Version, ks.GrantVerifier().Trusts(dropped), old.Version+1)
	}
	if !strings.Contains(rec.Text(), "key set refused") {
		t.Errorf("the other fleet's key set was not refused in the log:\n%s", rec.Text())
	}

	// An older set published again (another operator's stale copy), and the same one
	// again, change nothing: the next set the relay takes is the one after them.
	if err := op.PublishKeySet(ctx); err != nil {
		t.Fatal(err)
	}
	publish(next)
	rk, err := f.LoadRootKey(f.RootKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	third, err := certs.SignKeySet(rk, certs.KeySet{Version: ks.Version + 1, IssuedAt: time.Now().Unix(), CommandKeys: ks.CommandKeys, GrantKeys: ks.GrantKeys})
	if err != nil {
		t.Fatal(err)
	}
	publish(third)
	select {
	case marker := <-got:
		if marker.Version != ks.Version+1 {
			t.Fatalf("after v%d the relay took v%d, want the marker v%d", ks.Version, marker.Version, ks.Version+1)
		}
	case <-ctx.Done():
		t.Fatalf("the relay never took the marker key set; log:\n%s", rec.Text())
	}
	return third
}

// A relay on the operator's fleet directory (camview serve --fleet) follows the fleet's key
// set on the broker too: it takes only a newer set that the directory's root signed, keeps it
// in memory and never writes it into the directory (which may be a read-only copy), and after
// a restart the broker hands it the set again, retained. Before, it held the set in force in
// the directory when it started, until it was restarted.
func TestAFleetRelayTakesTheFleetsNewerKeySet(t *testing.T) {
	for _, kind := range []string{"embedded", "mosquitto"} {
		t.Run(kind, func(t *testing.T) { fleetRelayTakesTheFleetsNewerKeySet(t, kind) })
	}
}

func fleetRelayTakesTheFleetsNewerKeySet(t *testing.T, kind string) {
	f, url := fleetOn(t, kind, "viewer:web")
	inForce := f.KeySetBytes()
	old := f.KeySet()

	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	dial := func() (<-chan *certs.KeySet, *logtest.Recorder) {
		t.Helper()
		opened, err := fleet.Open(f.Dir) // as camview serve --fleet opens it
		if err != nil {
			t.Fatal(err)
		}
		log, rec := logtest.New()
		got := make(chan *certs.KeySet, 8)
		r, err := relay.DialFleetKeySets(ctx, opened, "web", url, log, func(ks *certs.KeySet) { got <- ks })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return got, rec
	}
	got, rec := dial()
	op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })
	last := takesOnlyNewerKeySets(t, ctx, f, old, got, rec, op)

	if b, err := os.ReadFile(filepath.Join(f.Dir, "keyset.json")); err != nil || !bytes.Equal(b, inForce) {
		t.Errorf("the fleet directory's key set changed (err %v): the relay must not write there", err)
	}
	ks, err := certs.OpenKeySet(f.RootKey(), last)
	if err != nil {
		t.Fatal(err)
	}
	// Restarted: it starts from the directory's set and the broker sends it the newer one.
	got, rec = dial()
	select {
	case again := <-got:
		if again.Version != ks.Version {
			t.Fatalf("after a restart the relay took v%d, want the retained v%d", again.Version, ks.Version)
		}
	case <-ctx.Done():
		t.Fatalf("after a restart the relay never took the retained key set; log:\n%s", rec.Text())
	}
}

// A key-set file that does not open with the bundle's root is an error at load that says what
// to do; a new bundle from another fleet replaces what the relay learnt under the old one.
func TestAKeySetFileOfAnotherRootIsNotTrusted(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	id := enrollIdentity(t, f, "cloud")
	other, _ := fleettest.NewFleet(t)
	path := filepath.Join(id.Dir, relay.IdentityKeySetFile)
	if err := os.WriteFile(path, nextKeySet(t, other), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := relay.LoadIdentity(id.Dir, time.Now())
	if err == nil || !strings.Contains(err.Error(), relay.IdentityKeySetFile) || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("LoadIdentity with another root's key set file: %v", err)
	}

	// Enrolled again into the other fleet: its bundle's set is the one to start from.
	csr, err := os.ReadFile(filepath.Join(id.Dir, relay.IdentityCSRFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nextKeySet(t, f), 0o644); err != nil { // learnt under f
		t.Fatal(err)
	}
	b, _, err := other.IssueViewer(csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.InstallIdentity(id.Dir, b, time.Now()); err != nil {
		t.Fatal(err)
	}
	moved, err := relay.LoadIdentity(id.Dir, time.Now())
	if err != nil {
		t.Fatalf("after enrolling into another fleet: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the key set learnt under the old fleet is still there: %v", err)
	}
	if moved.KeySet() == nil || moved.KeySet().Version != other.KeySet().Version {
		t.Errorf("after enrolling into another fleet the identity holds %+v", moved.KeySet())
	}
}

// A key set the relay cannot keep on disk (a full or read-only disk) is still taken and used
// until the relay stops, and the log says it could not be kept: refusing it would leave the
// relay trusting the keys the breach dropped.
func TestAKeySetThatCannotBeKeptIsStillTaken(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	url := fleettest.StartBroker(t, f)
	id := enrollIdentity(t, f, "cloud")
	// A directory where the file goes: the atomic write's rename fails, even for root.
	if err := os.Mkdir(filepath.Join(id.Dir, relay.IdentityKeySetFile), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	got, rec, op := following(t, ctx, f, id, url)
	if err := op.Client().Publish(ctx, topic.FleetKeySet, 1, true, nextKeySet(t, f)); err != nil {
		t.Fatal(err)
	}
	select {
	case ks := <-got:
		if ks.Version != f.KeySet().Version+1 || id.KeySet().Version != ks.Version {
			t.Fatalf("took v%d, identity holds v%d", ks.Version, id.KeySet().Version)
		}
	case <-ctx.Done():
		t.Fatalf("the relay did not take the key set it could not keep; log:\n%s", rec.Text())
	}
	if !strings.Contains(rec.Text(), "could not be kept") {
		t.Errorf("the log does not say the key set could not be kept:\n%s", rec.Text())
	}
}
