package relay_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/camview/relay"
)

// signViewer plays fleetctl viewer: it signs the CSR in dir with ca and returns the bundle.
func signViewer(t *testing.T, ca *certs.CA, dir string, now time.Time) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, relay.IdentityCSRFile))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.ParseCSR(b)
	if err != nil {
		t.Fatal(err)
	}
	_, name, _ := certs.ParseIdentity(csr.Subject.CommonName)
	c, err := ca.Issue(certs.IssueRequest{Role: certs.RoleViewer, Name: name, CSR: csr, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	vb, err := json.Marshal(certs.ViewerBundle{V: 1, Identity: certs.CertIdentity(c), CertPEM: string(certs.EncodeCertPEM(c)), CAPEM: string(certs.EncodeCertPEM(ca.Cert)), Broker: "mqtts://127.0.0.1:8883"})
	if err != nil {
		t.Fatal(err)
	}
	return vb
}

func TestAnIdentityKeepsItsKeyAcrossEnrollmentsAndExpires(t *testing.T) {
	now := time.Now()
	ca, err := certs.NewCA("test fleet", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "relay")
	if _, err := relay.LoadIdentity(dir, now); err == nil || !strings.Contains(err.Error(), "camview enroll") {
		t.Fatalf("LoadIdentity before enrolling: %v", err)
	}
	if _, err := relay.EnrollIdentity(dir, "cloud"); err != nil {
		t.Fatal(err)
	}
	key1, _ := os.ReadFile(filepath.Join(dir, relay.IdentityKeyFile))
	if _, err := relay.InstallIdentity(dir, signViewer(t, ca, dir, now), now); err != nil {
		t.Fatal(err)
	}
	id, err := relay.LoadIdentity(dir, now)
	if err != nil || id.Name() != "cloud" {
		t.Fatalf("LoadIdentity = %v, %v", id, err)
	}

	// Past the certificate's end: camview says what to do, and enrolling again keeps the key.
	later := now.Add(certs.DefaultOperatorValidity + time.Hour)
	if _, err := relay.LoadIdentity(dir, later); !errors.Is(err, certs.ErrExpired) || !strings.Contains(err.Error(), "new CSR") {
		t.Fatalf("LoadIdentity of an expired identity: %v", err)
	}
	if _, err := relay.EnrollIdentity(dir, "cloud"); err != nil {
		t.Fatal(err)
	}
	if key2, _ := os.ReadFile(filepath.Join(dir, relay.IdentityKeyFile)); string(key2) != string(key1) {
		t.Error("enrolling again made a new key")
	}
	if _, err := relay.InstallIdentity(dir, signViewer(t, ca, dir, later), later); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.LoadIdentity(dir, later); err != nil {
		t.Fatalf("after enrolling again: %v", err)
	}

	// A bundle swapped in for another relay's key is refused at load, not used.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := relay.EnrollIdentity(other, "cloud"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, relay.IdentityBundleFile), signViewer(t, ca, other, later), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.LoadIdentity(dir, later); !errors.Is(err, certs.ErrKeyMismatch) {
		t.Fatalf("LoadIdentity with another key's bundle: %v", err)
	}
}
