package e2e

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// loadPair loads a key pair of the fleet directory as it is now: what a thief copied.
func loadPair(t *testing.T, dir, name string) *tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil || c.Leaf == nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &c
}

// A laptop with the operator's key is lost and the signer's host is broken into: `fleetctl
// replace operator` and `fleetctl replace signer` shut the copies out of both brokers (the
// embedded one at once, cutting a live session; Mosquitto once restarted with the new CRL),
// while the running signer goes on with its new certificate and the fleet still rotates.
func TestReplacedOperatorAndSignerKeysNoLongerGetIn(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		cam := startAgent(t, enroll(t, e.f, "cam-0000"), e.url, fastRotation)
		cam.waitConnected(t)
		stolenOp := loadPair(t, e.f.Dir, "operator/operator")
		stolenSigner := loadPair(t, e.f.Dir, "signer/signer")
		live, err := fleettest.TryConnect(t, e.f, e.url, stolenOp)
		if err != nil {
			t.Fatalf("the operator's certificate is refused before its replacement: %v", err)
		}

		for _, id := range []string{"operator", "signer"} {
			out := fleetctl(t, "replace", "--dir", e.f.Dir, id)
			old := stolenOp
			if id == "signer" {
				old = stolenSigner
			}
			want := "revoked 1 earlier certificate(s) of " + id + ":"
			if !strings.Contains(out, "replaced "+id+":") || !strings.Contains(out, want) || !strings.Contains(out, registry.SerialHex(old.Leaf.SerialNumber)) {
				t.Fatalf("fleetctl replace %s said:\n%s", id, out)
			}
		}
		if e.name == "embedded" {
			select {
			case <-live.Lost:
			case <-time.After(10 * time.Second):
				t.Fatal("the embedded broker kept the session of the replaced operator certificate")
			}
		}
		e.applyCRL(t)
		for _, c := range []*tls.Certificate{stolenOp, stolenSigner} {
			if _, err := fleettest.TryConnect(t, e.f, e.url, c); err == nil {
				t.Fatalf("the replaced certificate of %s got in", certs.CertIdentity(c.Leaf))
			}
		}
		if _, err := fleettest.TryConnect(t, e.f, e.url, loadPair(t, e.f.Dir, "operator/operator")); err != nil {
			t.Fatalf("the new operator certificate is refused: %v", err)
		}

		// The signer that was running presents its new certificate when it reconnects (cut by
		// the embedded broker, or by Mosquitto's restart): a rotation still completes.
		fleetctl(t, "rotate", "--dir", e.f.Dir, "--broker", e.url, "--device", "cam-0000")
		waitFor(t, time.Minute, "the device to rotate with the replaced signer", func() bool { return cam.Epoch() >= 1 })
	})
}
