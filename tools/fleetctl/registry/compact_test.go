package registry_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

func (fx *fixture) issueAt(t testing.TB, role certs.Role, name string, at time.Time) *x509.Certificate {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := fx.ca.Issue(certs.IssueRequest{Role: role, Name: name, PublicKey: key.Public(), Now: at})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func confirmed(serial, device string, at time.Time) registry.Record {
	return registry.Record{Type: registry.TypeConfirmed, Serial: serial, Device: device, Time: at}
}

func hex(c *x509.Certificate) string { return registry.SerialHex(c.SerialNumber) }

// Compact drops the records of certificates long expired, keeps everything else, and archives
// what it drops.
func TestCompactDropsLongExpiredCertificatesAndArchivesThem(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	now := t0.Add(90 * 24 * time.Hour)
	old1 := fx.issueAt(t, certs.RoleDevice, "cam-0001", t0)                     // expired at t0+30d: dropped
	cur1 := fx.issueAt(t, certs.RoleDevice, "cam-0001", now.Add(-24*time.Hour)) // valid: kept
	boot1 := fx.issueAt(t, certs.RoleBootstrap, "cam-0001", t0)                 // 10 years: kept
	only2 := fx.issueAt(t, certs.RoleDevice, "cam-0002", t0)                    // expired, but cam-0002's newest: kept
	viewer := fx.issueAt(t, certs.RoleViewer, "web", t0.Add(-90*24*time.Hour))  // expired 90 days after t0-90d: dropped
	vrec, err := registry.ViewerIssuedRecord(viewer, t0)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, r,
		fx.issued(t, old1, registry.ViaEnroll, "", t0),
		fx.issued(t, boot1, registry.ViaEnroll, "", t0),
		fx.issued(t, only2, registry.ViaEnroll, "", t0),
		vrec,
		fx.issued(t, cur1, registry.ViaCSR, "0123456789abcdef", now.Add(-24*time.Hour)),
		confirmed(hex(cur1), "cam-0001", now.Add(-24*time.Hour)),
		revoked(hex(old1), "cam-0001", now.Add(-24*time.Hour)),
		revoked(hex(viewer), "viewer:web", t0),
		revoked("abcdef", "cam-0009", now.Add(-100*24*time.Hour)),                     // a serial never issued here, recent: kept
		revoked("fedcba", "cam-0009", now.Add(-registry.RevocationKeep-24*time.Hour)), // a serial never issued here, old: dropped
	)
	// A line that does not parse: readers skip it, Compact archives it.
	if f, err := os.OpenFile(fx.path, os.O_WRONLY|os.O_APPEND, 0); err != nil {
		t.Fatal(err)
	} else {
		f.WriteString("{not json}\n")
		f.Close()
	}
	before, _ := os.ReadFile(fx.path)

	res, err := r.Compact(now)
	if err != nil {
		t.Fatal(err)
	}
	// Kept: cam-0001's valid certificate and its confirmation, its bootstrap certificate,
	// cam-0002's only certificate, the recent revocation. Dropped: the old certificate and its
	// revocation, the viewer's and its revocation, the old revocation, the malformed line.
	if res.Kept != 5 || res.Dropped != 6 {
		t.Errorf("kept %d, dropped %d records; want 5 and 6", res.Kept, res.Dropped)
	}
	after, _ := os.ReadFile(fx.path)
	archive, err := os.ReadFile(fx.path + registry.ArchiveSuffix)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is lost: every line is in the log or the archive, once.
	lines := func(b []byte) []string { return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") }
	all := append(lines(after), lines(archive)...)
	if len(all) != len(lines(before)) {
		t.Fatalf("%d lines in the log and the archive, %d before", len(all), len(lines(before)))
	}
	for _, l := range lines(before) {
		if !bytes.Contains(after, []byte(l+"\n")) && !bytes.Contains(archive, []byte(l+"\n")) {
			t.Errorf("line lost: %s", l)
		}
	}
	for _, gone := range []string{hex(old1), hex(viewer), "fedcba", "{not json}"} {
		if bytes.Contains(after, []byte(gone)) {
			t.Errorf("%s is still in the log", gone)
		}
	}
	// What the log answers is what it answered, less the dropped certificates.
	if r.Revoked(cur1.SerialNumber) || !r.Revoked(big.NewInt(0xabcdef)) {
		t.Error("the valid certificate reads as revoked, or the kept revocation does not")
	}
	if c, ok := r.Cert(hex(cur1)); !ok || !c.IsConfirmed() {
		t.Errorf("the valid certificate's records: %+v, %v", c, ok)
	}
	if _, ok := r.Cert(hex(old1)); ok {
		t.Error("the dropped certificate is still indexed")
	}
	if ds := r.Devices(); len(ds) != 2 {
		t.Errorf("Devices = %v, want both devices", ds)
	}
	if err := r.Update(func(tx *registry.Tx) error {
		if !tx.Known("cam-0002") {
			return fmt.Errorf("cam-0002 is no longer known")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	rv := map[string]bool{}
	for _, x := range r.Revocations() {
		rv[registry.SerialHex(x.Serial)] = true
	}
	if !rv["abcdef"] || len(rv) != 1 {
		t.Errorf("revocations after compaction: %v, want the recent one of a serial never issued here", rv)
	}

	// Nothing more to drop: nothing is written.
	fi1, _ := os.Stat(fx.path)
	if res, err := r.Compact(now); err != nil || res.Dropped != 0 {
		t.Fatalf("second Compact = %+v, %v", res, err)
	}
	fi2, _ := os.Stat(fx.path)
	if !os.SameFile(fi1, fi2) {
		t.Error("the log was rewritten with nothing to drop")
	}
}

// Another process's Registry follows the compacted log: it reads it, writes to it (not to the
// replaced file), and a revocations cursor from before the compaction still gets the new ones.
func TestAnotherProcessFollowsACompaction(t *testing.T) {
	fx := newFixture(t)
	a, b := fx.open(t), fx.open(t)
	now := t0.Add(90 * 24 * time.Hour)
	old := fx.issueAt(t, certs.RoleDevice, "cam-0001", t0)
	cur := fx.issueAt(t, certs.RoleDevice, "cam-0001", now)
	appendAll(t, a,
		fx.issued(t, old, registry.ViaEnroll, "", t0),
		revoked(hex(old), "cam-0001", t0),
		fx.issued(t, cur, registry.ViaCSR, "0123456789abcdef", now))
	_, cursor := a.RevocationsFrom(0)
	if cursor != 1 {
		t.Fatalf("cursor %d", cursor)
	}

	if res, err := b.Compact(now); err != nil || res.Dropped != 2 {
		t.Fatalf("Compact = %+v, %v", res, err)
	}
	// a appends after the compaction: the record must land in the new log.
	appendAll(t, a, revoked(hex(cur), "cam-0001", now))
	if !b.Revoked(cur.SerialNumber) {
		t.Error("the compacting process does not see the other's revocation")
	}
	c, err := registry.Open(fx.path, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Revoked(cur.SerialNumber) {
		t.Fatal("the revocation did not reach the log at the path: it went to the replaced file")
	}
	// a's old cursor: every revocation again, the new one among them.
	revs, _ := a.RevocationsFrom(cursor)
	if len(revs) != 1 || revs[0].Serial.Cmp(cur.SerialNumber) != 0 {
		t.Errorf("RevocationsFrom(old cursor) after the compaction = %v", revs)
	}
	if _, ok := a.Cert(hex(old)); ok {
		t.Error("the other process still indexes the dropped certificate")
	}
}

// A writer keeps appending while another process compacts again and again: every record it
// committed ends in the log or, if dropped, in the archive; none goes to a replaced file.
func TestCompactionsWhileAnotherProcessWrites(t *testing.T) {
	fx := newFixture(t)
	w, c := fx.open(t), fx.open(t)
	now := t0.Add(400 * 24 * time.Hour)
	const n = 60
	expired := make([]*x509.Certificate, n)
	for i := range expired {
		expired[i] = fx.issueAt(t, certs.RoleViewer, fmt.Sprintf("v%d", i), t0)
	}
	done := make(chan struct{})
	compactions := make(chan int, 1)
	go func() {
		k := 0
		for {
			select {
			case <-done:
				compactions <- k
				return
			default:
			}
			if res, err := c.Compact(now); err != nil {
				t.Error(err)
			} else if res.Dropped > 0 {
				k++
			}
		}
	}()
	for i := range n {
		rec, err := registry.ViewerIssuedRecord(expired[i], t0)
		if err != nil {
			t.Fatal(err)
		}
		appendAll(t, w, rec, revoked(fmt.Sprintf("%x", 0x1000+i), "cam-0001", now))
	}
	close(done)
	k := <-compactions
	log, _ := os.ReadFile(fx.path)
	archive, _ := os.ReadFile(fx.path + registry.ArchiveSuffix)
	for i := range n {
		if !bytes.Contains(log, []byte(fmt.Sprintf(`"serial":"%x"`, 0x1000+i))) {
			t.Fatalf("revocation %d is not in the log (after %d compactions)", i, k)
		}
		s := []byte(`"serial":"` + hex(expired[i]) + `"`)
		if !bytes.Contains(log, s) && !bytes.Contains(archive, s) {
			t.Fatalf("issued record %d is neither in the log nor in the archive", i)
		}
	}
	if k == 0 {
		t.Log("no compaction overlapped the writes this time")
	}
	t.Logf("%d compactions rewrote the log during %d transactions", k, n)
}
