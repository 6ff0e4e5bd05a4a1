package fleet_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

func TestIssueViewerSignsTheRelaysOwnKeyAndHandsOutNoSecret(t *testing.T) {
	f := newFleet(t)
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, "viewer:cloud")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b, c, err := f.IssueViewer(csr, now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "PRIVATE KEY") {
		t.Fatal("the viewer bundle holds a private key")
	}
	vb, err := certs.ParseViewerBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vb.Verify(key, now)
	if err != nil {
		t.Fatalf("the bundle does not verify with the relay's key: %v", err)
	}
	if v.Name != "cloud" || vb.Broker != f.Meta.Broker || !v.Cert.Equal(c) {
		t.Errorf("bundle for %q, broker %q", v.Name, vb.Broker)
	}
	// It carries the fleet's key set, so the relay can check grants before it sends offers.
	if v.KeySet == nil || v.KeySet.Version != f.KeySet().Version || !v.KeySet.GrantVerifier().Trusts(f.KeySet().GrantKeys[0].ID) {
		t.Errorf("the bundle's key set %+v is not the fleet's %+v", v.KeySet, f.KeySet())
	}
	// The fleet keeps the certificate, not a key, and lists the identity for Mosquitto's ACL.
	if _, err := os.Stat(filepath.Join(f.Dir, "viewer", "cloud.key")); !os.IsNotExist(err) {
		t.Errorf("a key for viewer:cloud in the fleet directory: %v", err)
	}
	names, err := f.ViewerNames()
	if err != nil || len(names) != 1 || names[0] != "cloud" {
		t.Errorf("ViewerNames = %v, %v", names, err)
	}
	// The --fleet way cannot take the name over with a key of its own.
	if _, err := f.ViewerCertificate("cloud"); err == nil || !strings.Contains(err.Error(), "--identity") {
		t.Errorf("ViewerCertificate of a name issued by CSR: %v", err)
	}
}

