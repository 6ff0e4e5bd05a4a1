package cli_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// The CRL is the second copy of every revocation: when a fault changes a revoked serial in
// the registry's log (the line still parses, so nothing salvages it), fleetctl broker still
// refuses the certificate, because crl.pem lists it, and fleetctl check says what happened.
func TestTheBrokerRefusesASerialTheLogLostButTheCRLLists(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	stolen := fleettest.Enroll(t, f, "cam-0001")
	good := fleettest.Enroll(t, f, "cam-0002")
	serial := registry.SerialHex(stolen.Cert.Leaf.SerialNumber)
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Update(func(tx *registry.Tx) error {
		return tx.Append(registry.Record{Type: registry.TypeRevoked, Serial: serial, Device: "cam-0001", Time: time.Now().UTC()})
	}); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	fleettest.Run(t, "crl", "--dir", f.Dir)

	// A digit of the revoked serial changes into another.
	b, err := os.ReadFile(f.RegistryPath())
	if err != nil {
		t.Fatal(err)
	}
	flipped := serial[:len(serial)-1] + map[bool]string{true: "0", false: "1"}[serial[len(serial)-1] != '0']
	was := `"type":"revoked","serial":"` + serial + `"`
	if !strings.Contains(string(b), was) {
		t.Fatal("no revocation in the log")
	}
	b = []byte(strings.Replace(string(b), was, `"type":"revoked","serial":"`+flipped+`"`, 1))
	if err := os.WriteFile(f.RegistryPath(), b, 0o600); err != nil {
		t.Fatal(err)
	}

	url := fleettest.StartBroker(t, f, "--data", t.TempDir())
	if _, err := fleettest.TryConnect(t, f, url, stolen.Cert); err == nil {
		t.Fatal("the broker admitted a certificate the CRL lists as revoked")
	}
	if _, err := fleettest.TryConnect(t, f, url, good.Cert); err != nil {
		t.Fatalf("the broker refused a certificate nobody revoked: %v", err)
	}

	// The next CRL keeps it; check reports the serial the log lacks.
	fleettest.Run(t, "crl", "--dir", f.Dir)
	out := fleettest.Run(t, "check", "--dir", f.Dir)
	if !strings.Contains(out, "lists 1 serial the registry's log lacks") {
		t.Errorf("fleetctl check does not report the serial the log lost:\n%s", out)
	}
}

// fleetctl check lists the damaged lines of the registry's log, and what they still revoke.
func TestCheckReportsTheDamagedLinesOfTheLog(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	cam := fleettest.Enroll(t, f, "cam-0001")
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Update(func(tx *registry.Tx) error {
		return tx.Append(registry.Record{Type: registry.TypeRevoked, Serial: registry.SerialHex(cam.Cert.Leaf.SerialNumber), Device: "cam-0001", Time: time.Now().UTC()})
	}); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	b, err := os.ReadFile(f.RegistryPath())
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.Replace(string(b), `"time":"`, `"time":`, 1)) // the first record's
	b = []byte(strings.Replace(string(b), `"type":"revoked","serial":"`+registry.SerialHex(cam.Cert.Leaf.SerialNumber)+`","device":"cam-0001","time":"`, `"type":"revoked","serial":"`+registry.SerialHex(cam.Cert.Leaf.SerialNumber)+`","device":"cam-0001","time":`, 1))
	if err := os.WriteFile(f.RegistryPath(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := fleettest.Run(t, "check", "--dir", f.Dir)
	if !strings.Contains(out, "2 damaged lines in "+f.RegistryPath()) || !strings.Contains(out, "the 1 serial they still name as revoked stay revoked") {
		t.Errorf("fleetctl check does not list the damaged lines:\n%s", out)
	}
	if !strings.Contains(out, "registry") || !strings.Contains(out, "WARN") {
		t.Errorf("no warning:\n%s", out)
	}
}
