package certs

import (
	"crypto/ed25519"
	"testing"
	"time"
)

// fuzzSeed is a fixed Ed25519 key so that the committed corpus stays valid.
var fuzzSeed = []byte("camagent fuzz key seed 32 bytes!")

func fuzzKey() *SigningKey { return signingKeyFrom(ed25519.NewKeyFromSeed(fuzzSeed)) }

// FuzzOpenCommand feeds arbitrary bytes to the command envelope decoder: it must never panic,
// and anything it accepts must re-verify and pass validation.
func FuzzOpenCommand(f *testing.F) {
	k := fuzzKey()
	good, _ := SignCommand(k, ping("cam-0001", 7, t0))
	f.Add(good)
	f.Add([]byte(`{"v":1,"kid":"k-0000000000000000","body":"","sig":""}`))
	f.Add([]byte(`{}`))
	v := NewVerifier(k.Public())
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _, err := OpenCommand(v, b)
		if err != nil {
			return
		}
		if err := c.validate(); err != nil {
			t.Fatalf("accepted an invalid command: %v", err)
		}
		_ = CheckCommand(c, "cam-0001", time.Unix(c.IssuedAt, 0), 0)
	})
}

// FuzzOpenKeySet does the same for signed key sets.
func FuzzOpenKeySet(f *testing.F) {
	k := fuzzKey()
	ks, _ := SignKeySet(k, KeySet{Version: 1, CommandKeys: []PublicKey{k.Public()}, GrantKeys: []PublicKey{k.Public()}})
	f.Add(ks)
	floored, _ := SignKeySet(k, KeySet{Version: 2, CommandKeys: []PublicKey{k.Public()}, GrantKeys: []PublicKey{k.Public()}, BrokerNotBefore: 1_800_000_000})
	f.Add(floored)
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenKeySet(k.Public().Key, b)
		if err == nil && got.Validate() != nil {
			t.Fatal("accepted an invalid key set")
		}
	})
}

// FuzzParseCSR checks the CSR parser on arbitrary bytes.
func FuzzParseCSR(f *testing.F) {
	key, _ := GenerateKey()
	csr, _ := NewCSR(key, "cam-0001")
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseCSR(b)
	})
}

// FuzzParseBundle checks the device bundle parser and verifier on arbitrary bytes.
func FuzzParseBundle(f *testing.F) {
	f.Add([]byte(`{"v":1,"device_id":"cam-0001","cert":"","ca":"","root_key":"","keyset":{},"broker":"mqtts://127.0.0.1:8883"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		bu, err := ParseBundle(b)
		if err != nil {
			return
		}
		_, _ = bu.Verify(nil, t0)
	})
}

// FuzzParseViewerBundle checks the viewer bundle parser and verifier on arbitrary bytes: bad
// input is an error, never a panic, and a bundle that verifies names a viewer identity.
func FuzzParseViewerBundle(f *testing.F) {
	f.Add([]byte(`{"v":1,"identity":"viewer:web","cert":"","ca":"","broker":"mqtts://127.0.0.1:8883"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		vb, err := ParseViewerBundle(b)
		if err != nil {
			return
		}
		v, err := vb.Verify(nil, t0)
		if err != nil {
			return
		}
		if CertIdentity(v.Cert) != "viewer:"+v.Name || v.ServerName == "" {
			t.Fatalf("verified bundle of %q with certificate %q, broker host %q", v.Name, CertIdentity(v.Cert), v.ServerName)
		}
	})
}
