package fleet_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

func initAt(t *testing.T, at time.Time) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Name: "test fleet", BrokerHosts: []string{"broker.example", "127.0.0.1"}, Now: at})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A fleet made 70 days ago: its operator's and signer's 90-day certificates expire within
// RenewBefore and are renewed on load (new key, same identity); the broker's year-long one is
// not. Once renewed, loading again changes nothing.
func TestTheFleetsOwnIdentitiesAreRenewedBeforeTheyExpire(t *testing.T) {
	f := initAt(t, time.Now().Add(-70*24*time.Hour))
	for _, c := range []struct {
		name string
		load func() (*tls.Certificate, error)
		want string
	}{
		{"operator", f.OperatorCertificate, "operator:" + fleet.DefaultOperator},
		{"signer", f.SignerCertificate, "signer:" + fleet.DefaultSigner},
	} {
		got, err := c.load()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if left := time.Until(got.Leaf.NotAfter); left < fleet.RenewBefore || certs.CertIdentity(got.Leaf) != c.want {
			t.Errorf("%s: %s with %v left: not renewed", c.name, certs.CertIdentity(got.Leaf), left.Round(time.Hour))
		}
		if _, err := certs.VerifyClient(got.Leaf, f.Pool, time.Now()); err != nil {
			t.Errorf("%s: the renewed certificate does not verify: %v", c.name, err)
		}
		again, err := c.load()
		if err != nil || again.Leaf.SerialNumber.Cmp(got.Leaf.SerialNumber) != 0 {
			t.Errorf("%s: renewed again: %v", c.name, err)
		}
	}
	sc, err := f.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(sc.Leaf.NotAfter) > certs.DefaultServerValidity-69*24*time.Hour {
		t.Error("the broker's certificate, 295 days from its end, was renewed")
	}
}

// A broker certificate near its end is renewed for the same names.
func TestTheBrokerCertificateIsRenewedForTheSameNames(t *testing.T) {
	f := initAt(t, time.Now().Add(-340*24*time.Hour))
	before, err := tls.LoadX509KeyPair(filepath.Join(f.Dir, "broker", "server.crt"), filepath.Join(f.Dir, "broker", "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := f.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(sc.Leaf.NotAfter) < fleet.RenewBefore {
		t.Fatalf("not renewed: valid until %v", sc.Leaf.NotAfter)
	}
	if !slices.Equal(sc.Leaf.DNSNames, before.Leaf.DNSNames) || len(sc.Leaf.IPAddresses) != len(before.Leaf.IPAddresses) || sc.Leaf.VerifyHostname("broker.example") != nil || sc.Leaf.VerifyHostname("127.0.0.1") != nil {
		t.Errorf("renewed for %v %v, was %v %v", sc.Leaf.DNSNames, sc.Leaf.IPAddresses, before.Leaf.DNSNames, before.Leaf.IPAddresses)
	}
	if !slices.Contains(sc.Leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("renewed without serverAuth: %v", sc.Leaf.ExtKeyUsage)
	}
}

// A renewal that stopped after the new key was written and before its certificate leaves a
// key that is not the certificate's: the next load renews again instead of failing.
func TestAKeyThatIsNotTheCertificatesIsRenewedOver(t *testing.T) {
	f := initAt(t, time.Now())
	before, err := f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := certs.GenerateKey()
	if err := certs.WriteKeyFile(filepath.Join(f.Dir, "operator", "operator.key"), other); err != nil {
		t.Fatal(err)
	}
	c, err := f.OperatorCertificate()
	if err != nil {
		t.Fatalf("a half-renewed identity: %v", err)
	}
	if c.Leaf.SerialNumber.Cmp(before.Leaf.SerialNumber) == 0 || !certs.SamePublicKey(c.Leaf, c.PrivateKey.(crypto.Signer)) {
		t.Fatal("not renewed into a matching pair")
	}
}

func TestRefreshHandsOverARenewedCertificate(t *testing.T) {
	f := initAt(t, time.Now())
	first, err := f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	// load hands back first twice, then a new certificate.
	key, _ := certs.GenerateKey()
	leaf, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleOperator, Name: fleet.DefaultOperator, PublicKey: key.Public(), Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := certs.TLSCertificate(leaf, key)
	if err != nil {
		t.Fatal(err)
	}
	var loads atomic.Int32
	load := func() (*tls.Certificate, error) {
		if loads.Add(1) < 3 {
			return first, nil
		}
		return renewed, nil
	}
	got := make(chan *tls.Certificate, 4)
	go fleet.Refresh(t.Context(), time.Millisecond, first, load, func(c *tls.Certificate) { got <- c }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	select {
	case c := <-got:
		if c != renewed {
			t.Fatalf("set with %x, want the renewed certificate", c.Leaf.SerialNumber)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the renewed certificate was never handed over")
	}
	time.Sleep(20 * time.Millisecond)
	if len(got) != 0 {
		t.Error("the same renewed certificate was handed over again")
	}
}

// A fleet directory this user may only read: a certificate due for renewal but still valid is
// used as it is; once expired, the failed renewal is the error.
func TestARenewalThatCannotWriteUsesTheValidCertificate(t *testing.T) {
	// File modes do not stop root, who runs CI: the renewal is made impossible by a
	// directory where its lock file would go.
	f := initAt(t, time.Now().Add(-70*24*time.Hour))
	// The renewal lock cannot be made: its path is a directory.
	if err := os.Mkdir(filepath.Join(f.Dir, ".renew.lock"), 0o700); err != nil {
		t.Fatal(err)
	}
	c, err := f.OperatorCertificate()
	if err != nil {
		t.Fatalf("a valid certificate due for renewal, renewal impossible: %v", err)
	}
	if time.Until(c.Leaf.NotAfter) > fleet.RenewBefore {
		t.Fatal("renewed although the renewal could not take its lock")
	}
	g := initAt(t, time.Now().Add(-100*24*time.Hour)) // the operator's certificate expired 10 days ago
	if err := os.Mkdir(filepath.Join(g.Dir, ".renew.lock"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := g.OperatorCertificate(); err == nil {
		t.Fatal("an expired certificate whose renewal failed was handed out")
	}
}

// A long-running process on a copy of the fleet directory that cannot renew (no CA key) warns
// that its certificate is due, once a day rather than at every look.
func TestRefreshWarnsOfACertificateItCannotRenew(t *testing.T) {
	f := initAt(t, time.Now().Add(-70*24*time.Hour))
	if err := os.Remove(filepath.Join(f.Dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	g, err := fleet.Open(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := g.SignerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	var loads atomic.Int32
	load := func() (*tls.Certificate, error) { loads.Add(1); return g.SignerCertificate() }
	// Refresh is awaited before t.TempDir's cleanup: a look still under way would create the
	// renewal lock file again while the directory is being removed.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fleet.Refresh(ctx, time.Millisecond, cur, load, func(*tls.Certificate) { t.Error("a certificate was handed over") }, log)
	}()
	defer func() { cancel(); <-done }()
	rec.WaitFor(t, 10*time.Second, "expires soon and could not be renewed here", "signer:default")
	for loads.Load() < 20 {
		time.Sleep(time.Millisecond)
	}
	if n := strings.Count(rec.Text(), "could not be renewed here"); n != 1 {
		t.Errorf("warned %d times in %d looks, want once a day", n, loads.Load())
	}
}
