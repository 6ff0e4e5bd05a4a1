package mqtttest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
)

// ServerName is the name the test brokers' certificate carries besides 127.0.0.1 and ::1, and
// the one ClientTLS verifies.
const ServerName = "localhost"

// PKI is a throw-away fleet CA for one test, and the certificates it issued. It is safe for
// concurrent use.
type PKI struct {
	// CA signs every certificate below.
	CA *certs.CA
	// CAPEM is CA's certificate in PEM, for brokers and clients that read files.
	CAPEM []byte
	// Pool holds CA only: what both ends of the test connections trust.
	Pool *x509.CertPool

	mu         sync.Mutex
	server     *tls.Certificate
	identities []string // non-device client identities issued, in issue order
}

// NewPKI makes a fresh fleet CA.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := certs.NewCA("mqtttest fleet CA", time.Now(), 0)
	if err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
	caPEM := certs.EncodeCertPEM(ca.Cert)
	pool, err := certs.NewPool(caPEM)
	if err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
	return &PKI{CA: ca, CAPEM: caPEM, Pool: pool}
}

// ClientCert issues a client certificate, valid from now for the role's default validity, for
// the identity certs.IdentityFor(role, name), with a fresh key.
func (p *PKI) ClientCert(t testing.TB, role certs.Role, name string) *tls.Certificate {
	t.Helper()
	return p.ClientCertValidity(t, role, name, time.Now(), 0)
}

// ClientCertValidity issues a client certificate as if at now: it is valid from now minus
// certs.Backdate until now plus validity (zero: the role's default). Pass a now in the past
// and a short validity for an expired certificate, a now in the future for one not yet valid.
//
// The identities of non-device roles are remembered: StartMosquitto gives each of them a user
// block in its ACL, so issue them before starting (or restarting) a Mosquitto broker.
func (p *PKI) ClientCertValidity(t testing.TB, role certs.Role, name string, now time.Time, validity time.Duration) *tls.Certificate {
	t.Helper()
	if role == certs.RoleServer {
		t.Fatalf("mqtttest: ClientCert for the server role: use ServerCert")
	}
	c := p.issue(t, certs.IssueRequest{Role: role, Name: name, Now: now, Validity: validity})
	if role != certs.RoleDevice {
		p.remember(c.Leaf.Subject.CommonName)
	}
	return c
}

func (p *PKI) issue(t testing.TB, req certs.IssueRequest) *tls.Certificate {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
	req.PublicKey = key.Public()
	leaf, err := p.CA.Issue(req)
	if err != nil {
		t.Fatalf("mqtttest: issue %s %q: %v", req.Role, req.Name, err)
	}
	c, err := certs.TLSCertificate(leaf, key)
	if err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
	return c
}

func (p *PKI) remember(identity string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(p.identities, identity) {
		p.identities = append(p.identities, identity)
	}
}

// Identities returns the non-device client identities issued so far, in issue order.
func (p *PKI) Identities() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.identities)
}

// ServerCert returns the brokers' server certificate, for 127.0.0.1, ::1 and ServerName. It
// is issued on first use and the same one is returned afterwards.
func (p *PKI) ServerCert(t testing.TB) *tls.Certificate {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.server == nil {
		p.server = p.issue(t, certs.IssueRequest{
			Role:     certs.RoleServer,
			Name:     ServerName,
			DNSNames: []string{ServerName},
			IPs:      []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			Now:      time.Now(),
		})
	}
	return p.server
}

// ServerTLS is the broker side: certs.ServerTLSConfig with ServerCert, requiring a client
// certificate from this CA.
func (p *PKI) ServerTLS(t testing.TB) *tls.Config {
	t.Helper()
	return certs.ServerTLSConfig(p.Pool, p.ServerCert(t))
}

// ClientTLS is the client side: certs.ClientTLSConfig presenting cert and trusting only this
// CA, for a broker named ServerName. cert may come from another PKI, to test refusals.
func (p *PKI) ClientTLS(t testing.TB, cert *tls.Certificate) *tls.Config {
	t.Helper()
	return certs.ClientTLSConfig(p.Pool, ServerName, certs.NewHolder(cert))
}

// CRL returns a PEM certificate revocation list, signed by the CA and valid for a day, that
// revokes the given serial numbers (Serial gives a certificate's).
func (p *PKI) CRL(t testing.TB, serials ...*big.Int) []byte {
	t.Helper()
	now := time.Now()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now.Add(-certs.Backdate),
		NextUpdate: now.Add(24 * time.Hour),
	}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   s,
			RevocationTime: now.Add(-time.Minute),
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, p.CA.Cert, p.CA.Key)
	if err != nil {
		t.Fatalf("mqtttest: create crl: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// Serial returns the serial number of a certificate made by this package.
func Serial(cert *tls.Certificate) *big.Int { return cert.Leaf.SerialNumber }
