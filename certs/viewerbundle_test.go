package certs

import (
	"crypto"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// viewerBundle returns a valid viewer bundle for viewer:web, made for key by ca.
func viewerBundle(t *testing.T, ca *CA, key crypto.Signer) ViewerBundle {
	t.Helper()
	vc, err := ca.Issue(IssueRequest{Role: RoleViewer, Name: "web", PublicKey: key.Public(), Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	return ViewerBundle{V: 1, Identity: "viewer:web", CertPEM: string(EncodeCertPEM(vc)), CAPEM: string(EncodeCertPEM(ca.Cert)), Broker: "mqtts://broker.example:8883"}
}

func TestViewerBundleVerifies(t *testing.T) {
	ca := mustCA(t)
	key, _ := GenerateKey()
	vb := viewerBundle(t, ca, key)
	b, _ := json.Marshal(vb)
	parsed, err := ParseViewerBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	v, err := parsed.Verify(key, t0)
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != "web" || v.ServerName != "broker.example" || CertIdentity(v.Cert) != "viewer:web" {
		t.Errorf("verified bundle: name %q, server %q, certificate %q", v.Name, v.ServerName, CertIdentity(v.Cert))
	}
}

func TestViewerBundleCarriesTheKeySetItsRootSigned(t *testing.T) {
	ca := mustCA(t)
	key, _ := GenerateKey()
	root := mustSigningKey(t)
	vb := viewerBundle(t, ca, key)
	vb.Root, vb.KeySet = root.Public().Key, signedKeySet(t, root)
	b, _ := json.Marshal(vb)
	parsed, err := ParseViewerBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	v, err := parsed.Verify(key, t0)
	if err != nil {
		t.Fatal(err)
	}
	if v.KeySet == nil || v.KeySet.Version != 1 || len(v.KeySet.GrantKeys) != 1 {
		t.Fatalf("verified key set %+v", v.KeySet)
	}
}

func TestViewerBundleRefusals(t *testing.T) {
	ca := mustCA(t)
	key, _ := GenerateKey()
	other, _ := GenerateKey()
	dev, _ := ca.Issue(IssueRequest{Role: RoleDevice, Name: "cam-0001", PublicKey: key.Public(), Now: t0})
	foreign := mustCA(t)
	root, otherRoot := mustSigningKey(t), mustSigningKey(t)
	for _, c := range []struct {
		name string
		edit func(*ViewerBundle)
		key  crypto.Signer
		at   time.Time
		want error
		text string
	}{
		{"another key", nil, other, t0, ErrKeyMismatch, "not for this viewer's key"},
		{"a device identity", func(vb *ViewerBundle) { vb.Identity = "cam-0001"; vb.CertPEM = string(EncodeCertPEM(dev)) }, key, t0, ErrBadIdentity, "not a viewer identity"},
		{"a certificate for another identity", func(vb *ViewerBundle) { vb.Identity = "viewer:other" }, key, t0, ErrBadIdentity, `certificate for "viewer:web"`},
		{"another CA", func(vb *ViewerBundle) { vb.CAPEM = string(EncodeCertPEM(foreign.Cert)) }, key, t0, nil, "certificate signed by unknown authority"},
		{"expired", nil, key, t0.Add(DefaultOperatorValidity + time.Hour), ErrExpired, "expired"},
		{"plaintext broker", func(vb *ViewerBundle) { vb.Broker = "mqtt://broker.example:1883" }, key, t0, ErrMalformed, "not TLS"},
		{"a key set without its root", func(vb *ViewerBundle) { vb.KeySet = signedKeySet(t, root) }, key, t0, ErrMalformed, "root key of 0 bytes"},
		{"a key set another root signed", func(vb *ViewerBundle) {
			vb.Root, vb.KeySet = root.Public().Key, signedKeySet(t, otherRoot)
		}, key, t0, ErrUnknownKey, "key set"},
		{"a root without a key set", func(vb *ViewerBundle) { vb.Root = root.Public().Key }, key, t0, ErrMalformed, "key set"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vb := viewerBundle(t, ca, key)
			if c.edit != nil {
				c.edit(&vb)
			}
			_, err := vb.Verify(c.key, c.at)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("Verify = %v, want %v saying %q", err, c.want, c.text)
			}
		})
	}
}

func TestParseViewerBundleRefusesWhatIsNotOne(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     error
	}{
		{"an unknown field", `{"v":1,"identity":"viewer:web","key":"x"}`, ErrMalformed},
		{"another version", `{"v":2,"identity":"viewer:web"}`, ErrMalformed},
		{"not JSON", `viewer:web`, ErrMalformed},
		{"too large", `{"v":1,"identity":"` + strings.Repeat("a", MaxViewerBundleSize) + `"}`, ErrTooLarge},
	} {
		if _, err := ParseViewerBundle([]byte(c.in)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func mustSigningKey(t *testing.T) *SigningKey {
	t.Helper()
	k, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedKeySet returns a key set of version 1 with one fresh command and grant key, signed by
// root.
func signedKeySet(t *testing.T, root *SigningKey) []byte {
	t.Helper()
	k := mustSigningKey(t)
	b, err := SignKeySet(root, KeySet{Version: 1, IssuedAt: t0.Unix(), CommandKeys: []PublicKey{k.Public()}, GrantKeys: []PublicKey{k.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
