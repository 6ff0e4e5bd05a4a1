package fleet

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// IssueViewer signs the CSR of a viewer relay that made its own key (camview enroll) and
// returns the viewer bundle for it: its certificate, the fleet CA and the broker URL, nothing
// secret. The CSR's identity must be viewer:<name>. The certificate is recorded in the
// registry before it is handed out, so RevokeViewer can revoke it, and also kept as
// viewer/<name>.crt, without a key, so that `fleetctl mosquitto-config` lets the identity in.
// A name already issued with a key kept here (the camview --fleet way) is refused: that key
// would still work beside the new one.
func (f *Fleet) IssueViewer(csrPEM []byte, now time.Time) ([]byte, *x509.Certificate, error) {
	csr, err := certs.ParseCSR(csrPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	role, name, err := certs.ParseIdentity(csr.Subject.CommonName)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: viewer: csr: %w", err)
	}
	if role != certs.RoleViewer {
		return nil, nil, fmt.Errorf("fleet: viewer: csr for %q, not a viewer:<name> identity", csr.Subject.CommonName)
	}
	keyPath := filepath.Join(f.Dir, viewerDir, name+".key")
	if _, err := os.Stat(keyPath); err == nil {
		return nil, nil, fmt.Errorf("fleet: viewer: viewer:%s was issued before with a key kept in the fleet directory (%s); pick another name, or remove that key and its certificate first", name, keyPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	c, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleViewer, Name: name, CSR: csr, Now: now})
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	if err := f.recordIdentity(c, now); err != nil {
		return nil, nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	b, err := json.MarshalIndent(certs.ViewerBundle{
		V:        1,
		Identity: certs.CertIdentity(c),
		CertPEM:  string(certs.EncodeCertPEM(c)),
		CAPEM:    string(f.CAPEM),
		Broker:   f.Meta.Broker,
		// The public halves only: the relay checks grants with them.
		Root:   f.RootKey(),
		KeySet: f.keySet,
	}, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	if err := atomicfile.EnsurePrivateDir(filepath.Join(f.Dir, viewerDir)); err != nil {
		return nil, nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	if err := writeFile(f.Dir, filepath.Join(viewerDir, name+".crt"), certs.EncodeCertPEM(c), 0o644); err != nil {
		return nil, nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	return b, c, nil
}

// issueViewerKeyPair issues viewer:<name> a certificate for a key made here, records it, and
// keeps both in the fleet directory (the camview --fleet way).
func (f *Fleet) issueViewerKeyPair(name, certName, keyName string, now time.Time) error {
	req := certs.IssueRequest{Role: certs.RoleViewer, Name: name, Now: now}
	return issueKeyPair(f.Dir, f.CA, req, certName, keyName, func(c *x509.Certificate) error { return f.recordIdentity(c, now) })
}

// recordIdentity records c, a certificate of a viewer relay, an operator or a signer, in the
// registry under its identity, so that it can be revoked.
func (f *Fleet) recordIdentity(c *x509.Certificate, now time.Time) error {
	rec, err := registry.IdentityIssuedRecord(c, now)
	if err != nil {
		return err
	}
	reg, err := f.enrollRegistry()
	if err != nil {
		return err
	}
	return reg.Update(func(tx *registry.Tx) error { return tx.Append(rec) })
}

// RevokeViewer revokes every certificate of viewer:<name> that is not revoked yet and not
// expired: those the registry holds, and the one kept as viewer/<name>.crt (issued before
// viewer certificates were recorded). It removes viewer/<name>.crt and its key, if the fleet
// kept one, so Mosquitto's ACL no longer names the identity and the camview --fleet way makes
// a new one. It returns the serials revoked; the caller writes the CRL for Mosquitto.
func (f *Fleet) RevokeViewer(name string, now time.Time) ([]*big.Int, error) {
	identity, err := certs.IdentityFor(certs.RoleViewer, name)
	if err != nil {
		return nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	certPath := filepath.Join(f.Dir, viewerDir, name+".crt")
	var kept *x509.Certificate
	if b, err := os.ReadFile(certPath); err == nil {
		if kept, err = certs.ParseCertPEM(b); err != nil {
			return nil, fmt.Errorf("fleet: viewer: %s: %w", certPath, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	reg, err := f.enrollRegistry()
	if err != nil {
		return nil, fmt.Errorf("fleet: viewer: %w", err)
	}
	var revoked []*big.Int
	err = reg.Update(func(tx *registry.Tx) error {
		r, err := revokeIdentity(tx, identity, kept, "", now)
		revoked = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: viewer: revoke %s: %w", identity, err)
	}
	for _, p := range []string{certPath, filepath.Join(f.Dir, viewerDir, name+".key")} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return revoked, fmt.Errorf("fleet: viewer: %w", err)
		}
	}
	return revoked, nil
}
