package signer_test

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// mergeFixture is a fleet CA, a registry log and a CRL path, on a clock of its own.
type mergeFixture struct {
	ca  *certs.CA
	log string
	crl string
	now time.Time
}

func newMergeFixture(t testing.TB) *mergeFixture {
	t.Helper()
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	ca, err := certs.NewCA("crl merge test", now.Add(-2*365*24*time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return &mergeFixture{ca: ca, log: filepath.Join(dir, "signer", "log.jsonl"), crl: filepath.Join(dir, "crl.pem"), now: now}
}

func (fx *mergeFixture) open(t *testing.T) *registry.Registry {
	t.Helper()
	r, err := registry.Open(fx.log, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// issue records a device certificate issued at at.
func (fx *mergeFixture) issue(t *testing.T, r *registry.Registry, device string, at time.Time) *x509.Certificate {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := fx.ca.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: device, PublicKey: key.Public(), Now: at})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := registry.IssuedRecord(c, device, registry.ViaEnroll, 1, "", "", at)
	if err != nil {
		t.Fatal(err)
	}
	fx.append(t, r, rec)
	return c
}

func (fx *mergeFixture) append(t *testing.T, r *registry.Registry, recs ...registry.Record) {
	t.Helper()
	if err := r.Update(func(tx *registry.Tx) error {
		for _, rec := range recs {
			if err := tx.Append(rec); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (fx *mergeFixture) write(t *testing.T, r *registry.Registry) signer.CRLWritten {
	t.Helper()
	var w signer.CRLWritten
	if err := r.Update(func(tx *registry.Tx) (err error) {
		w, err = signer.WriteCRL(fx.crl, fx.ca, tx, fx.now)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

// listed returns the serials the CRL at fx.crl lists, after checking its signature.
func (fx *mergeFixture) listed(t *testing.T) map[string]bool {
	t.Helper()
	rl, err := signer.ReadCRL(fx.crl, fx.ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range rl.RevokedCertificateEntries {
		out[registry.SerialHex(e.SerialNumber)] = true
	}
	return out
}

func hexOf(c *x509.Certificate) string { return registry.SerialHex(c.SerialNumber) }

func revocation(serial, device string, at time.Time) registry.Record {
	return registry.Record{Type: registry.TypeRevoked, Serial: serial, Device: device, Time: at}
}

// A fault that changes a revoked serial in the registry's log into another one still parses:
// the log then revokes a serial nobody holds and no longer the stolen certificate. The CRL,
// the revocations' second copy, keeps listing it, and says so.
func TestTheCRLKeepsASerialTheLogLost(t *testing.T) {
	fx := newMergeFixture(t)
	r := fx.open(t)
	stolen := fx.issue(t, r, "cam-0001", fx.now.Add(-time.Hour))
	other := fx.issue(t, r, "cam-0002", fx.now.Add(-time.Hour))
	fx.append(t, r,
		revocation(hexOf(stolen), "cam-0001", fx.now.Add(-time.Minute)),
		revocation(hexOf(other), "cam-0002", fx.now.Add(-time.Minute)))
	if w := fx.write(t, r); w.Listed != 2 || len(w.Kept) != 0 || w.Unread != nil {
		t.Fatalf("first CRL: %+v", w)
	}

	// One hex digit of the stolen certificate's revocation changes into another.
	b, err := os.ReadFile(fx.log)
	if err != nil {
		t.Fatal(err)
	}
	s := hexOf(stolen)
	flipped := s[:len(s)-1] + map[bool]string{true: "0", false: "1"}[s[len(s)-1] != '0']
	line := `"type":"revoked","serial":"` + s + `"`
	if !strings.Contains(string(b), line) {
		t.Fatalf("no revocation of %s in the log", s)
	}
	b = []byte(strings.Replace(string(b), line, `"type":"revoked","serial":"`+flipped+`"`, 1))
	if err := os.WriteFile(fx.log, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = fx.open(t)
	if r.Revoked(stolen.SerialNumber) {
		t.Fatal("the log still revokes the stolen certificate: the fault did not take")
	}

	w := fx.write(t, r)
	got := fx.listed(t)
	if !got[s] || !got[hexOf(other)] || !got[flipped] || len(got) != 3 {
		t.Fatalf("the CRL written after the fault lists %v; want the stolen certificate's %s still, the other's and the changed serial", got, s)
	}
	if len(w.Kept) != 1 || registry.SerialHex(w.Kept[0].Serial) != s || w.Kept[0].Device != "cam-0001" || !w.Kept[0].NotAfter.Equal(stolen.NotAfter) || w.Listed != 3 {
		t.Errorf("CRLWritten = %+v; want the stolen certificate's serial kept, with its device and expiry from the log", w)
	}
	// Kept again by every later CRL.
	fx.write(t, r)
	if !fx.listed(t)[s] {
		t.Fatal("a second CRL dropped the kept serial")
	}
}

// A serial kept from the CRL before stays listed while the log would have kept its
// revocation: until a day after its certificate expired when the log holds the certificate,
// for registry.RevocationKeep after the revocation when it does not.
func TestTheCRLKeepsALostSerialAsLongAsTheLogWould(t *testing.T) {
	fx := newMergeFixture(t)
	r := fx.open(t)
	expired := fx.issue(t, r, "cam-0001", fx.now.Add(-40*24*time.Hour)) // 30 days' validity: expired 10 days ago
	valid := fx.issue(t, r, "cam-0002", fx.now.Add(-time.Hour))
	before := []registry.Revocation{
		{Serial: expired.SerialNumber, Time: fx.now.Add(-35 * 24 * time.Hour)},
		{Serial: valid.SerialNumber, Time: fx.now.Add(-time.Minute)},
		{Serial: big.NewInt(0xabc), Time: fx.now.Add(-(registry.RevocationKeep - time.Hour))}, // unknown, recent enough
		{Serial: big.NewInt(0xabc), Time: fx.now.Add(-(registry.RevocationKeep - time.Hour))}, // listed twice: kept once
		{Serial: big.NewInt(0xdef), Time: fx.now.Add(-(registry.RevocationKeep + time.Hour))}, // unknown, too old
	}
	pemCRL, err := signer.CRL(fx.ca, before, fx.now.Add(-time.Minute), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fx.crl, pemCRL, 0o644); err != nil {
		t.Fatal(err)
	}
	w := fx.write(t, r)
	got := fx.listed(t)
	if !got[hexOf(valid)] || !got["abc"] || got[hexOf(expired)] || got["def"] || len(got) != 2 {
		t.Fatalf("the CRL lists %v; want the valid certificate's serial and abc only", got)
	}
	if len(w.Kept) != 2 || w.Listed != 2 {
		t.Errorf("CRLWritten = %+v", w)
	}
}

// A CRL on disk that is not the fleet CA's, or not a CRL, is not kept from: the new one is
// made from the log alone, and the writer says why.
func TestAnUnreadableCRLIsWrittenFromTheLogAlone(t *testing.T) {
	fx := newMergeFixture(t)
	r := fx.open(t)
	c := fx.issue(t, r, "cam-0001", fx.now.Add(-time.Hour))
	fx.append(t, r, revocation(hexOf(c), "cam-0001", fx.now.Add(-time.Minute)))
	stranger, err := certs.NewCA("another fleet", fx.now.Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := signer.CRL(stranger, []registry.Revocation{{Serial: big.NewInt(0x123), Time: fx.now}}, fx.now, 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"another CA's CRL":  foreign,
		"no PEM":            []byte("not a crl\n"),
		"a broken DER body": pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{0x30, 0x03, 0x02, 0x01}}),
	} {
		if err := os.WriteFile(fx.crl, content, 0o644); err != nil {
			t.Fatal(err)
		}
		w := fx.write(t, r)
		if w.Unread == nil || !errors.Is(w.Unread, signer.ErrBadCRL) || len(w.Kept) != 0 {
			t.Errorf("%s: CRLWritten = %+v; want Unread set and nothing kept", name, w)
		}
		// Moved aside, not lost: an operator can still see what it held.
		if aside, err := os.ReadFile(w.MovedAside); err != nil || !bytes.Equal(aside, content) {
			t.Errorf("%s: the unreadable CRL was not moved aside as it was (%q: %v)", name, w.MovedAside, err)
		}
		os.Remove(w.MovedAside) // the next case is moved to the same name (same time)
		if got := fx.listed(t); !got[hexOf(c)] || len(got) != 1 {
			t.Errorf("%s: the CRL lists %v; want only the log's revocation", name, got)
		}
	}
}

// The embedded broker's view of the CRL follows the file as signers replace it, and nothing
// admits a serial it listed: an unreadable file, or one another CA signed, leaves the serials
// read before listed, and is reported once; a valid CRL that lacks one (written from a log that
// lost it, after the CRL before was damaged) adds its serials to those.
func TestCRLFileFollowsTheFileAndFailsClosed(t *testing.T) {
	fx := newMergeFixture(t)
	log, rec := logtest.New()
	crl := signer.NewCRLFile(fx.crl, fx.ca.Cert, log)
	a, b := big.NewInt(0xa), big.NewInt(0xb)
	if crl.Listed(a) || crl.Len() != 0 {
		t.Fatal("a serial listed before any CRL was written")
	}
	put := func(ca *certs.CA, serials ...*big.Int) {
		t.Helper()
		var rs []registry.Revocation
		for _, s := range serials {
			rs = append(rs, registry.Revocation{Serial: s, Time: fx.now})
		}
		b, err := signer.CRL(ca, rs, fx.now, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.WriteFile(fx.crl, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put(fx.ca, a)
	if !crl.Listed(a) || crl.Listed(b) {
		t.Fatal("the CRL written is not read")
	}
	if err := atomicfile.WriteFile(fx.crl, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if !crl.Listed(a) {
			t.Fatal("a damaged CRL admits the serial it listed")
		}
	}
	stranger, err := certs.NewCA("another fleet", fx.now.Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	put(stranger, b)
	if !crl.Listed(a) || crl.Listed(b) {
		t.Fatal("another CA's CRL replaced the fleet's")
	}
	if n := strings.Count(rec.Text(), "cannot be read"); n != 2 {
		t.Errorf("%d reports of an unreadable CRL for two bad files, want 2:\n%s", n, rec.Text())
	}
	// A valid CRL without a (written from a log that lost it) adds b and keeps a.
	put(fx.ca, b)
	if !crl.Listed(a) || !crl.Listed(b) || crl.Len() != 2 {
		t.Fatal("the fleet's next CRL dropped what the one before listed, or was not read")
	}
	// Gone (moved away by hand): what was read stays.
	if err := os.Remove(fx.crl); err != nil {
		t.Fatal(err)
	}
	if !crl.Listed(b) {
		t.Fatal("a removed CRL admits the serial it listed")
	}
}

// FuzzReadCRL: any bytes in crl.pem are an error naming what is wrong, or a CRL the fleet CA
// signed; CRLFile takes them without a panic and keeps what the one before listed.
func FuzzReadCRL(f *testing.F) {
	fx := newMergeFixture(f)
	good, err := signer.CRL(fx.ca, []registry.Revocation{{Serial: big.NewInt(0xa), Time: fx.now}}, fx.now, 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Add([]byte("not a crl"))
	// One file for the whole run, replaced by rename as the signers do (without their fsync:
	// this is about the bytes).
	path := filepath.Join(f.TempDir(), "crl.pem")
	put := func(t testing.TB, b []byte) {
		if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	put(f, good)
	crl := signer.NewCRLFile(path, fx.ca.Cert, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		put(t, b)
		rl, err := signer.ReadCRL(path, fx.ca.Cert)
		switch {
		case err != nil && !strings.Contains(err.Error(), path):
			t.Fatalf("the error does not name the file: %v", err)
		case err == nil && rl.CheckSignatureFrom(fx.ca.Cert) != nil:
			t.Fatal("ReadCRL returned a CRL the fleet CA did not sign")
		case err != nil && !crl.Listed(big.NewInt(0xa)):
			t.Fatal("an unreadable CRL admits what the one before listed")
		case err == nil:
			put(t, good) // the fleet's own: the one before for the next input
			crl.Listed(big.NewInt(0xa))
		}
	})
}

// A damaged revocation whose time is unreadable takes the time of the record before it; when
// there is none (the first line of the log, once Compact archived what came before) it has no
// time, which x509.CreateRevocationList refuses: the CRL lists it at its own time instead of
// failing every write from then on.
func TestASalvagedRevocationWithoutATimeDoesNotStopTheCRL(t *testing.T) {
	fx := newMergeFixture(t)
	t0 := fx.now
	r := fx.open(t)
	old := fx.issue(t, r, "cam-0001", t0)
	fx.append(t, r, revocation(hexOf(old), "cam-0001", t0.Add(time.Hour)))
	fx.issue(t, r, "cam-0001", t0.Add(20*24*time.Hour)) // the device's newest
	b, _ := os.ReadFile(fx.log)
	b = []byte(strings.Replace(string(b), `"type":"revoked","serial":"`+hexOf(old)+`","device":"cam-0001","time":"`,
		`"type":"revoked","serial":"`+hexOf(old)+`","device":"cam-0001","time":`, 1)) // a quote lost
	if err := os.WriteFile(fx.log, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = fx.open(t)
	fx.now = t0.Add(100 * 24 * time.Hour)
	if err := r.Update(func(tx *registry.Tx) error { _, err := signer.WriteCRL(fx.crl, fx.ca, tx, fx.now); return err }); err != nil {
		t.Fatalf("before compaction: %v", err)
	}
	res, err := r.Compact(fx.now)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(fx.log)
	t.Logf("compact: %+v; first line now: %.80s", res, after)
	err = r.Update(func(tx *registry.Tx) error { _, err := signer.WriteCRL(fx.crl, fx.ca, tx, fx.now); return err })
	if err != nil {
		t.Fatalf("after compaction every CRL write fails: %v", err)
	}
}

// A revoked certificate that expired, whose revocation a later Compact archives (as designed,
// CompactAfter past expiry) while the CRL on disk still lists it (no CRL was written in the 29
// days between NotAfter+1d and the compaction: a quiet fleet). The next CRL must not list it
// (the log would not have kept it), and must not report it as lost to damage. The signer
// writes a CRL before each compaction for that (TestTheSignerWritesTheCRLBeforeItCompacts);
// this is the rule it relies on.
func TestACompactedRevocationIsNotKeptAsDamage(t *testing.T) {
	fx := newMergeFixture(t)
	r := fx.open(t)
	c := fx.issue(t, r, "cam-0001", fx.now.Add(-time.Hour))
	fx.append(t, r, revocation(hexOf(c), "cam-0001", fx.now.Add(-time.Minute)))
	fx.write(t, r)
	if !fx.listed(t)[hexOf(c)] {
		t.Fatal("first CRL does not list it")
	}
	fx.now = c.NotAfter.Add(registry.CompactAfter + 24*time.Hour)
	fx.issue(t, r, "cam-0001", fx.now.Add(-time.Hour)) // its rotation: c is no longer the newest
	fx.write(t, r)                                     // as the signer does before it compacts
	res, err := r.Compact(fx.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compact: %+v", res)
	w := fx.write(t, r)
	if fx.listed(t)[hexOf(c)] || len(w.Kept) != 0 {
		t.Fatalf("the CRL still lists %s (expired %s ago) and reports it as a revocation the log lost: Kept=%d; it stays until %s",
			hexOf(c), fx.now.Sub(c.NotAfter), len(w.Kept), fx.now.Add(-time.Minute).Add(registry.RevocationKeep).Format(time.DateOnly))
	}
}

// A bootstrap certificate lives 10 years. When the issued line of a revoked bootstrap
// certificate is damaged (the longest line, the likeliest hit), the log treats the serial as
// never issued, and keeps its revocation for registry.RevocationKeep, as the CRL does: that
// must outlast the certificate.
func TestABootstrapRevocationLastsAsLongAsTheCertificate(t *testing.T) {
	fx := newMergeFixture(t)
	r := fx.open(t)
	key, _ := certs.GenerateKey()
	boot, err := fx.ca.Issue(certs.IssueRequest{Role: certs.RoleBootstrap, Name: "cam-0001", PublicKey: key.Public(), Now: fx.now})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := registry.IssuedRecord(boot, "cam-0001", registry.ViaEnroll, 1, "", "", fx.now)
	if err != nil {
		t.Fatal(err)
	}
	fx.append(t, r, rec, revocation(hexOf(boot), "cam-0001", fx.now.Add(time.Hour)))
	fx.write(t, r)
	b, _ := os.ReadFile(fx.log)
	b = []byte(strings.Replace(string(b), `"cert":"M`, `"cert":"\u0000`, 1)) // one byte of the certificate
	if err := os.WriteFile(fx.log, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = fx.open(t)
	// Two days before the fleet CA, and so the bootstrap certificate's chain, expires.
	fx.now = fx.ca.Cert.NotAfter.Add(-48 * time.Hour)
	if !boot.NotAfter.After(fx.now) {
		t.Fatal("the bootstrap certificate expired before the CA: this is not the case under test")
	}
	if _, err := r.Compact(fx.now); err != nil {
		t.Fatal(err)
	}
	fx.write(t, r)
	if !r.Revoked(boot.SerialNumber) && !fx.listed(t)[hexOf(boot)] {
		t.Fatalf("the bootstrap certificate %s, valid until %s, is revoked neither by the log nor by the CRL at %s",
			hexOf(boot), boot.NotAfter.Format(time.DateOnly), fx.now.Format(time.DateOnly))
	}
}

// A fault that hits both files (same disk): the log loses a revocation and crl.pem a byte.
// WriteCRL cannot read the damaged CRL, moves it aside and writes one from the log alone;
// CRLFile, in the running broker, still refuses what it listed.
func TestAWriteAfterADamagedCRLAdmitsNothingCRLFileListed(t *testing.T) {
	fx := newMergeFixture(t)
	r := fx.open(t)
	stolen := fx.issue(t, r, "cam-0001", fx.now.Add(-time.Hour))
	fx.append(t, r, revocation(hexOf(stolen), "cam-0001", fx.now.Add(-time.Minute)))
	fx.write(t, r)
	crl := signer.NewCRLFile(fx.crl, fx.ca.Cert, nil)
	// The log loses the revocation (a digit changed) and crl.pem a byte.
	b, _ := os.ReadFile(fx.log)
	s := hexOf(stolen)
	flipped := s[:len(s)-1] + map[bool]string{true: "0", false: "1"}[s[len(s)-1] != '0']
	os.WriteFile(fx.log, []byte(strings.Replace(string(b), `"serial":"`+s+`","device":"cam-0001","time"`, `"serial":"`+flipped+`","device":"cam-0001","time"`, 1)), 0o600)
	c, _ := os.ReadFile(fx.crl)
	c[len(c)/2] ^= 0x01
	os.WriteFile(fx.crl+".tmp", c, 0o644)
	os.Rename(fx.crl+".tmp", fx.crl)
	r = fx.open(t)
	if !crl.Listed(stolen.SerialNumber) {
		t.Fatal("precondition: CRLFile lost it at once")
	}
	w := fx.write(t, r) // the next revocation, or a signer start
	if !crl.Listed(stolen.SerialNumber) {
		t.Fatalf("after one CRL write (Unread=%v), fleetctl broker admits %s", w.Unread, s)
	}
}

// The signer writes the CRL before each compaction, so that the CRL lists nothing the
// compaction drops from the log (certificates expired over a month): otherwise a quiet fleet's
// CRL would still list a revoked certificate whose records the log archived, and the next CRL
// would keep it for years as a revocation the log lost.
func TestTheSignerWritesTheCRLBeforeItCompacts(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	b := mqtttest.StartEmbedded(t, pki)
	start := time.Now()
	later := e.Cert.Leaf.NotAfter.Add(registry.CompactAfter + 48*time.Hour)
	reg := fleetRegistry(t, f)
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// cam-0001's newer certificate, so that the revoked one is not its newest (kept for ever).
	next, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: "cam-0001", PublicKey: key.Public(), Now: later.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := registry.IssuedRecord(next, "cam-0001", registry.ViaEnroll, 1, "", "", later.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Update(func(tx *registry.Tx) error {
		if err := tx.Append(revocation(hexOf(e.Cert.Leaf), "cam-0001", start.UTC())); err != nil {
			return err
		}
		return tx.Append(rec)
	}); err != nil {
		t.Fatal(err)
	}
	clk := newClock(start)
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) { c.Clock = clk })
	if !crlLists(readCRL(t, f.CRLPath()), e.Cert.Leaf) {
		t.Fatal("the CRL at start does not list the revoked certificate")
	}

	clk.Set(later) // the next daily compaction drops the revoked certificate's records
	s.log.WaitFor(t, fleettest.Timeout, "registry compacted")
	if _, ok := reg.Cert(hexOf(e.Cert.Leaf)); ok {
		t.Fatal("the compaction kept the revoked certificate's records: this is not the case under test")
	}
	if crlLists(readCRL(t, f.CRLPath()), e.Cert.Leaf) {
		t.Fatal("after the compaction the CRL still lists the certificate whose records the log archived")
	}
}

// A broker that runs for years must not hold every serial ever revoked: CRLFile forgets a
// serial a day after its certificate expired, as a CRL recorded that expiry, and not before,
// whatever later CRLs leave out. A serial whose expiry no CRL recorded stays listed.
func TestCRLFileForgetsASerialADayAfterItsCertificateExpired(t *testing.T) {
	fx := newMergeFixture(t)
	now := fx.now
	crl := signer.NewCRLFile(fx.crl, fx.ca.Cert, nil)
	crl.SetClock(func() time.Time { return now })
	soon, later, unknown, adopted := big.NewInt(0xa), big.NewInt(0xb), big.NewInt(0xc), big.NewInt(0xd)
	put := func(rs ...registry.Revocation) {
		t.Helper()
		b, err := signer.CRL(fx.ca, rs, now, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.WriteFile(fx.crl, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put(
		registry.Revocation{Serial: soon, Time: now, NotAfter: now.Add(10 * 24 * time.Hour)},
		registry.Revocation{Serial: later, Time: now, NotAfter: now.Add(20 * 24 * time.Hour)},
		registry.Revocation{Serial: unknown, Time: now},
		registry.Revocation{Serial: adopted, Time: now},
	)
	check := func(when string, want map[*big.Int]bool) {
		t.Helper()
		for s, w := range want {
			if got := crl.Listed(s); got != w {
				t.Errorf("%s: serial %x listed = %v, want %v", when, s, got, w)
			}
		}
	}
	all := map[*big.Int]bool{soon: true, later: true, unknown: true, adopted: true}
	check("first CRL", all)
	// The next CRL names only adopted, now with its expiry (the log learnt it): what the
	// first listed stays listed.
	put(registry.Revocation{Serial: adopted, Time: now, NotAfter: now.Add(5 * 24 * time.Hour)})
	check("second CRL", all)
	// Past a day after soon's and adopted's expiry, the next CRL that is read drops them.
	now = fx.now.Add(11*24*time.Hour + time.Second)
	put()
	check("eleven days later", map[*big.Int]bool{soon: false, later: true, unknown: true, adopted: false})
	now = fx.now.Add(21*24*time.Hour + time.Second)
	put()
	check("21 days later", map[*big.Int]bool{soon: false, later: false, unknown: true, adopted: false})
	if crl.Len() != 1 {
		t.Errorf("CRLFile holds %d serials, want 1 (the one whose expiry no CRL recorded)", crl.Len())
	}
}

// The CRL records each revoked certificate's expiry in a non-critical entry extension, and a
// CRL kept from that lacks the certificate in the log keeps the serial only until a day after
// that expiry, not for registry.RevocationKeep.
func TestTheCRLRecordsWhenARevokedCertificateExpires(t *testing.T) {
	fx := newMergeFixture(t)
	r := fx.open(t)
	notAfter := fx.now.Add(3 * 24 * time.Hour).Add(500 * time.Millisecond)
	gone := fx.now.Add(-2 * 24 * time.Hour)
	b, err := signer.CRL(fx.ca, []registry.Revocation{
		{Serial: big.NewInt(0x1), Time: fx.now.Add(-time.Hour), NotAfter: notAfter},
		{Serial: big.NewInt(0x2), Time: fx.now.Add(-time.Hour)},
		{Serial: big.NewInt(0x3), Time: fx.now.Add(-3 * 24 * time.Hour), NotAfter: gone.Add(time.Hour)}, // expired over a day ago by the time the log's CRL is written
	}, gone, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fx.crl, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rl, err := signer.ReadCRL(fx.crl, fx.ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{"1": notAfter.Truncate(time.Second), "2": {}, "3": gone.Add(time.Hour)}
	for _, e := range rl.RevokedCertificateEntries {
		got, ok, err := signer.ListedNotAfter(e)
		w := want[registry.SerialHex(e.SerialNumber)]
		if err != nil || ok != !w.IsZero() || !got.Equal(w) {
			t.Errorf("serial %x: ListedNotAfter = %v, %v, %v; want %v", e.SerialNumber, got, ok, err, w)
		}
		for _, ext := range e.Extensions {
			if ext.Critical {
				t.Errorf("serial %x: a critical entry extension %v: a broker that does not know it would refuse the CRL", e.SerialNumber, ext.Id)
			}
		}
	}
	// The log holds none of the three: 1 is kept with its expiry, 2 for RevocationKeep, 3
	// is dropped (expired over a day before now).
	w := fx.write(t, r)
	got := fx.listed(t)
	if !got["1"] || !got["2"] || got["3"] || len(got) != 2 {
		t.Fatalf("the CRL lists %v; want 1 and 2", got)
	}
	for _, k := range w.Kept {
		if registry.SerialHex(k.Serial) == "1" && !k.NotAfter.Equal(notAfter.Truncate(time.Second)) {
			t.Errorf("kept serial 1 with expiry %v, want %v", k.NotAfter, notAfter.Truncate(time.Second))
		}
	}
	rl, err = signer.ReadCRL(fx.crl, fx.ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rl.RevokedCertificateEntries {
		if got, ok, _ := signer.ListedNotAfter(e); registry.SerialHex(e.SerialNumber) == "1" && (!ok || !got.Equal(notAfter.Truncate(time.Second))) {
			t.Errorf("the CRL written from the one before lost serial 1's expiry: %v, %v", got, ok)
		}
	}
}

// FuzzListedNotAfter: the certificate expiry extension of a CRL entry is a GeneralizedTime,
// or an error naming the serial; never a panic.
func FuzzListedNotAfter(f *testing.F) {
	v, err := asn1.MarshalWithParams(time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC), "generalized")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v)
	f.Add([]byte{0x18, 0x00})
	f.Add(append(v, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := x509.RevocationListEntry{SerialNumber: big.NewInt(0xbeef), Extensions: []pkix.Extension{{Id: signer.OIDCertNotAfter, Value: b}}}
		got, ok, err := signer.ListedNotAfter(e)
		switch {
		case err != nil && (ok || !strings.Contains(err.Error(), "beef")):
			t.Fatalf("ListedNotAfter = %v, %v, %v: an error must name the serial and say no expiry", got, ok, err)
		case err == nil && !ok:
			t.Fatal("an extension that parses gave no expiry")
		}
	})
}
