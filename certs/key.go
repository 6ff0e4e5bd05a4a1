package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/camagent/camagent/internal/atomicfile"
)

// GenerateKey makes a new ECDSA P-256 private key from crypto/rand. Device keys are made this
// way on the device itself and never leave it (S2).
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate key: %w", err)
	}
	return k, nil
}

// MarshalKeyPEM encodes a private key as a PKCS#8 PEM block.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes a PKCS#8 PEM private key (ECDSA or Ed25519).
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: no PRIVATE KEY PEM block", ErrMalformed)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %v", ErrMalformed, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: private key of type %T cannot sign", ErrMalformed, k)
	}
	return s, nil
}

// WriteKeyFile writes key atomically to path with mode 0600. The directory is made 0700.
func WriteKeyFile(path string, key crypto.Signer) error {
	b, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// LoadKeyFile reads a private key written by WriteKeyFile. It refuses a key file that others
// can read.
func LoadKeyFile(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("certs: key file %s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	k, err := ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("certs: key file %s: %w", path, err)
	}
	return k, nil
}

// NewCSR makes a PEM certificate signing request for identity, signed by key.
func NewCSR(key crypto.Signer, identity string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: identity},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create csr: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// MaxCSRSize caps a PEM CSR accepted from outside.
const MaxCSRSize = 8 << 10

// ParseCSR decodes a PEM CSR, checks its self-signature, and checks that its key is ECDSA
// P-256, the only key the fleet issues certificates for.
func ParseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) > MaxCSRSize {
		return nil, fmt.Errorf("%w: csr of %d bytes, cap %d", ErrTooLarge, len(b), MaxCSRSize)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no CERTIFICATE REQUEST PEM block", ErrMalformed)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: csr: %v", ErrMalformed, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: csr self-signature: %v", ErrBadSignature, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: csr key is %T, want ECDSA P-256", ErrMalformed, csr.PublicKey)
	}
	if pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: csr key is ECDSA %s, want ECDSA P-256", ErrMalformed, pub.Curve.Params().Name)
	}
	return csr, nil
}

// EncodeCertPEM encodes one certificate as PEM.
func EncodeCertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// ParseCertPEM decodes the first certificate of a PEM bundle.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	cs, err := ParseCertsPEM(b)
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

// ParseCertsPEM decodes every CERTIFICATE block of a PEM bundle; it needs at least one.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate: %v", ErrMalformed, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE PEM block", ErrMalformed)
	}
	return out, nil
}

// SamePublicKey reports whether a certificate carries the public half of key.
func SamePublicKey(c *x509.Certificate, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	return ok && pub.Equal(c.PublicKey)
}

// oidTokenHash is a private extension a device puts in its enrollment CSR to register the
// SHA-256 of its device token: the token itself never leaves the device.
var oidTokenHash = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59999, 1, 1}

// NewCSRWithTokenHash is NewCSR with the device token's SHA-256 hash as a CSR extension.
func NewCSRWithTokenHash(key crypto.Signer, identity string, tokenHash [32]byte) ([]byte, error) {
	val, err := asn1.Marshal(tokenHash[:])
	if err != nil {
		return nil, fmt.Errorf("certs: token hash: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: identity},
		ExtraExtensions: []pkix.Extension{{Id: oidTokenHash, Value: val}},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("certs: create csr: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// CSRTokenHash returns the token hash a CSR registers, if it has one.
func CSRTokenHash(csr *x509.CertificateRequest) ([]byte, bool) {
	for _, e := range csr.Extensions {
		if e.Id.Equal(oidTokenHash) {
			var h []byte
			if rest, err := asn1.Unmarshal(e.Value, &h); err != nil || len(rest) != 0 || len(h) != 32 {
				return nil, false
			}
			return h, true
		}
	}
	return nil, false
}
