package signer

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// The CRL the signer writes is valid (its nextUpdate) until the fleet CA expires, on
// purpose: Mosquitto (OpenSSL with X509_V_FLAG_CRL_CHECK) refuses every client certificate
// once the CRL it loaded is past nextUpdate, with the TLS alert "certificate expired", and it
// reads its crlfile only when it starts. With a nextUpdate a year out, a Mosquitto that ran for
// a year on one CRL would have cut off the whole fleet at once (checked on a real Mosquitto
// 2.0.11 with a CRL past its nextUpdate). Nothing else reads the CRL, and nothing fetches it
// again at nextUpdate: a shorter one buys nothing. The signer writes a fresh CRL at start and
// after every revocation; `fleetctl crl` writes one on demand.

// crlExpiredGrace is how long after its certificate expired a revoked serial stays on the CRL:
// a certificate past NotAfter is refused for that reason alone, but brokers' clocks may lag.
const crlExpiredGrace = 24 * time.Hour

// CRL returns a PEM certificate revocation list (RFC 5280, section 5) signed by ca, listing the
// revoked serials, except those whose certificate expired more than a day before now. validity
// is the time to nextUpdate, capped at the CA's own expiry; zero means until the CA expires.
func CRL(ca *certs.CA, revoked []registry.Revocation, now time.Time, validity time.Duration) ([]byte, error) {
	next := now.Add(validity)
	if validity == 0 || next.After(ca.Cert.NotAfter) {
		next = ca.Cert.NotAfter
	}
	tmpl := &x509.RevocationList{
		// CRL numbers only need to grow (RFC 5280, section 5.2.3); several signers write the
		// same file, so a clock is the one counter they share.
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now.Add(-certs.Backdate),
		NextUpdate: next,
	}
	for _, r := range CRLEntries(revoked, now) {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   r.Serial,
			RevocationTime: r.Time,
		})
	}
	if ca.Key == nil {
		return nil, fmt.Errorf("signer: create crl: %w", certs.ErrNoCAKey)
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signer: create crl: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// CRLEntries returns the revocations a CRL made at now lists: all but those whose certificate
// expired more than a day before now.
func CRLEntries(revoked []registry.Revocation, now time.Time) []registry.Revocation {
	var out []registry.Revocation
	for _, r := range revoked {
		if !r.NotAfter.IsZero() && r.NotAfter.Add(crlExpiredGrace).Before(now) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// WriteCRL writes CRL's output to path atomically, mode 0644 (a CRL is public).
func WriteCRL(path string, ca *certs.CA, revoked []registry.Revocation, now time.Time) error {
	b, err := CRL(ca, revoked, now, 0)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("signer: write crl: %w", err)
	}
	return nil
}
