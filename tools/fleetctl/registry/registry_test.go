package registry_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	ca   *certs.CA
	path string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ca, err := certs.NewCA("registry test", t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ca: ca, path: filepath.Join(t.TempDir(), "signer", "log.jsonl")}
}

func (fx *fixture) open(t testing.TB) *registry.Registry {
	t.Helper()
	r, err := registry.Open(fx.path, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (fx *fixture) issue(t *testing.T, role certs.Role, device string) *x509.Certificate {
	t.Helper()
	return fx.issueAt(t, role, device, t0)
}

func (fx *fixture) issued(t testing.TB, c *x509.Certificate, via, reqID string, at time.Time) registry.Record {
	t.Helper()
	_, device, _ := certs.ParseIdentity(certs.CertIdentity(c))
	th := ""
	if certs.CertIdentity(c) == device {
		th = strings.Repeat("ab", 32)
	}
	rec, err := registry.IssuedRecord(c, device, via, 1, th, reqID, at)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func appendAll(t testing.TB, r *registry.Registry, recs ...registry.Record) {
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

func revoked(serial, device string, at time.Time) registry.Record {
	return registry.Record{Type: registry.TypeRevoked, Serial: serial, Device: device, Time: at}
}

func TestARecordAppendedByOneProcessIsSeenByAnother(t *testing.T) {
	fx := newFixture(t)
	a, b := fx.open(t), fx.open(t) // two open files: flock treats them as two processes
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	appendAll(t, a, fx.issued(t, c, registry.ViaCSR, "0123456789abcdef", t0))
	if b.Revoked(c.SerialNumber) {
		t.Fatal("revoked before any revocation")
	}
	appendAll(t, a, revoked(registry.SerialHex(c.SerialNumber), "cam-0001", t0.Add(time.Second)))
	if !b.Revoked(c.SerialNumber) {
		t.Fatal("the other registry does not see the revocation")
	}
	got, ok := b.Cert(registry.SerialHex(c.SerialNumber))
	if !ok || !got.IsRevoked() || got.Device != "cam-0001" || got.Epoch != 1 || got.ReqID != "0123456789abcdef" {
		t.Fatalf("Cert = %+v, %v", got, ok)
	}
	revs := b.Revocations()
	if len(revs) != 1 || revs[0].Serial.Cmp(c.SerialNumber) != 0 || !revs[0].NotAfter.Equal(c.NotAfter) {
		t.Fatalf("Revocations = %+v", revs)
	}
	fi, err := os.Stat(fx.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("log mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(fx.path)); di.Mode().Perm() != 0o700 {
		t.Errorf("log directory mode %v, want 0700", di.Mode().Perm())
	}
}

func TestConcurrentWritersInterleaveWholeRecords(t *testing.T) {
	fx := newFixture(t)
	const writers, each = 4, 25
	certsBy := make([][]*x509.Certificate, writers)
	for w := range certsBy {
		for i := range each {
			certsBy[w] = append(certsBy[w], fx.issue(t, certs.RoleDevice, fmt.Sprintf("cam-%d-%d", w, i)))
		}
	}
	var wg sync.WaitGroup
	for w := range writers {
		r := fx.open(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range certsBy[w] {
				rec, err := registry.IssuedRecord(c, certs.CertIdentity(c), registry.ViaCSR, 1, "", "0123456789abcdef", t0)
				if err == nil {
					err = r.Update(func(tx *registry.Tx) error { return tx.Append(rec) })
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	r := fx.open(t)
	if n := len(r.Devices()); n != writers*each {
		t.Fatalf("%d devices in the log, want %d", n, writers*each)
	}
}

func TestATornLastRecordIsCutOffByTheNextWriter(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	c1 := fx.issue(t, certs.RoleDevice, "cam-0001")
	appendAll(t, r, fx.issued(t, c1, registry.ViaEnroll, "", t0))
	// A writer died half-way through its record.
	f, err := os.OpenFile(fx.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"type":"revoked","serial":"`)
	f.Close()

	reader := fx.open(t)
	if reader.Revoked(c1.SerialNumber) {
		t.Fatal("a half-written record took effect")
	}
	c2 := fx.issue(t, certs.RoleDevice, "cam-0002")
	appendAll(t, fx.open(t), fx.issued(t, c2, registry.ViaEnroll, "", t0))
	if _, ok := reader.Cert(registry.SerialHex(c2.SerialNumber)); !ok {
		t.Fatal("the record after the repaired tail is not seen")
	}
	b, _ := os.ReadFile(fx.path)
	if lines := bytes.Count(b, []byte("\n")); lines != 2 || !bytes.HasSuffix(b, []byte("\n")) {
		t.Fatalf("log after repair has %d lines:\n%s", lines, b)
	}
}

func TestAMalformedLineIsSkipped(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	appendAll(t, r, fx.issued(t, c, registry.ViaEnroll, "", t0))
	f, _ := os.OpenFile(fx.path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("not json\n{\"type\":\"revoked\",\"serial\":\"XYZ\",\"device\":\"cam-0001\",\"time\":\"2026-11-01T12:00:00Z\"}\n")
	f.Close()
	appendAll(t, r, revoked(registry.SerialHex(c.SerialNumber), "cam-0001", t0))
	if !fx.open(t).Revoked(c.SerialNumber) {
		t.Fatal("the record after malformed lines was lost")
	}
}

func TestAFailedTransactionLeavesNoTrace(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	boom := errors.New("boom")
	err := r.Update(func(tx *registry.Tx) error {
		if err := tx.Append(fx.issued(t, c, registry.ViaCSR, "0123456789abcdef", t0)); err != nil {
			return err
		}
		if !tx.Known("cam-0001") {
			t.Error("a transaction does not see its own record")
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v", err)
	}
	if _, ok := r.Cert(registry.SerialHex(c.SerialNumber)); ok {
		t.Fatal("the index kept a record of a failed transaction")
	}
	if b, _ := os.ReadFile(fx.path); len(b) != 0 {
		t.Fatalf("the file kept a record of a failed transaction: %s", b)
	}
}

func TestRecordsThatCouldHoldSecretsAreRefused(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	good := fx.issued(t, c, registry.ViaCSR, "0123456789abcdef", t0)
	for name, mutate := range map[string]func(*registry.Record){
		"a certificate that is a PEM private key": func(r *registry.Record) {
			key, _ := certs.GenerateKey()
			r.Cert, _ = certs.MarshalKeyPEM(key)
		},
		"a certificate for another device": func(r *registry.Record) { r.Device = "cam-0002" },
		"a token that is not a hash":       func(r *registry.Record) { r.TokenHash = "my-secret-token" },
		"a revocation carrying a certificate": func(r *registry.Record) {
			r.Type = registry.TypeRevoked
		},
		"a malformed serial": func(r *registry.Record) { r.Serial = "0xAB" },
	} {
		t.Run(name, func(t *testing.T) {
			rec := good
			mutate(&rec)
			err := r.Update(func(tx *registry.Tx) error { return tx.Append(rec) })
			if !errors.Is(err, registry.ErrInvalidRecord) {
				t.Fatalf("Append = %v, want ErrInvalidRecord", err)
			}
		})
	}
	if b, _ := os.ReadFile(fx.path); len(b) != 0 {
		t.Fatalf("refused records reached the log: %s", b)
	}
}

func TestFindRequestReturnsTheRecordedCertificate(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	c := fx.issue(t, certs.RoleDevice, "cam-0001")
	appendAll(t, r, fx.issued(t, c, registry.ViaCSR, "0123456789abcdef", t0))
	err := fx.open(t).Update(func(tx *registry.Tx) error {
		got, gotCert, ok, err := tx.FindRequest("cam-0001", "0123456789abcdef")
		if err != nil || !ok {
			return fmt.Errorf("FindRequest: %v, %v", ok, err)
		}
		if got.Serial != registry.SerialHex(c.SerialNumber) || !bytes.Equal(gotCert.Raw, c.Raw) {
			return fmt.Errorf("FindRequest returned %s", got.Serial)
		}
		if _, _, ok, _ := tx.FindRequest("cam-0001", "fedcba9876543210"); ok {
			return errors.New("found a request that was never made")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOutcomesCountConfirmationsWithinTheTimeout(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	var recs []registry.Record
	var cs []*x509.Certificate
	for i := range 4 {
		c := fx.issue(t, certs.RoleDevice, fmt.Sprintf("cam-000%d", i))
		cs = append(cs, c)
		recs = append(recs, fx.issued(t, c, registry.ViaCSR, "0123456789abcdef", t0))
	}
	confirm := func(c *x509.Certificate, at time.Time) registry.Record {
		return registry.Record{Type: registry.TypeConfirmed, Serial: registry.SerialHex(c.SerialNumber), Device: certs.CertIdentity(c), Time: at}
	}
	// 0 confirmed in time, 1 confirmed late, 2 never, 3 still within its timeout below.
	recs = append(recs, confirm(cs[0], t0.Add(time.Minute)), confirm(cs[1], t0.Add(10*time.Minute)))
	appendAll(t, r, recs...)
	got := r.Outcomes(t0.Add(-time.Hour), t0.Add(20*time.Minute), 5*time.Minute)
	if want := (registry.Outcome{Issued: 4, Confirmed: 1, Failed: 3}); got != want {
		t.Errorf("after the timeout: %+v, want %+v", got, want)
	}
	got = r.Outcomes(t0.Add(-time.Hour), t0.Add(2*time.Minute), 5*time.Minute)
	if want := (registry.Outcome{Issued: 4, Confirmed: 1, Pending: 3}); got != want {
		t.Errorf("within the timeout: %+v, want %+v", got, want)
	}
	if got := r.Outcomes(t0.Add(time.Second), t0.Add(time.Hour), time.Minute); got.Issued != 0 {
		t.Errorf("since after every issue: %+v", got)
	}
}

func TestEnrollmentsAreNotRotations(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	appendAll(t, r,
		fx.issued(t, fx.issue(t, certs.RoleDevice, "cam-0001"), registry.ViaEnroll, "", t0),
		fx.issued(t, fx.issue(t, certs.RoleBootstrap, "cam-0001"), registry.ViaEnroll, "", t0))
	if o := r.Outcomes(t0.Add(-time.Hour), t0.Add(time.Hour), time.Minute); o.Issued != 0 {
		t.Fatalf("enrollments counted as rotations: %+v", o)
	}
	cs := r.DeviceCerts("cam-0001")
	if len(cs) != 2 || cs[0].Role != certs.RoleDevice || cs[1].Role != certs.RoleBootstrap || cs[1].TokenHash != "" {
		t.Fatalf("DeviceCerts = %+v", cs)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	fx := newFixture(t)
	r, err := registry.Open(fx.path, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Update(func(*registry.Tx) error { return nil }); !errors.Is(err, registry.ErrClosed) {
		t.Fatalf("Update after Close = %v", err)
	}
}

// FuzzOpen feeds arbitrary log contents to Open: it must index what parses and never panic.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(`{"type":"revoked","serial":"ab","device":"cam-0001","time":"2026-11-01T12:00:00Z"}` + "\n"))
	f.Add([]byte("{\"type\":\"confirmed\",\"serial\":\"ab\",\"device\":\"cam-0001\",\"time\":\"2026-11-01T12:00:00Z\"}\n{\"type\""))
	f.Add([]byte("\n\n{}\n"))
	f.Add([]byte(`{"type":"revoked","serial":"cd","device":"viewer:cloud","time":"2026-11-01T12:00:00Z"}` + "\n"))
	f.Add([]byte(`{"type":"revoked","serial":"ef","device":"operator:admin","time":"2026-11-01T12:00:00Z"}` + "\n" + `{"type":"confirmed","serial":"ef","device":"signer:default","time":"2026-11-01T12:00:00Z"}` + "\n"))
	f.Add([]byte(`{"type":"retired","device":"cam-0001","time":"2026-11-01T12:00:00Z"}` + "\n" + `{"type":"reinstated","device":"cam-0001","time":"2026-11-01T13:00:00Z"}` + "\n"))
	// Damaged revocations: a time without its quote, two records run together.
	f.Add([]byte(`{"type":"revoked","serial":"ab","device":"cam-0001","time":2026-11-01T12:00:00Z"}` + "\n" +
		`{"type":"revoked","serial":"cd","device":"cam-0002","time":"2026-11-01T12:00:00Z"}` + "\x0b" + `{"type":"revoked","serial":"ef","device":"cam-0003","time":"2026-11-01T12:00:00Z"}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "log.jsonl")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := registry.Open(path, registry.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		revs := map[string]bool{}
		for _, rv := range r.Revocations() {
			revs[registry.SerialHex(rv.Serial)] = true
		}
		ds, n := r.Damaged()
		if len(ds) > n || len(ds) > registry.MaxDamageReported || n > bytes.Count(b, []byte("\n"))+1 {
			t.Fatalf("Damaged reports %d lines and counts %d in a log of %d bytes", len(ds), n, len(b))
		}
		for _, d := range ds {
			if d.Err == "" || d.Offset < 0 || d.Offset >= int64(len(b)) {
				t.Fatalf("Damaged reports %+v", d)
			}
			for _, s := range d.Revoked {
				// A serial salvaged is one the line names, and it reads as revoked.
				named := regexp.MustCompile(`"serial":"0*` + s + `"`).Match(b[d.Offset:])
				if !named || !revs[s] {
					t.Fatalf("the damaged line at %d names %s as revoked: in the line %v, revoked %v", d.Offset, s, named, revs[s])
				}
			}
		}
		for _, d := range r.Devices() {
			if strings.Contains(d, ":") {
				t.Fatalf("Devices lists %q, which is no device id", d)
			}
		}
		for _, d := range r.RetiredDevices() {
			if certs.ValidDeviceID(d) != nil {
				t.Fatalf("RetiredDevices lists %q, which is no device id", d)
			}
		}
	})
}

// A viewer relay's certificate is recorded under its identity so it can be revoked, and it
// is neither a device nor a rotation.
func TestViewerCertificatesAreRecordedAndRevokedButAreNoDevice(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	vc := fx.issue(t, certs.RoleViewer, "cloud")
	rec, err := registry.ViewerIssuedRecord(vc, t0)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, r, rec, fx.issued(t, fx.issue(t, certs.RoleDevice, "cam-0001"), registry.ViaEnroll, "", t0))
	if ds := r.Devices(); len(ds) != 1 || ds[0] != "cam-0001" {
		t.Errorf("Devices = %v, want the one device", ds)
	}
	if o := r.Outcomes(t0.Add(-time.Hour), t0.Add(time.Hour), time.Minute); o.Issued != 0 {
		t.Errorf("a viewer certificate counted as a rotation: %+v", o)
	}
	cs := r.DeviceCerts("viewer:cloud")
	if len(cs) != 1 || cs[0].Role != certs.RoleViewer || cs[0].Via != registry.ViaViewer {
		t.Fatalf("DeviceCerts(viewer:cloud) = %+v", cs)
	}
	if r.Revoked(vc.SerialNumber) {
		t.Fatal("revoked before its revocation")
	}
	appendAll(t, r, revoked(cs[0].Serial, "viewer:cloud", t0))
	if !r.Revoked(vc.SerialNumber) {
		t.Error("the viewer certificate's revocation is not seen")
	}
	if revs := r.Revocations(); len(revs) != 1 || revs[0].Device != "viewer:cloud" || !revs[0].NotAfter.Equal(vc.NotAfter) {
		t.Errorf("Revocations = %+v", revs)
	}

	// What a viewer's record may not be.
	for name, edit := range map[string]func(*registry.Record){
		"a token hash":              func(r *registry.Record) { r.TokenHash = strings.Repeat("ab", 32) },
		"an epoch":                  func(r *registry.Record) { r.Epoch = 1 },
		"a rotation's via":          func(r *registry.Record) { r.Via = registry.ViaCSR },
		"a device role":             func(r *registry.Record) { r.Role = certs.RoleDevice },
		"another viewer's name":     func(r *registry.Record) { r.Device = "viewer:other" },
		"an operator for a subject": func(r *registry.Record) { r.Device = "operator:alice" },
		"a device id for a subject": func(r *registry.Record) { r.Device = "cam-0001" },
		"a confirmation of a viewer": func(r *registry.Record) {
			*r = registry.Record{Type: registry.TypeConfirmed, Serial: r.Serial, Device: r.Device, Time: t0}
		},
	} {
		bad := rec
		edit(&bad)
		if err := bad.Validate(); !errors.Is(err, registry.ErrInvalidRecord) {
			t.Errorf("a viewer record with %s: %v", name, err)
		}
	}
}

// The operator's and the signer's certificates are recorded under their identity so that
// fleetctl replace can revoke them; they are neither devices nor rotations, and their records
// cannot pass for a viewer's or a device's.
func TestOperatorAndSignerCertificatesAreRecordedButAreNoDevice(t *testing.T) {
	fx := newFixture(t)
	r := fx.open(t)
	op := fx.issue(t, certs.RoleOperator, "admin")
	sg := fx.issue(t, certs.RoleSigner, "default")
	var recs []registry.Record
	for _, c := range []*x509.Certificate{op, sg} {
		rec, err := registry.IdentityIssuedRecord(c, t0)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Via != registry.ViaFleet || rec.Device != certs.CertIdentity(c) {
			t.Fatalf("record of %s: %+v", certs.CertIdentity(c), rec)
		}
		recs = append(recs, rec)
	}
	if _, err := registry.ViewerIssuedRecord(op, t0); !errors.Is(err, registry.ErrInvalidRecord) {
		t.Errorf("an operator's certificate recorded as a viewer's: %v", err)
	}
	if _, err := registry.IdentityIssuedRecord(fx.issue(t, certs.RoleDevice, "cam-0001"), t0); !errors.Is(err, registry.ErrInvalidRecord) {
		t.Errorf("a device's certificate recorded under its identity: %v", err)
	}
	appendAll(t, r, recs...)
	appendAll(t, r, fx.issued(t, fx.issue(t, certs.RoleDevice, "cam-0001"), registry.ViaEnroll, "", t0))
	if ds := r.Devices(); len(ds) != 1 || ds[0] != "cam-0001" {
		t.Errorf("Devices = %v, want the one device", ds)
	}
	if o := r.Outcomes(t0.Add(-time.Hour), t0.Add(time.Hour), time.Minute); o.Issued != 0 {
		t.Errorf("an operator or signer certificate counted as a rotation: %+v", o)
	}
	if cs := r.DeviceCerts("signer:default"); len(cs) != 1 || cs[0].Role != certs.RoleSigner || cs[0].Serial != registry.SerialHex(sg.SerialNumber) {
		t.Fatalf("DeviceCerts(signer:default) = %+v", cs)
	}
	appendAll(t, r, revoked(registry.SerialHex(op.SerialNumber), "operator:admin", t0))
	if !r.Revoked(op.SerialNumber) || r.Revoked(sg.SerialNumber) {
		t.Error("the operator's revocation is not seen, or the signer's certificate was revoked with it")
	}

	for name, edit := range map[string]func(*registry.Record){
		"a viewer's via":          func(r *registry.Record) { r.Via = registry.ViaViewer },
		"an enrollment's via":     func(r *registry.Record) { r.Via = registry.ViaEnroll },
		"the signer's role":       func(r *registry.Record) { r.Role = certs.RoleSigner },
		"an epoch":                func(r *registry.Record) { r.Epoch = 1 },
		"a token hash":            func(r *registry.Record) { r.TokenHash = strings.Repeat("ab", 32) },
		"another operator's name": func(r *registry.Record) { r.Device = "operator:other" },
		"a confirmation": func(r *registry.Record) {
			*r = registry.Record{Type: registry.TypeConfirmed, Serial: r.Serial, Device: r.Device, Time: t0}
		},
	} {
		bad := recs[0]
		edit(&bad)
		if err := bad.Validate(); !errors.Is(err, registry.ErrInvalidRecord) {
			t.Errorf("an operator record with %s: %v", name, err)
		}
	}
}

// BenchmarkOutcomes: the rollout statistics over a window holding a 10,000-device breach, what
// a signer with an abort threshold computes once per batch of decisions.
func BenchmarkOutcomes(b *testing.B) {
	fx := newFixture(b)
	r := fx.open(b)
	var recs []registry.Record
	for i := range 10000 {
		c := fx.issueAt(b, certs.RoleDevice, fmt.Sprintf("cam-%05d", i), t0)
		recs = append(recs, fx.issued(b, c, registry.ViaCSR, "0123456789abcdef", t0.Add(time.Duration(i)*time.Millisecond)))
	}
	appendAll(b, r, recs...)
	b.ResetTimer()
	for b.Loop() {
		if o := r.Outcomes(t0.Add(-time.Hour), t0.Add(time.Minute), 5*time.Minute); o.Issued != 10000 {
			b.Fatalf("outcomes %+v", o)
		}
	}
}
