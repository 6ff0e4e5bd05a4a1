package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Default validities. Device certificates are short-lived so that a missed revocation costs
// little; the agent renews at about two thirds of the lifetime (rotation issue).
const (
	DefaultCAValidity       = 10 * 365 * 24 * time.Hour
	DefaultDeviceValidity   = 30 * 24 * time.Hour
	DefaultOperatorValidity = 90 * 24 * time.Hour
	DefaultServerValidity   = 365 * 24 * time.Hour
	// DefaultBootstrapValidity is long: the bootstrap identity is factory-provisioned and may
	// only ask for a new operational certificate.
	DefaultBootstrapValidity = 10 * 365 * 24 * time.Hour
	// Backdate is subtracted from NotBefore so that a peer whose clock runs a little behind
	// still accepts a fresh certificate.
	Backdate = 5 * time.Minute
)

// CA is the fleet's certificate authority: an ECDSA P-256 key and its self-signed certificate.
// Key is nil in a CA loaded by LoadCACert, which can check but not issue.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// String names the CA without its key.
func (ca *CA) String() string { return "CA(" + ca.Cert.Subject.CommonName + ")" }

// NewCA makes a fleet CA named name, valid from now-Backdate for validity (zero means
// DefaultCAValidity).
func NewCA(name string, now time.Time, validity time.Duration) (*CA, error) {
	if validity == 0 {
		validity = DefaultCAValidity
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"camagent fleet"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certs: create ca: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: parse ca: %w", err)
	}
	return &CA{Cert: c, Key: key}, nil
}

// ErrNoCAKey is returned by Issue and by whatever else must sign for a CA loaded without its
// private key (LoadCACert): a machine that only checks certificates against the fleet CA.
var ErrNoCAKey = errors.New("certs: the fleet CA's private key is not on this machine")

// LoadCACert loads the fleet CA's certificate alone: enough to check certificates against it,
// not to issue any (Issue returns ErrNoCAKey).
func LoadCACert(certPEM []byte) (*CA, error) {
	c, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: ca certificate: %w", err)
	}
	if !c.IsCA {
		return nil, fmt.Errorf("certs: ca certificate %q is no CA", c.Subject.CommonName)
	}
	return &CA{Cert: c}, nil
}

// LoadCA parses a CA from its certificate and key PEM.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	c, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: ca certificate: %w", err)
	}
	k, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: ca key: %w", err)
	}
	if !c.IsCA || !SamePublicKey(c, k) {
		return nil, fmt.Errorf("certs: ca key does not match ca certificate: %w", ErrKeyMismatch)
	}
	return &CA{Cert: c, Key: k}, nil
}

// NewSerial returns a random positive 128-bit serial number.
func NewSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// IssueRequest is what the CA signs.
type IssueRequest struct {
	// Role decides the identity format and the extended key usage.
	Role Role
	// Name is the device id, the operator's name, or for RoleServer the CN.
	Name string
	// PublicKey is the subject's public key. Use CSR instead to have the CSR's subject checked.
	PublicKey crypto.PublicKey
	// CSR, if set, supplies the public key; its CN must equal the identity being issued.
	CSR *x509.CertificateRequest
	// DNSNames and IPs are the server's names (RoleServer only).
	DNSNames []string
	IPs      []net.IP
	// Now is the issue time; NotBefore is Now-Backdate.
	Now time.Time
	// Validity is the lifetime; zero means the role's default.
	Validity time.Duration
}

// Issue signs a certificate for req. Client roles get the clientAuth EKU only; RoleServer gets
// serverAuth only. A CSR whose CN differs from the identity being issued is refused.
func (ca *CA) Issue(req IssueRequest) (*x509.Certificate, error) {
	identity, err := IdentityFor(req.Role, req.Name)
	if err != nil {
		return nil, err
	}
	if ca.Key == nil {
		return nil, fmt.Errorf("certs: issue %s: %w", identity, ErrNoCAKey)
	}
	pub := req.PublicKey
	if req.CSR != nil {
		if req.CSR.Subject.CommonName != identity {
			return nil, fmt.Errorf("%w: csr names %q, issuing %q", ErrBadIdentity, req.CSR.Subject.CommonName, identity)
		}
		if err := req.CSR.CheckSignature(); err != nil {
			return nil, fmt.Errorf("%w: csr: %v", ErrBadSignature, err)
		}
		pub = req.CSR.PublicKey
	}
	if pub == nil {
		return nil, fmt.Errorf("certs: issue %s: no public key", identity)
	}
	validity := req.Validity
	if validity == 0 {
		validity = defaultValidity(req.Role)
	}
	if req.Now.IsZero() {
		return nil, fmt.Errorf("certs: issue %s: zero issue time", identity)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	notAfter := req.Now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: identity},
		NotBefore:    req.Now.Add(-Backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if req.Role == RoleServer {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = req.DNSNames
		tmpl.IPAddresses = req.IPs
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %s: %w", identity, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %s: %w", identity, err)
	}
	return c, nil
}

func defaultValidity(r Role) time.Duration {
	switch r {
	case RoleDevice:
		return DefaultDeviceValidity
	case RoleServer:
		return DefaultServerValidity
	case RoleBootstrap:
		return DefaultBootstrapValidity
	}
	return DefaultOperatorValidity
}

// VerifyClient checks that c chains to pool, carries the clientAuth EKU and is valid at now.
// It returns the certificate's identity. Both the embedded broker and the agent (for certificates
// the signer issues it) use it.
func VerifyClient(c *x509.Certificate, pool *x509.CertPool, now time.Time) (string, error) {
	if now.Before(c.NotBefore) {
		return "", fmt.Errorf("%w: certificate valid from %s, now %s", ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return "", fmt.Errorf("%w: certificate expired at %s", ErrExpired, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, err := c.Verify(x509.VerifyOptions{
		Roots:       pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", fmt.Errorf("certs: verify client certificate: %w", err)
	}
	return CertIdentity(c), nil
}