func TestIssueViewerRefusals(t *testing.T) {
	f := newFleet(t)
	if _, err := f.ViewerCertificate("web"); err != nil { // issued with its key in the fleet directory
		t.Fatal(err)
	}
	key, _ := certs.GenerateKey()
	for _, c := range []struct{ name, identity, want string }{
		{"a device identity", "cam-0001", "not a viewer"},
		{"an operator identity", "operator:alice", "not a viewer"},
		{"a name whose key the fleet keeps", "viewer:web", "with a key kept in the fleet directory"},
	} {
		csr, err := certs.NewCSR(key, c.identity)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.IssueViewer(csr, time.Now()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if _, _, err := f.IssueViewer([]byte("not a csr"), time.Now()); err == nil {
		t.Error("garbage accepted as a CSR")
	}
}

func TestRevokeViewerRevokesEveryCertificateOfTheIdentity(t *testing.T) {
	f := newFleet(t)
	// viewer:web the camview --fleet way, viewer:cloud twice from its own key.
	web, err := f.ViewerCertificate("web")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := certs.GenerateKey()
	csr, _ := certs.NewCSR(key, "viewer:cloud")
	_, c1, err := f.IssueViewer(csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, c2, err := f.IssueViewer(csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	serials, err := f.RevokeViewer("cloud", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(serials) != 2 || !reg.Revoked(c1.SerialNumber) || !reg.Revoked(c2.SerialNumber) {
		t.Fatalf("revoked %v; c1 revoked %v, c2 revoked %v", serials, reg.Revoked(c1.SerialNumber), reg.Revoked(c2.SerialNumber))
	}
	if reg.Revoked(web.Leaf.SerialNumber) {
		t.Fatal("revoking viewer:cloud revoked viewer:web")
	}
	if names, _ := f.ViewerNames(); len(names) != 1 || names[0] != "web" {
		t.Errorf("ViewerNames after the revocation = %v: Mosquitto's ACL would still name viewer:cloud", names)
	}
	if again, err := f.RevokeViewer("cloud", time.Now()); err != nil || len(again) != 0 {
		t.Errorf("revoking again: %v, %v", again, err)
	}

	// The --fleet way: the kept key goes too, and the next use gets a new certificate.
	if serials, err := f.RevokeViewer("web", time.Now()); err != nil || len(serials) != 1 || serials[0].Cmp(web.Leaf.SerialNumber) != 0 {
		t.Fatalf("RevokeViewer(web) = %v, %v", serials, err)
	}
	if _, err := os.Stat(filepath.Join(f.Dir, "viewer", "web.key")); !os.IsNotExist(err) {
		t.Errorf("the revoked key is still kept: %v", err)
	}
	fresh, err := f.ViewerCertificate("web")
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Leaf.SerialNumber.Cmp(web.Leaf.SerialNumber) == 0 || reg.Revoked(fresh.Leaf.SerialNumber) {
		t.Error("the next camview --fleet start did not get a new, valid certificate")
	}
	if _, err := f.RevokeViewer("a/b", time.Now()); err == nil {
		t.Error("a name that cannot be a viewer's was taken")
	}
}

// A viewer certificate issued before viewer certificates were recorded is known only by the
// file the fleet kept: revoking the identity revokes it too.
func TestRevokeViewerRevokesACertificateTheRegistryNeverSaw(t *testing.T) {
	f := newFleet(t)
	key, _ := certs.GenerateKey()
	c, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleViewer, Name: "legacy", PublicKey: key.Public(), Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.Dir, "viewer"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.Dir, "viewer", "legacy.crt"), certs.EncodeCertPEM(c), 0o644); err != nil {
		t.Fatal(err)
	}
	serials, err := f.RevokeViewer("legacy", time.Now())
	if err != nil || len(serials) != 1 || serials[0].Cmp(c.SerialNumber) != 0 {
		t.Fatalf("RevokeViewer = %v, %v; want the kept certificate's serial", serials, err)
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if !reg.Revoked(c.SerialNumber) {
		t.Error("the kept certificate is not revoked")
	}
}

// camview --fleet renews a kept viewer identity that is about to expire.
func TestViewerCertificateRenewsWhatIsAboutToExpire(t *testing.T) {
	f := newFleet(t)
	key, _ := certs.GenerateKey()
	short, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleViewer, Name: "web", PublicKey: key.Public(), Now: time.Now(), Validity: fleet.RenewBefore - time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.Dir, "viewer"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteKeyFile(filepath.Join(f.Dir, "viewer", "web.key"), key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.Dir, "viewer", "web.crt"), certs.EncodeCertPEM(short), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := f.ViewerCertificate("web")
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.SerialNumber.Cmp(short.SerialNumber) == 0 || time.Until(c.Leaf.NotAfter) < fleet.RenewBefore {
		t.Fatalf("got serial %x until %v: not renewed", c.Leaf.SerialNumber, c.Leaf.NotAfter)
	}
	again, err := f.ViewerCertificate("web")
	if err != nil || again.Leaf.SerialNumber.Cmp(c.Leaf.SerialNumber) != 0 {
		t.Fatalf("a certificate with time left was renewed again: %v", err)
	}
}

// A running camview --fleet relay refreshes its certificate with KeptViewerCertificate: it
// renews the pair it has, and once the relay is revoked (its pair removed) it fails instead of
// issuing a new one, so the revocation holds until someone starts the relay again.
func TestAKeptViewerCertificateIsNeverIssuedAgain(t *testing.T) {
	f := newFleet(t)
	if _, err := f.KeptViewerCertificate("web"); err == nil {
		t.Fatal("a relay never issued got a certificate")
	}
	first, err := f.ViewerCertificate("web")
	if err != nil {
		t.Fatal(err)
	}
	kept, err := f.KeptViewerCertificate("web")
	if err != nil || kept.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatalf("KeptViewerCertificate = %v, %v; want the pair kept", kept, err)
	}
	if _, err := f.RevokeViewer("web", time.Now()); err != nil {
		t.Fatal(err)
	}
	if c, err := f.KeptViewerCertificate("web"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("after the revocation: %v, %v", c, err)
	}
	if _, err := os.Stat(filepath.Join(f.Dir, "viewer", "web.crt")); !os.IsNotExist(err) {
		t.Fatalf("a certificate was issued again: %v", err)
	}
}
