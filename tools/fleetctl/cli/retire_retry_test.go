package cli_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// crlLists reports whether the CRL at path lists serial.
func crlLists(t *testing.T, path string, cert *x509.Certificate) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	rl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return true
		}
	}
	return false
}

// retire stopped (killed, the machine lost power) after the registry recorded the retirement
// and its revocations and before it wrote the CRL. Run again, as its own error advice and the
// docs say to, it must still leave a CRL that revokes the camera for Mosquitto; it used to see
// nothing newly revoked and skip the CRL, and said all was done.
func TestRetireRunAgainAfterACrashWritesTheCRL(t *testing.T) {
	dir, f := initFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()
	mustRun(t, "crl", "--dir", dir) // the fleet runs Mosquitto: crl.pem is its crlfile

	// What the first run did before it stopped.
	if _, err := f.RetireDevices([]string{"cam-0001"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	f.Close()

	out := mustRun(t, "retire", "--dir", dir, "--broker", url, "--device", "cam-0001")
	if !crlLists(t, f.CRLPath(), e.Cert.Leaf) {
		t.Fatalf("after retire ran again, %s does not revoke cam-0001's certificate; retire said:\n%s", f.CRLPath(), out)
	}
}

// retire from a copy of the fleet directory without the CA key cannot write the CRL, but the
// retirement and the revocations are recorded: it must still clear the cameras' retained state
// (which needs no key), and say what is left to do, instead of stopping with advice (run
// fleetctl crl) that leaves the state on the broker.
func TestRetireWithoutTheCAKeyStillClearsRetainedState(t *testing.T) {
	dir, f := initFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()
	publishState(t, f, url, "cam-0001", wire.DeviceState{Epoch: 0, Rotation: wire.RotationIdle})
	laptop := copyFleetDir(t, dir)
	if err := os.Remove(filepath.Join(laptop, "ca.key")); err != nil {
		t.Fatal(err)
	}

	_, _, err := run(t, "retire", "--dir", laptop, "--broker", url, "--device", "cam-0001")
	if err == nil || !strings.Contains(err.Error(), "CRL") {
		t.Errorf("retire without the CA key: %v, want an error saying the CRL was not written", err)
	}
	if _, reported := retained(t, f, url).DeviceEpoch("cam-0001"); reported {
		t.Fatalf("retire without the CA key left cam-0001's retained state on the broker (error: %v)", err)
	}
}
