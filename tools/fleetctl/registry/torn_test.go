package registry_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// A reader (the broker, asking Revoked at every CONNECT) that saw a torn last record must see
// the record the next writer puts in its place, even when the log ends up the size it was: the
// revocation would otherwise go unseen until the log grows again.
func TestAReaderSeesTheRecordThatReplacedATornOneOfTheSameSize(t *testing.T) {
	fx := newFixture(t)
	w := fx.open(t)
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	appendAll(t, w, fx.issued(t, c, registry.ViaEnroll, "", t0))
	rev := revoked(registry.SerialHex(c.SerialNumber), "cam-0001", t0.Add(time.Minute))
	line, err := json.Marshal(rev)
	if err != nil {
		t.Fatal(err)
	}
	// A writer died half-way through a longer record: its first len(line)+1 bytes are in the log.
	long, err := json.Marshal(fx.issued(t, fx.issue(t, certs.RoleDevice, "cam-0002"), registry.ViaEnroll, "", t0))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(fx.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(long[:len(line)+1]); err != nil {
		t.Fatal(err)
	}
	f.Close()

	reader := fx.open(t)
	if reader.Revoked(c.SerialNumber) {
		t.Fatal("revoked before any revocation")
	}
	appendAll(t, w, rev) // cuts the torn record off, and appends one of the same size
	if !reader.Revoked(c.SerialNumber) {
		t.Fatal("the reader does not see the revocation written where a torn record was")
	}
}
