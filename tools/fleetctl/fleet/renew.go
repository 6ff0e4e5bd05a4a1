package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/camagent/camagent/certs"
)

// RenewBefore is how long before its certificate expires an identity the fleet directory keeps
// with its key (operator, signer, broker, a camview --fleet relay) is renewed when it is
// loaded: a new key and certificate for the same identity take the old ones' place. The
// operator's and signer's certificates last 90 days, the broker's a year; every fleetctl
// command loads the one it uses, and the long-running signer and broker look again every
// hour (CertificateRefresh), so no identity of the fleet's own expires while in use.
const RenewBefore = 30 * 24 * time.Hour

// CertificateRefresh is how often a long-running fleetctl process (serve, broker) loads its
// certificate again, renewing it within RenewBefore of its expiry.
const CertificateRefresh = time.Hour

// renewLock is the file whose lock serialises renewals among processes sharing the directory.
const renewLock = ".renew.lock"

// loadRenewing loads the pair certName/keyName of the fleet directory. If the certificate
// expires within RenewBefore of now, or the key is not the certificate's (a renewal that
// stopped between writing the key and the certificate), it first issues a new key and
// certificate for the same identity, under a lock shared with other processes.
//
// A renewal that fails (a fleet directory this user may only read) while the certificate is
// still valid is not an error: the certificate is used, and the next process that can write
// renews it. Once it has expired, the renewal's error is returned.
func (f *Fleet) loadRenewing(certName, keyName string, now time.Time) (*tls.Certificate, error) {
	c, err := loadPair(f.Dir, certName, keyName)
	if err == nil && c.Leaf.NotAfter.Sub(now) >= RenewBefore {
		return c, nil
	}
	if err != nil && !errors.Is(err, certs.ErrKeyMismatch) {
		return nil, err
	}
	renewed, rerr := f.renew(certName, keyName, now)
	if rerr != nil && err == nil && now.Before(c.Leaf.NotAfter) {
		return c, nil
	}
	return renewed, rerr
}

// renew issues a new key and certificate for the identity of certName, under the renewal lock.
func (f *Fleet) renew(certName, keyName string, now time.Time) (*tls.Certificate, error) {
	unlock, err := lockDir(filepath.Join(f.Dir, renewLock))
	if err != nil {
		return nil, fmt.Errorf("fleet: renew %s: %w", certName, err)
	}
	defer unlock()
	// Another process may have renewed it while this one waited for the lock.
	if c, err := loadPair(f.Dir, certName, keyName); err == nil && c.Leaf.NotAfter.Sub(now) >= RenewBefore {
		return c, nil
	}
	b, err := os.ReadFile(filepath.Join(f.Dir, certName))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	old, err := certs.ParseCertPEM(b)
	if err != nil {
		return nil, fmt.Errorf("fleet: %s: %w", certName, err)
	}
	req, err := renewalRequest(old, now)
	if err != nil {
		return nil, fmt.Errorf("fleet: renew %s: %w", certName, err)
	}
	var record func(*x509.Certificate) error
	if req.Role != certs.RoleServer {
		record = func(c *x509.Certificate) error { return f.recordIdentity(c, now) }
	}
	if err := issueKeyPair(f.Dir, f.CA, req, certName, keyName, record); err != nil {
		return nil, fmt.Errorf("fleet: renew %s: %w", certName, err)
	}
	return loadPair(f.Dir, certName, keyName)
}

// renewalRequest asks for a certificate for old's identity (for the broker, its names too),
// of its role's default lifetime.
func renewalRequest(old *x509.Certificate, now time.Time) (certs.IssueRequest, error) {
	if slices.Contains(old.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return certs.IssueRequest{Role: certs.RoleServer, Name: old.Subject.CommonName, DNSNames: old.DNSNames, IPs: old.IPAddresses, Now: now}, nil
	}
	role, name, err := certs.ParseIdentity(certs.CertIdentity(old))
	if err != nil {
		return certs.IssueRequest{}, err
	}
	switch role {
	case certs.RoleOperator, certs.RoleSigner, certs.RoleViewer:
		return certs.IssueRequest{Role: role, Name: name, Now: now}, nil
	}
	return certs.IssueRequest{}, fmt.Errorf("%s is not an identity the fleet directory renews", certs.CertIdentity(old))
}

// Refresh loads a long-running process's certificate again every interval until ctx is done
// (load renews it when due) and hands set each one whose serial differs from the one in use.
// A failed load is logged and the certificate in use kept: it stays valid for weeks.
func Refresh(ctx context.Context, interval time.Duration, current *tls.Certificate, load func() (*tls.Certificate, error), set func(*tls.Certificate), log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var warned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, err := load()
		if err != nil {
			log.Error("fleet: cannot load the certificate again; keeping the one in use", "identity", certs.CertIdentity(current.Leaf), "not_after", current.Leaf.NotAfter.UTC().Format(time.RFC3339), "err", err)
			continue
		}
		// Due for renewal and not renewed: this copy of the fleet directory cannot (no CA
		// key, read-only). Say so daily until someone renews it where it can be.
		if left := time.Until(c.Leaf.NotAfter); left < RenewBefore && time.Since(warned) >= 24*time.Hour {
			warned = time.Now()
			log.Warn("fleet: the certificate expires soon and could not be renewed here (no CA key, or a read-only fleet directory): renew it where the CA key is and copy it here",
				"identity", certs.CertIdentity(c.Leaf), "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339), "left", left.Round(time.Hour).String())
		}
		if c.Leaf.SerialNumber.Cmp(current.Leaf.SerialNumber) != 0 {
			log.Info("fleet: certificate renewed", "identity", certs.CertIdentity(c.Leaf), "serial", c.Leaf.SerialNumber.Text(16), "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
			set(c)
			current = c
		}
	}
}
