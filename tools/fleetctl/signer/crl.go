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

// DefaultCRLValidity is how long a CRL the signer writes stays valid (its nextUpdate).
//
// It is long on purpose: Mosquitto (OpenSSL with X509_V_FLAG_CRL_CHECK) refuses every client
// certificate once its crlfile is past nextUpdate, and it reads the file only when it starts,
// so a short validity would turn an old CRL into a fleet-wide outage at the next restart. The
// signer writes a fresh CRL at start and after every revocation; `fleetctl crl` writes one on
// demand.
const DefaultCRLValidity = 365 * 24 * time.Hour

// crlExpiredGrace is how long after its certificate expired a revoked serial stays on the CRL:
// a certificate past NotAfter is refused for that reason alone, but brokers' clocks may lag.
const crlExpiredGrace = 24 * time.Hour

// CRL returns a PEM certificate revocation list (RFC 5280, section 5) signed by ca, listing the
// revoked serials, except those whose certificate expired more than a day before now. validity
// is the time to nextUpdate; zero means DefaultCRLValidity, capped at the CA's own expiry.
func CRL(ca *certs.CA, revoked []registry.Revocation, now time.Time, validity time.Duration) ([]byte, error) {
	if validity == 0 {
		validity = DefaultCRLValidity
	}
	next := now.Add(validity)
	if next.After(ca.Cert.NotAfter) {
		next = ca.Cert.NotAfter
	}
	tmpl := &x509.RevocationList{
		// CRL numbers only need to grow (RFC 5280, section 5.2.3); several signers write the
		// same file, so a clock is the one counter they share.
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now.Add(-certs.Backdate),
		NextUpdate: next,
	}
	for _, r := range revoked {
		if !r.NotAfter.IsZero() && r.NotAfter.Add(crlExpiredGrace).Before(now) {
			continue
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   r.Serial,
			RevocationTime: r.Time,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signer: create crl: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
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
