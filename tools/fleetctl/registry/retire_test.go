package registry_test

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

func retired(device string, at time.Time) registry.Record {
	return registry.Record{Type: registry.TypeRetired, Device: device, Time: at}
}

func reinstated(device string, at time.Time) registry.Record {
	return registry.Record{Type: registry.TypeReinstated, Device: device, Time: at}
}

// A retirement is seen by every process until a reinstatement ends it; a second retirement
// of a retired device keeps the first one's time.
func TestARetirementHoldsUntilAReinstatement(t *testing.T) {
	fx := newFixture(t)
	w, other := fx.open(t), fx.open(t)
	appendAll(t, w, fx.issued(t, fx.issue(t, certs.RoleDevice, "cam-0001"), registry.ViaEnroll, "", t0))
	if _, ok := other.Retired("cam-0001"); ok {
		t.Fatal("an enrolled device is retired")
	}

	appendAll(t, w, retired("cam-0001", t0.Add(time.Hour)), retired("cam-0002", t0.Add(time.Hour)))
	appendAll(t, w, retired("cam-0001", t0.Add(2*time.Hour)))
	if at, ok := other.Retired("cam-0001"); !ok || !at.Equal(t0.Add(time.Hour)) {
		t.Fatalf("another process sees cam-0001 retired %v since %v, want since %v", ok, at, t0.Add(time.Hour))
	}
	if got := other.RetiredDevices(); !slices.Equal(got, []string{"cam-0001", "cam-0002"}) {
		t.Fatalf("RetiredDevices = %v", got)
	}
	if err := w.Update(func(tx *registry.Tx) error {
		if _, ok := tx.Retired("cam-0002"); !ok {
			return errors.New("a transaction does not see cam-0002 retired")
		}
		return tx.Append(reinstated("cam-0002", t0.Add(3*time.Hour)))
	}); err != nil {
		t.Fatal(err)
	}
	if _, ok := other.Retired("cam-0002"); ok {
		t.Fatal("cam-0002 is still retired after its reinstatement")
	}
	if got := fx.open(t).RetiredDevices(); !slices.Equal(got, []string{"cam-0001"}) {
		t.Fatalf("a fresh Open says the retired devices are %v", got)
	}
}

func TestRetirementRecordsCarryNoCertificateFields(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	for _, rec := range []registry.Record{
		{Type: registry.TypeRetired, Device: "cam-0001", Serial: hex(c), Time: t0},
		{Type: registry.TypeRetired, Device: "cam-0001", Cert: c.Raw, Time: t0},
		{Type: registry.TypeReinstated, Device: "cam-0001", Epoch: 3, Time: t0},
		{Type: registry.TypeRetired, Device: "viewer:web", Time: t0},
		{Type: registry.TypeRetired, Device: "cam-0001"},
	} {
		err := r.Update(func(tx *registry.Tx) error { return tx.Append(rec) })
		if !errors.Is(err, registry.ErrInvalidRecord) {
			t.Errorf("%+v: Append = %v, want ErrInvalidRecord", rec, err)
		}
	}
}

// Compact keeps the retirement records of a retired device, however old, and drops those of a
// device reinstated since.
func TestCompactKeepsTheRetirementsThatHold(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	now := t0.Add(500 * 24 * time.Hour)
	appendAll(t, r,
		retired("cam-0001", t0), reinstated("cam-0001", t0.Add(time.Hour)), retired("cam-0001", t0.Add(2*time.Hour)),
		retired("cam-0002", t0), reinstated("cam-0002", t0.Add(time.Hour)),
		fx.issued(t, fx.issueAt(t, certs.RoleDevice, "cam-0003", t0), registry.ViaEnroll, "", t0),
		fx.issued(t, fx.issueAt(t, certs.RoleDevice, "cam-0003", t0.Add(time.Hour)), registry.ViaCSR, "0123456789abcdef", t0.Add(time.Hour)),
	)
	res, err := r.Compact(now)
	if err != nil {
		t.Fatal(err)
	}
	if res.Kept != 4 || res.Dropped != 3 {
		t.Errorf("kept %d, dropped %d; want 4 (cam-0001's three, cam-0003's newest) and 3", res.Kept, res.Dropped)
	}
	if got := fx.open(t).RetiredDevices(); !slices.Equal(got, []string{"cam-0001"}) {
		t.Fatalf("after Compact the retired devices are %v, want [cam-0001]", got)
	}
	archive, err := os.ReadFile(fx.path + registry.ArchiveSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(archive), `"device":"cam-0002"`); n != 2 {
		t.Fatalf("the archive holds %d of cam-0002's records, want its retirement and reinstatement", n)
	}
}
