package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
)

// A CSR is refused unless its key is ECDSA P-256, the only key the fleet issues for: other
// curves (P-224 among them, weaker than the fleet's bar) must not slip past the type check.
func TestParseCSRTakesP256KeysOnly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		curve elliptic.Curve
		ok    bool
	}{
		{"a P-256 key is taken", elliptic.P256(), true},
		{"a P-224 key is refused", elliptic.P224(), false},
		{"a P-384 key is refused", elliptic.P384(), false},
		{"a P-521 key is refused", elliptic.P521(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(tc.curve, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			csrPEM, err := NewCSR(key, "cam-0001")
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseCSR(csrPEM)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("ParseCSR = %v", err)
			case !tc.ok && !errors.Is(err, ErrMalformed):
				t.Fatalf("ParseCSR = %v, want ErrMalformed", err)
			}
		})
	}
}
