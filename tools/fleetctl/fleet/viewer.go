package fleet

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
)

// IssueViewer signs the CSR of a viewer relay that made its own key (camview enroll) and
// returns the viewer bundle for it: its certificate, the fleet CA and the broker URL, nothing
// secret. The CSR's identity must be viewer:<name>. The certificate is also kept as
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
	b, err := json.MarshalIndent(certs.ViewerBundle{
		V:        1,
		Identity: certs.CertIdentity(c),
		CertPEM:  string(certs.EncodeCertPEM(c)),
		CAPEM:    string(f.CAPEM),
		Broker:   f.Meta.Broker,
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
