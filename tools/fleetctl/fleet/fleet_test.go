package fleet_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

func newFleet(t *testing.T) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Name: "test fleet"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestInitIssuesTheSignerIdentity(t *testing.T) {
	f := newFleet(t)
	c, err := f.SignerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	id := certs.CertIdentity(c.Leaf)
	if role, name, err := certs.ParseIdentity(id); err != nil || role != certs.RoleSigner || name != fleet.DefaultSigner {
		t.Fatalf("signer identity %q: %s %s %v", id, role, name, err)
	}
	if _, err := certs.VerifyClient(c.Leaf, f.Pool, time.Now()); err != nil {
		t.Fatal(err)
	}
	a, a2, b := fleet.SignerClientID(id, "a"), fleet.SignerClientID(id, "a"), fleet.SignerClientID(id, "b")
	if a != a2 || a == b {
		t.Fatalf("client ids %q %q %q: want stable per name and distinct across names", a, a2, b)
	}
	if !certs.ClientIDAllowed(id, a) {
		t.Fatalf("the brokers would refuse client id %q for %q", a, id)
	}
	if fi, _ := os.Stat(filepath.Join(f.Dir, "signer", "signer.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("signer key mode %v", fi.Mode().Perm())
	}
}

func TestEnrollIssuesTheDeviceAndItsBootstrapIdentity(t *testing.T) {
	f := newFleet(t)
	dir := filepath.Join(t.TempDir(), "cam")
	req, err := agent.Enroll(dir, "cam-0001")
	if err != nil {
		t.Fatal(err)
	}
	bundle, c, err := f.Enroll(req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	vb, err := agent.InstallBundle(dir, bundle, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if vb.Bootstrap == nil || certs.CertIdentity(vb.Bootstrap) != "bootstrap:cam-0001" {
		t.Fatal("the bundle carries no bootstrap certificate")
	}
	if got := vb.Bootstrap.NotAfter.Sub(vb.Bootstrap.NotBefore); got < 9*365*24*time.Hour {
		t.Errorf("bootstrap certificate valid for %v only", got)
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	recs := reg.DeviceCerts("cam-0001")
	if len(recs) != 2 || recs[0].Serial != c.SerialNumber.Text(16) || recs[1].Serial != vb.Bootstrap.SerialNumber.Text(16) {
		t.Fatalf("registry holds %+v", recs)
	}
	// The token hash recorded is the one the device's CSR registered.
	blk := firstCSR(t, req)
	csr, _ := certs.ParseCSR(blk)
	th, _ := certs.CSRTokenHash(csr)
	if recs[0].TokenHash != hex.EncodeToString(th) || recs[0].Via != registry.ViaEnroll || recs[1].TokenHash != "" {
		t.Fatalf("registry records %+v", recs)
	}
	b, _ := os.ReadFile(f.RegistryPath())
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Fatal("the registry holds a private key")
	}
}

func firstCSR(t *testing.T, req []byte) []byte {
	t.Helper()
	i := bytes.Index(req, []byte("-----END CERTIFICATE REQUEST-----\n"))
	if i < 0 {
		t.Fatal("no CSR")
	}
	return req[:i+len("-----END CERTIFICATE REQUEST-----\n")]
}

func TestEnrollRefusesIncompleteOrMismatchedRequests(t *testing.T) {
	f := newFleet(t)
	key, _ := certs.GenerateKey()
	bkey, _ := certs.GenerateKey()
	var th [32]byte
	dev, _ := certs.NewCSRWithTokenHash(key, "cam-0001", th)
	devNoToken, _ := certs.NewCSR(key, "cam-0001")
	boot, _ := certs.NewCSR(bkey, "bootstrap:cam-0001")
	bootOther, _ := certs.NewCSR(bkey, "bootstrap:cam-0002")
	bootSameKey, _ := certs.NewCSR(key, "bootstrap:cam-0001")
	operator, _ := certs.NewCSR(bkey, "operator:mallory")
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for name, req := range map[string][]byte{
		"a device CSR alone":                       dev,
		"a bootstrap CSR for another device":       cat(dev, bootOther),
		"a device CSR without a token hash":        cat(devNoToken, boot),
		"a bootstrap CSR reusing the device key":   cat(dev, bootSameKey),
		"an operator CSR":                          cat(dev, operator),
		"three CSRs":                               cat(dev, boot, boot),
		"no PEM at all":                            []byte("hello"),
		"a request over the size cap":              bytes.Repeat([]byte("A"), fleet.MaxEnrollmentSize+1),
		"two device CSRs without a bootstrap one":  cat(dev, dev),
		"a certificate instead of a bootstrap CSR": cat(dev, certs.EncodeCertPEM(f.CA.Cert)),
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := f.Enroll(req, time.Now()); err == nil {
				t.Fatal("enrolled")
			}
		})
	}
	reg, _ := f.OpenRegistry(nil)
	defer reg.Close()
	if ids := reg.Devices(); len(ids) != 0 {
		t.Fatalf("refused enrollments were recorded: %v", ids)
	}
}

func TestKeyRotationMakesTheNextKeySet(t *testing.T) {
	f := newFleet(t)
	root, err := f.LoadRootKey(f.RootKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	v1 := f.KeySet()
	path, ks, err := f.RotateKeys(root, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	got, err := certs.AcceptKeySet(f.RootKey(), b, v1.Version)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != v1.Version+1 || len(got.CommandKeys) != 2 || len(got.GrantKeys) != 2 ||
		got.CommandKeys[0].ID != v1.CommandKeys[0].ID || got.GrantKeys[0].ID != v1.GrantKeys[0].ID || ks.Version != got.Version {
		t.Fatalf("key set %+v; want v%d keeping the previous keys and adding one of each", got, v1.Version+1)
	}
	if _, _, err := f.RotateKeys(root, nil, time.Now()); !errors.Is(err, fleet.ErrPendingKeySet) {
		t.Fatalf("a second rotation before publishing: %v", err)
	}
	// Until it is installed, the fleet signs with the old command key.
	doc, err := f.SignDesired(certs.Desired{Target: certs.TargetFleet, Version: 1, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs.OpenDesired(v1.CommandVerifier(), doc); err != nil {
		t.Fatalf("a desired state signed before the new key set is installed does not verify with the old keys: %v", err)
	}
	if err := f.InstallKeySet(b); err != nil {
		t.Fatal(err)
	}
	if reopened, err := fleet.Open(f.Dir); err != nil || reopened.KeySet().Version != 2 {
		t.Fatalf("installed key set not persisted: %v", err)
	}
	if err := f.InstallKeySet(b); err == nil {
		t.Fatal("a key set that is not newer was installed")
	}
	// Drop the first command key.
	oldCmd := v1.CommandKeys[0].ID
	path3, _, err := f.RotateKeys(root, []string{oldCmd}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b3, _ := os.ReadFile(path3)
	v3, err := certs.AcceptKeySet(f.RootKey(), b3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(v3.CommandKeys, func(k certs.PublicKey) bool { return k.ID == oldCmd }) || len(v3.GrantKeys) != 3 {
		t.Fatalf("v3 %+v still holds the dropped key %s", v3, oldCmd)
	}
	if _, _, err := f.RotateKeys(root, []string{"k-0000000000000000"}, time.Now()); err == nil {
		t.Fatal("dropping an unknown key id was accepted")
	}
	// A desired state carrying v3 is signed with v3's newest command key, which v1 lacks.
	doc3, err := f.SignDesired(certs.Desired{Target: certs.TargetFleet, Version: 2, Epoch: 2, KeySet: b3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs.OpenDesired(v3.CommandVerifier(), doc3); err != nil {
		t.Fatal(err)
	}
	if carried, ok := certs.PeekDesiredKeySet(doc3); !ok || !bytes.Equal(carried, b3) {
		t.Fatal("the desired state does not carry the new key set")
	}
}

func TestTheRootKeyMustBeTheFleets(t *testing.T) {
	f := newFleet(t)
	other := newFleet(t)
	if _, err := f.LoadRootKey(other.RootKeyPath()); err == nil {
		t.Fatal("another fleet's root key was accepted")
	}
	os.Chmod(f.RootKeyPath(), 0o644)
	if _, err := f.LoadRootKey(f.RootKeyPath()); err == nil {
		t.Fatal("a root key readable by others was accepted")
	}
}

func TestEveryDesiredStateCarriesTheKeySetInForce(t *testing.T) {
	f := newFleet(t)
	doc, err := f.SignDesired(certs.Desired{Target: "cam-0001", Version: 1, Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if ks, ok := certs.PeekDesiredKeySet(doc); !ok || !bytes.Equal(ks, f.KeySetBytes()) {
		t.Fatal("the document does not carry the fleet's key set")
	}
	d, err := certs.OpenDesired(f.KeySet().CommandVerifier(), doc)
	if err != nil || d.Epoch != 3 || d.Target != "cam-0001" {
		t.Fatalf("OpenDesired = %+v, %v", d, err)
	}
}

// ReadKeySet reads the key set in force without the rest of the fleet (camview serve reads it
// every minute): the same set Open gives, also with no CA key in the directory, and it refuses
// a key set the recorded root did not sign.
func TestReadKeySetReadsTheKeySetInForceAlone(t *testing.T) {
	f := newFleet(t)
	if _, err := fleet.Open(f.Dir); err != nil { // records root.pub beside the key set
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(f.Dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	ks, err := fleet.ReadKeySet(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Version != f.KeySet().Version || ks.GrantKeys[0].ID != f.KeySet().GrantKeys[0].ID {
		t.Fatalf("ReadKeySet = v%d %s, want v%d %s", ks.Version, ks.GrantKeys[0].ID, f.KeySet().Version, f.KeySet().GrantKeys[0].ID)
	}
	other := newFleet(t)
	b, err := os.ReadFile(filepath.Join(other.Dir, "keyset.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.Dir, "keyset.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := fleet.ReadKeySet(f.Dir); err == nil {
		t.Fatal("ReadKeySet took a key set another fleet's root signed")
	}
}

// A wrong --dir at 3 a.m. must be named as one, with where fleetctl looked: the advice to run
// fleetctl init there would make a new fleet, with a CA no camera trusts.
func TestOpenOfADirectoryWithoutAFleetSaysWhereItLookedAndAsksForDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "flet")
	_, err := fleet.Open(dir)
	if !errors.Is(err, fleet.ErrNoFleet) {
		t.Fatalf("Open: %v, want ErrNoFleet", err)
	}
	for _, w := range []string{dir, "fleet.json", "--dir"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "; run fleetctl init") {
		t.Errorf("error %q tells the operator to make a new fleet", err)
	}
}

// --drop of an id that is not in the key set names the ids that are: the operator has no
// other place to read them, keyset.json holding them inside its encoded body.
func TestRotateKeysDropOfAnUnknownIDListsTheKeysInForce(t *testing.T) {
	f := newFleet(t)
	root, err := f.LoadRootKey(f.RootKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.RotateKeys(root, []string{"k-bogus"}, time.Now())
	if err == nil {
		t.Fatal("keys rotate --drop k-bogus succeeded")
	}
	ks := f.KeySet()
	for _, k := range append(slices.Clone(ks.CommandKeys), ks.GrantKeys...) {
		if !strings.Contains(err.Error(), k.ID) {
			t.Errorf("error %q does not name key %s", err, k.ID)
		}
	}
}
