package fleet_test

import (
	"crypto"
	"crypto/tls"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

func serialsOf(cs []registry.Cert) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Serial
	}
	return out
}

// Every certificate of the operator and the signer is recorded, from fleetctl init on and at
// every renewal, so that Replace revokes them all: the one in the directory and one a renewal
// left behind, still valid for weeks on whatever machine holds a copy. The new pair is the
// directory's from then on, with a new key, and stays valid.
func TestReplaceRevokesEveryEarlierCertificateOfTheIdentity(t *testing.T) {
	f := initAt(t, time.Now().Add(-70*24*time.Hour))
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for _, c := range []struct {
		role     certs.Role
		identity string
		load     func() (*tls.Certificate, error)
		file     string
	}{
		{certs.RoleOperator, "operator:" + fleet.DefaultOperator, f.OperatorCertificate, "operator/operator"},
		{certs.RoleSigner, "signer:" + fleet.DefaultSigner, f.SignerCertificate, "signer/signer"},
	} {
		first, err := tls.LoadX509KeyPair(filepath.Join(f.Dir, c.file+".crt"), filepath.Join(f.Dir, c.file+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if got := serialsOf(reg.DeviceCerts(c.identity)); !slices.Equal(got, []string{registry.SerialHex(first.Leaf.SerialNumber)}) {
			t.Fatalf("%s: init recorded %v, want its one certificate", c.identity, got)
		}
		// 70 days on, loading it renews it; the first stays valid for 20 more days.
		renewed, err := c.load()
		if err != nil {
			t.Fatal(err)
		}
		if renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
			t.Fatalf("%s: not renewed", c.identity)
		}
		if n := len(reg.DeviceCerts(c.identity)); n != 2 {
			t.Fatalf("%s: %d certificates recorded after a renewal, want 2", c.identity, n)
		}

		res, err := f.Replace(c.role, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		want := []*big.Int{first.Leaf.SerialNumber, renewed.Leaf.SerialNumber}
		if res.Identity != c.identity || !slices.EqualFunc(res.Revoked, want, func(a, b *big.Int) bool { return a.Cmp(b) == 0 }) {
			t.Fatalf("%s: Replace = %s revoking %v, want %v", c.identity, res.Identity, res.Revoked, want)
		}
		for _, s := range want {
			if !reg.Revoked(s) {
				t.Errorf("%s: serial %x not revoked", c.identity, s)
			}
		}
		now, err := c.load()
		if err != nil {
			t.Fatal(err)
		}
		if now.Leaf.SerialNumber.Cmp(res.Cert.SerialNumber) != 0 || reg.Revoked(now.Leaf.SerialNumber) {
			t.Fatalf("%s: the directory holds serial %x (revoked %v), want the new %x", c.identity, now.Leaf.SerialNumber, reg.Revoked(now.Leaf.SerialNumber), res.Cert.SerialNumber)
		}
		if certs.SamePublicKey(now.Leaf, renewed.PrivateKey.(crypto.Signer)) {
			t.Errorf("%s: the new certificate is for the old key", c.identity)
		}
		if _, err := certs.VerifyClient(now.Leaf, f.Pool, time.Now()); err != nil || certs.CertIdentity(now.Leaf) != c.identity {
			t.Errorf("%s: the new certificate (%s) does not verify: %v", c.identity, certs.CertIdentity(now.Leaf), err)
		}
		// Again: only the replacement is left to revoke.
		again, err := f.Replace(c.role, time.Now())
		if err != nil || len(again.Revoked) != 1 || again.Revoked[0].Cmp(res.Cert.SerialNumber) != 0 {
			t.Errorf("%s: replacing again revoked %v (%v), want the first replacement only", c.identity, again.Revoked, err)
		}
	}
	// The other identities are untouched.
	sc, err := f.ServerCertificate()
	if err != nil || reg.Revoked(sc.Leaf.SerialNumber) {
		t.Errorf("the broker's certificate was revoked: %v", err)
	}
	if ds := reg.Devices(); len(ds) != 0 {
		t.Errorf("the operator or the signer counts as a device: %v", ds)
	}
}

// A fleet made before these identities were recorded: the certificate the directory keeps is
// revoked all the same.
func TestReplaceRevokesACertificateTheRegistryNeverSaw(t *testing.T) {
	f := newFleet(t)
	if err := os.Remove(f.RegistryPath()); err != nil {
		t.Fatal(err)
	}
	old, err := f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.Replace(certs.RoleOperator, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Revoked) != 1 || res.Revoked[0].Cmp(old.Leaf.SerialNumber) != 0 {
		t.Fatalf("revoked %v, want the kept certificate %x", res.Revoked, old.Leaf.SerialNumber)
	}
}

// The broker (certs.RoleServer) is replaced too (ReplaceBroker), and nothing else.
func TestReplaceTakesOnlyTheOperatorTheSignerOrTheBroker(t *testing.T) {
	f := newFleet(t)
	for _, r := range []certs.Role{certs.RoleDevice, certs.RoleViewer, certs.RoleBootstrap, "root"} {
		if _, err := f.Replace(r, time.Now()); err == nil {
			t.Errorf("Replace(%q) was taken", r)
		}
	}
}

// A long-running client presents, at each handshake, the certificate the directory holds
// then; when it cannot be loaded, the one it held.
func TestLoadAtHandshakePresentsTheDirectorysCertificate(t *testing.T) {
	f := newFleet(t)
	first, err := f.SignerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	h := certs.NewHolder(first)
	fail := false
	get := fleet.LoadAtHandshake(h, func() (*tls.Certificate, error) {
		if fail {
			return nil, errors.New("unreadable")
		}
		return f.SignerCertificate()
	}, nil)
	if c, err := get(nil); err != nil || c.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatalf("before any change: %v", err)
	}
	res, err := f.Replace(certs.RoleSigner, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := get(nil)
	if err != nil || c.Leaf.SerialNumber.Cmp(res.Cert.SerialNumber) != 0 || h.Get() != c {
		t.Fatalf("after Replace the handshake got %v (%v), want the new certificate, held", c, err)
	}
	fail = true
	if c2, err := get(nil); err != nil || c2 != c {
		t.Fatalf("with the directory unreadable: %v, %v; want the held one", c2, err)
	}
}

// A copy of the fleet directory without the CA key opens, checks, and hands out the
// certificates it holds, even one due for renewal; whatever must issue fails saying why.
func TestAFleetDirectoryWithoutTheCAKey(t *testing.T) {
	f := initAt(t, time.Now().Add(-70*24*time.Hour))
	if !f.HasCAKey() {
		t.Fatal("a fleet made here has no CA key")
	}
	if err := os.Remove(filepath.Join(f.Dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	g, err := fleet.Open(f.Dir)
	if err != nil {
		t.Fatalf("open without ca.key: %v", err)
	}
	if g.HasCAKey() {
		t.Fatal("HasCAKey without ca.key")
	}
	op, err := g.OperatorCertificate()
	if err != nil {
		t.Fatalf("the operator's certificate, due for renewal but valid for 20 days: %v", err)
	}
	if time.Until(op.Leaf.NotAfter) > fleet.RenewBefore {
		t.Fatal("renewed without the CA key")
	}
	if _, err := certs.VerifyClient(op.Leaf, g.Pool, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Replace(certs.RoleOperator, time.Now()); !errors.Is(err, certs.ErrNoCAKey) {
		t.Errorf("Replace without the CA key: %v", err)
	}
	key, _ := certs.GenerateKey()
	csr, _ := certs.NewCSR(key, "viewer:cloud")
	if _, _, err := g.IssueViewer(csr, time.Now()); !errors.Is(err, certs.ErrNoCAKey) {
		t.Errorf("IssueViewer without the CA key: %v", err)
	}
}
