package fleet

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// RegistryPath is the signer's registry of certificates.
func (f *Fleet) RegistryPath() string { return filepath.Join(f.Dir, registryFile) }

// RolloutPath is the signers' shared rollout-control state.
func (f *Fleet) RolloutPath() string { return filepath.Join(f.Dir, rolloutFile) }

// CRLPath is the CRL the signer keeps up to date for Mosquitto's crlfile.
func (f *Fleet) CRLPath() string { return filepath.Join(f.Dir, crlFile) }

// DeviceValidity is the lifetime of device certificates, from fleet.json.
func (f *Fleet) DeviceValidity() time.Duration {
	return time.Duration(f.Meta.DeviceValidity) * time.Second
}

// OpenRegistry opens the fleet's registry; close it when done. log may be nil.
func (f *Fleet) OpenRegistry(log *slog.Logger) (*registry.Registry, error) {
	return registry.Open(f.RegistryPath(), registry.Options{Logger: log})
}

// SignerCertificate loads the signer's TLS client certificate (signer:default), issuing it
// first for a fleet made before signers existed, and renewing it within RenewBefore of its
// expiry.
func (f *Fleet) SignerCertificate() (*tls.Certificate, error) {
	if _, err := os.Stat(filepath.Join(f.Dir, signerCert)); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.EnsurePrivateDir(filepath.Join(f.Dir, signerDir)); err != nil {
			return nil, err
		}
		now := time.Now()
		req := certs.IssueRequest{Role: certs.RoleSigner, Name: DefaultSigner, Now: now}
		if err := issueKeyPair(f.Dir, f.CA, req, signerCert, signerKey, func(c *x509.Certificate) error { return f.recordIdentity(c, now) }); err != nil {
			return nil, err
		}
	}
	return f.loadRenewing(signerCert, signerKey, time.Now())
}

// SignerClientID returns the stable MQTT client id of the signer instance named instance:
// the signer identity, "~" and the first 8 hex digits of the name's SHA-256. A restarted
// instance finds its persistent session again; instances with different names never take
// over each other's.
func SignerClientID(identity, instance string) string {
	sum := sha256.Sum256([]byte(instance))
	return identity + "~" + hex.EncodeToString(sum[:4])
}

// ViewerCertificate loads the TLS client certificate of the viewer relay identity
// viewer:<name> (camview --fleet), issuing it on first use and again within RenewBefore of
// its expiry, and keeping its key in the fleet directory. A viewer relay may only carry WebRTC
// signaling (docs/protocol.md); what it may watch is decided by the grants it relays. A relay
// on a machine of its own makes its own key instead (camview enroll, IssueViewer) and never
// needs the fleet directory.
func (f *Fleet) ViewerCertificate(name string) (*tls.Certificate, error) {
	return f.viewerCertificate(name, true)
}

// KeptViewerCertificate loads viewer:<name>'s key pair from the fleet directory, renewing it
// when due, like ViewerCertificate, but never issues a first one: a running relay's refresh
// uses it, so that a relay revoked while it runs (fleetctl viewer --revoke, which removes the
// pair) stays out instead of issuing itself a new certificate within the hour.
func (f *Fleet) KeptViewerCertificate(name string) (*tls.Certificate, error) {
	return f.viewerCertificate(name, false)
}

// viewerCertificate is ViewerCertificate, which issues a first pair when there is none, and
// with !issue KeptViewerCertificate, which does not.
func (f *Fleet) viewerCertificate(name string, issue bool) (*tls.Certificate, error) {
	if _, _, err := certs.ParseIdentity(string(certs.RoleViewer) + ":" + name); err != nil {
		return nil, fmt.Errorf("fleet: viewer name: %w", err)
	}
	certName := filepath.Join(viewerDir, name+".crt")
	keyName := filepath.Join(viewerDir, name+".key")
	if _, err := os.Stat(filepath.Join(f.Dir, certName)); errors.Is(err, os.ErrNotExist) {
		if !issue {
			return nil, fmt.Errorf("fleet: viewer:%s has no certificate in the fleet directory any more (revoked by fleetctl viewer --revoke?): restart the relay to be issued a new one", name)
		}
		if err := atomicfile.EnsurePrivateDir(filepath.Join(f.Dir, viewerDir)); err != nil {
			return nil, err
		}
		if err := f.issueViewerKeyPair(name, certName, keyName, time.Now()); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(filepath.Join(f.Dir, keyName)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("fleet: viewer:%s was issued to a camview that keeps its own key (fleetctl viewer): run camview there with --identity, or pick another --name", name)
	}
	return f.loadRenewing(certName, keyName, time.Now())
}

// DefaultViewer is camview's default viewer relay name: viewer:web.
const DefaultViewer = "web"

// ViewerNames lists the viewer relay identities issued so far (by ViewerCertificate).
func (f *Fleet) ViewerNames() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(f.Dir, viewerDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".crt"); ok {
			names = append(names, n)
		}
	}
	return names, nil
}
