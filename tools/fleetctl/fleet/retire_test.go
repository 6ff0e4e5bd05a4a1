package fleet_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

// enrollReq makes device id's enrollment request the way camagent enroll does.
func enrollReq(t *testing.T, id string) []byte {
	t.Helper()
	req, err := agent.Enroll(filepath.Join(t.TempDir(), id), id)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// Retiring a device revokes every valid certificate of it and of its bootstrap identity, and
// keeps it out of the fleet until it is reinstated; its old certificates stay revoked.
func TestARetiredDeviceIsRevokedAndStaysOutUntilReinstated(t *testing.T) {
	f := newFleet(t)
	now := time.Now()
	for _, id := range []string{"cam-0001", "cam-0002"} {
		if _, _, err := f.Enroll(enrollReq(t, id), now); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	got, err := f.RetireDevices([]string{"cam-0001", "cam-0001"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Device != "cam-0001" || got[0].Already || len(got[0].Revoked) != 2 {
		t.Fatalf("RetireDevices = %+v, want cam-0001 retired now with its device and bootstrap certificates revoked", got)
	}
	for _, c := range reg.DeviceCerts("cam-0001") {
		if !c.IsRevoked() {
			t.Errorf("cam-0001's %s certificate %s is not revoked", c.Role, c.Serial)
		}
	}
	for _, c := range reg.DeviceCerts("cam-0002") {
		if c.IsRevoked() {
			t.Errorf("cam-0002's %s certificate was revoked with cam-0001", c.Role)
		}
	}
	if ids := reg.RetiredDevices(); !slices.Equal(ids, []string{"cam-0001"}) {
		t.Fatalf("retired devices %v", ids)
	}

	again, err := f.RetireDevices([]string{"cam-0001"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !again[0].Already || len(again[0].Revoked) != 0 || !again[0].Since.Equal(got[0].Since) {
		t.Fatalf("retiring it again: %+v, want already retired since %v and nothing left to revoke", again[0], got[0].Since)
	}

	if _, _, err := f.Enroll(enrollReq(t, "cam-0001"), now); !errors.Is(err, fleet.ErrRetired) || !strings.Contains(err.Error(), "--reinstate") {
		t.Fatalf("enrolling the retired device: %v, want ErrRetired naming --reinstate", err)
	}
	if was, err := f.Reinstate("cam-0001", now); err != nil || !was {
		t.Fatalf("Reinstate = %v, %v", was, err)
	}
	if _, _, err := f.Enroll(enrollReq(t, "cam-0001"), now); err != nil {
		t.Fatalf("enrolling the reinstated device: %v", err)
	}
	if was, err := f.Reinstate("cam-0002", now); err != nil || was {
		t.Fatalf("reinstating a device never retired: %v, %v", was, err)
	}
	if n := len(reg.RetiredDevices()); n != 0 {
		t.Fatalf("%d devices still retired", n)
	}
	revoked := 0
	for _, c := range reg.DeviceCerts("cam-0001") {
		if c.IsRevoked() {
			revoked++
		}
	}
	if revoked != 2 {
		t.Fatalf("%d of cam-0001's certificates are revoked after its reinstatement, want its 2 old ones", revoked)
	}
}

// A list with a device that was never enrolled (a typo, at 3 a.m.) retires none of it.
func TestRetiringAnUnknownDeviceRetiresNone(t *testing.T) {
	f := newFleet(t)
	if _, _, err := f.Enroll(enrollReq(t, "cam-0001"), time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, ids := range [][]string{{"cam-0001", "cam-0010"}, {"cam-0001", "not a device"}, {"viewer:web"}} {
		if _, err := f.RetireDevices(ids, time.Now()); err == nil {
			t.Fatalf("RetireDevices(%q) succeeded", ids)
		}
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if _, retired := reg.Retired("cam-0001"); retired {
		t.Fatal("cam-0001 was retired by a list that also named an unknown device")
	}
	for _, c := range reg.DeviceCerts("cam-0001") {
		if c.IsRevoked() {
			t.Fatal("a refused list revoked a certificate")
		}
	}
}

func TestParseDeviceList(t *testing.T) {
	ids, err := fleet.ParseDeviceList([]byte("# returned in the November recall\ncam-0001\n  cam-0002\t\r\n\n#cam-0003\ncam-0001\n"))
	if err != nil || !slices.Equal(ids, []string{"cam-0001", "cam-0002", "cam-0001"}) {
		t.Fatalf("ParseDeviceList = %q, %v", ids, err)
	}
	if _, err := fleet.ParseDeviceList([]byte("cam-0001\ncam 0002\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a bad id: %v, want an error naming line 2", err)
	}
}

// FuzzParseDeviceList: whatever the bytes, every id returned is a valid device id, and an
// error says which line.
func FuzzParseDeviceList(f *testing.F) {
	f.Add([]byte("cam-0001\ncam-0002\n"))
	f.Add([]byte("# comment\n\n  cam-0001  \r\n"))
	f.Add([]byte("viewer:web\n"))
	f.Add([]byte("cam-0001\x00\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := fleet.ParseDeviceList(b)
		if err != nil {
			if ids != nil || (!strings.Contains(err.Error(), "line ") && !strings.Contains(err.Error(), "cap ")) {
				t.Fatalf("error %v with ids %q", err, ids)
			}
			return
		}
		for _, id := range ids {
			if certs.ValidDeviceID(id) != nil {
				t.Fatalf("returned %q, which is no device id", id)
			}
		}
	})
}
