package registry_test

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// damage writes the log's lines again, each through fn (given the line without its newline,
// returning what to write instead, newline included).
func damage(t *testing.T, path string, fn func(i int, line string) string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		out.WriteString(fn(i, l))
	}
	if err := os.WriteFile(path, []byte(out.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A storage fault that leaves a revocation's line unreadable must not admit the certificate
// again: every serial the damaged line still names as revoked stays revoked, and the damage is
// reported. A damaged line that names no revocation is reported and skipped.
func TestARevocationOnADamagedLineStaysRevoked(t *testing.T) {
	fx := newFixture(t)
	w := fx.open(t)
	c1 := fx.issue(t, certs.RoleDevice, "cam-0001")
	c2 := fx.issue(t, certs.RoleDevice, "cam-0002")
	c3 := fx.issue(t, certs.RoleDevice, "cam-0003")
	c4 := fx.issue(t, certs.RoleDevice, "cam-0004")
	appendAll(t, w,
		fx.issued(t, c1, registry.ViaEnroll, "", t0),
		fx.issued(t, c2, registry.ViaEnroll, "", t0),
		fx.issued(t, c3, registry.ViaEnroll, "", t0),
		fx.issued(t, c4, registry.ViaEnroll, "", t0.Add(time.Minute)), // line 3
	)
	appendAll(t, w,
		revoked(hex(c1), "cam-0001", t0.Add(2*time.Minute)), // line 4
		revoked(hex(c2), "cam-0002", t0.Add(3*time.Minute)), // line 5
		revoked(hex(c3), "cam-0003", t0.Add(4*time.Minute)), // line 6
	)
	damage(t, fx.path, func(i int, l string) string {
		switch i {
		case 3: // the issued record: a byte of its certificate changed
			return strings.Replace(l, `"cert":"M`, `"cert":"\u0000`, 1) + "\n"
		case 4: // the revocation's time: a quote lost
			return strings.Replace(l, `"time":"`, `"time":`, 1) + "\n"
		case 5: // the newline between two revocations turned into another byte
			return l + "\x0b"
		}
		return l + "\n"
	})

	r := fx.open(t)
	for _, c := range []struct {
		name   string
		serial string
	}{{"c1", hex(c1)}, {"c2", hex(c2)}, {"c3", hex(c3)}} {
		if _, ok := r.Cert(c.serial); !ok {
			t.Fatalf("%s's issued record was lost", c.name)
		}
	}
	if !r.Revoked(c1.SerialNumber) || !r.Revoked(c2.SerialNumber) || !r.Revoked(c3.SerialNumber) {
		t.Fatalf("revoked: c1 %v, c2 %v, c3 %v; want all three", r.Revoked(c1.SerialNumber), r.Revoked(c2.SerialNumber), r.Revoked(c3.SerialNumber))
	}
	if c, _ := r.Cert(hex(c1)); !c.IsRevoked() {
		t.Error("Cert does not say c1 is revoked")
	}
	if r.Revoked(c4.SerialNumber) {
		t.Error("the certificate on the damaged issued line reads as revoked")
	}
	times := map[string]time.Time{}
	devices := map[string]string{}
	for _, rv := range r.Revocations() {
		times[registry.SerialHex(rv.Serial)] = rv.Time
		devices[registry.SerialHex(rv.Serial)] = rv.Device
	}
	// c1's own time is unreadable: it takes the last readable record's, c3's issue (c4's
	// line is damaged too).
	if !times[hex(c1)].Equal(t0) || !times[hex(c2)].Equal(t0.Add(3*time.Minute)) || !times[hex(c3)].Equal(t0.Add(4*time.Minute)) {
		t.Errorf("revocation times %v", times)
	}
	if devices[hex(c1)] != "cam-0001" || devices[hex(c2)] != "cam-0002" || devices[hex(c3)] != "cam-0003" {
		t.Errorf("revocation devices %v", devices)
	}
	ds, n := r.Damaged()
	if n != 3 || len(ds) != 3 {
		t.Fatalf("Damaged = %+v, %d; want the three damaged lines", ds, n)
	}
	if len(ds[0].Revoked) != 0 || !slices.Equal(ds[1].Revoked, []string{hex(c1)}) || !slices.Equal(ds[2].Revoked, []string{hex(c2), hex(c3)}) {
		t.Errorf("Damaged = %+v", ds)
	}
	if ds[0].Offset == 0 || ds[0].Offset >= ds[1].Offset || ds[1].Offset >= ds[2].Offset || ds[0].Err == "" {
		t.Errorf("Damaged offsets or errors: %+v", ds)
	}
}

// A damaged line that still names a revocation is kept as it is by Compact (its revocation
// is in no other line), while one that names none goes to the archive like any other line
// that is not a record.
func TestCompactKeepsADamagedRevocation(t *testing.T) {
	fx := newFixture(t)
	w := fx.open(t)
	now := t0.Add(90 * 24 * time.Hour)
	old := fx.issueAt(t, certs.RoleDevice, "cam-0001", t0)                     // expired long ago: dropped
	cur := fx.issueAt(t, certs.RoleDevice, "cam-0001", now.Add(-24*time.Hour)) // valid
	stolen := fx.issueAt(t, certs.RoleDevice, "cam-0002", now.Add(-time.Hour)) // valid, revoked
	appendAll(t, w,
		fx.issued(t, old, registry.ViaEnroll, "", t0),
		fx.issued(t, cur, registry.ViaCSR, "0123456789abcdef", now.Add(-24*time.Hour)),
		fx.issued(t, stolen, registry.ViaEnroll, "", now.Add(-time.Hour)),
		revoked(hex(stolen), "cam-0002", now.Add(-time.Minute)),
	)
	line, err := json.Marshal(revoked(hex(stolen), "cam-0002", now.Add(-time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	damaged := string(bytes.Replace(line, []byte(`"time":"`), []byte(`"time":`), 1))
	damage(t, fx.path, func(i int, l string) string {
		if i == 3 {
			return damaged + "\n" + "{garbage}\n"
		}
		return l + "\n"
	})
	r := fx.open(t)
	res, err := r.Compact(now)
	if err != nil {
		t.Fatal(err)
	}
	if res.Dropped != 2 { // the old certificate, the garbage
		t.Errorf("dropped %d lines, want 2", res.Dropped)
	}
	after, _ := os.ReadFile(fx.path)
	archive, _ := os.ReadFile(fx.path + registry.ArchiveSuffix)
	if !bytes.Contains(after, []byte(damaged+"\n")) || bytes.Contains(archive, []byte(damaged)) {
		t.Errorf("the damaged revocation was not kept in the log as it was:\n%s", after)
	}
	if !bytes.Contains(archive, []byte("{garbage}\n")) || bytes.Contains(after, []byte("{garbage}")) {
		t.Errorf("the damaged line naming no revocation was not archived:\n%s", archive)
	}
	if !r.Revoked(stolen.SerialNumber) || !fx.open(t).Revoked(stolen.SerialNumber) {
		t.Error("the revocation on the damaged line was lost by the compaction")
	}
	if _, n := r.Damaged(); n != 1 {
		t.Errorf("%d damaged lines after the compaction, want 1", n)
	}
}

// A damaged revocation without a readable time, of a certificate the log issued, leaves the
// log with that certificate's records (it expired long ago): kept, it would be a revocation of
// a serial the log no longer knows, listed by every CRL for years.
func TestADamagedRevocationWithoutATimeLeavesWithItsCertificate(t *testing.T) {
	fx := newFixture(t)
	w := fx.open(t)
	old := fx.issueAt(t, certs.RoleDevice, "cam-0001", t0)
	appendAll(t, w, fx.issued(t, old, registry.ViaEnroll, "", t0), revoked(hex(old), "cam-0001", t0.Add(time.Hour)))
	damage(t, fx.path, func(i int, l string) string {
		if i == 1 {
			return strings.Replace(l, `"time":"`, `"time":`, 1) + "\n"
		}
		return l + "\n"
	})
	r := fx.open(t)
	later := t0.Add(5 * 365 * 24 * time.Hour)
	cur := fx.issueAt(t, certs.RoleDevice, "cam-0001", later.Add(-time.Hour))
	appendAll(t, r, fx.issued(t, cur, registry.ViaCSR, "0123456789abcdef", later.Add(-time.Hour)))
	if _, err := r.Compact(later); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(fx.path)
	var na time.Time
	for _, rv := range r.Revocations() {
		if registry.SerialHex(rv.Serial) == hex(old) {
			na = rv.NotAfter
		}
	}
	if strings.Contains(string(b), hex(old)) {
		t.Fatalf("5 years on (certificate expired %s), the log still holds the damaged revocation of %s (NotAfter now %v: a CRL lists it forever)",
			old.NotAfter.Format(time.DateOnly), hex(old), na)
	}
}

// Compact compares a revocation's serial in its canonical form, as the index does (0abc
// revokes abc): a revocation written with a leading zero, by a clock long behind, is kept with
// its certificate.
func TestCompactKeepsARevocationWrittenWithALeadingZero(t *testing.T) {
	fx := newFixture(t)
	w := fx.open(t)
	now := t0.Add(time.Hour)
	c := fx.issueAt(t, certs.RoleDevice, "cam-0001", t0)
	// A revocation written by a process whose clock was 500 days behind, with a leading zero.
	appendAll(t, w, fx.issued(t, c, registry.ViaEnroll, "", t0), revoked("0"+hex(c), "cam-0001", now.Add(-500*24*time.Hour)))
	other := fx.issueAt(t, certs.RoleDevice, "cam-0002", t0.Add(-90*24*time.Hour))
	appendAll(t, w, fx.issued(t, other, registry.ViaEnroll, "", t0.Add(-90*24*time.Hour)))
	other2 := fx.issueAt(t, certs.RoleDevice, "cam-0002", t0)
	appendAll(t, w, fx.issued(t, other2, registry.ViaEnroll, "", t0)) // something to compact
	if !w.Revoked(c.SerialNumber) {
		t.Fatal("not revoked before compaction")
	}
	if _, err := w.Compact(now); err != nil {
		t.Fatal(err)
	}
	if !w.Revoked(c.SerialNumber) {
		t.Fatalf("Compact un-revoked %s, a certificate valid until %s", hex(c), c.NotAfter.Format(time.DateOnly))
	}
}

// A fault that changes the newline ending the log's last line (case 5 of
// TestARevocationOnADamagedLineStaysRevoked, on the last line) must not make the next writer
// cut the revocation off as a half-written record: the line gets its newline back.
func TestALastLineThatLostItsNewlineIsEndedNotCutOff(t *testing.T) {
	fx := newFixture(t)
	w := fx.open(t)
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	appendAll(t, w, fx.issued(t, c, registry.ViaEnroll, "", t0), revoked(hex(c), "cam-0001", t0.Add(time.Hour)))
	damage(t, fx.path, func(i int, l string) string {
		if i == 1 {
			return l + "\x0b"
		}
		return l + "\n"
	})
	r := fx.open(t)
	revokedOnRead := r.Revoked(c.SerialNumber)
	other := fx.issue(t, certs.RoleDevice, "cam-0002")
	appendAll(t, r, fx.issued(t, other, registry.ViaEnroll, "", t0.Add(2*time.Hour)))
	b, _ := os.ReadFile(fx.path)
	a, _ := os.ReadFile(fx.path + registry.ArchiveSuffix)
	if !revokedOnRead || !r.Revoked(c.SerialNumber) {
		t.Fatalf("revoked on read %v, after the next write %v; the line is in the log %v, in the archive %v",
			revokedOnRead, r.Revoked(c.SerialNumber), strings.Contains(string(b), `"type":"revoked"`), strings.Contains(string(a), `"type":"revoked"`))
	}
}

// A revoked serial written with leading zeros (another writer, or a fault that turned a
// leading digit into a 0) revokes the certificate.
func TestARevocationWithLeadingZerosRevokes(t *testing.T) {
	fx := newFixture(t)
	w := fx.open(t)
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	appendAll(t, w, fx.issued(t, c, registry.ViaEnroll, "", t0), revoked("00"+hex(c), "cam-0001", t0.Add(time.Hour)))
	if !fx.open(t).Revoked(c.SerialNumber) {
		t.Fatal("a revocation written with leading zeros does not revoke")
	}
}
