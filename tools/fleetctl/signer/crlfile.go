package signer

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"sync"

	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// CRLFile answers whether the fleet's CRL lists a serial, for the embedded broker: with the
// registry's log, the second copy of every revocation (see WriteCRL), so that a revocation
// the log lost to damage is still refused at CONNECT. It reads the file again whenever the
// file changed (every writer replaces it by rename), at the cost of a stat(2) per question.
// A file that cannot be read, or is not signed by the fleet CA, is reported once per change.
// A serial once listed stays listed for as long as the CRLFile lives, whatever later files
// say: nothing a fault does to the file, nor a CRL written from a damaged log after it, admits
// it (a serial leaves a CRL only after its certificate expired, which the TLS handshake
// refuses anyway). It is safe for concurrent use.
type CRLFile struct {
	path string
	ca   *x509.Certificate
	log  *slog.Logger

	mu      sync.Mutex
	seen    os.FileInfo // the file last looked at, nil if none
	listed  map[string]bool
	failing bool // the last stat(2) failed other than for a missing file, and was reported
}

// NewCRLFile returns a CRLFile for the CRL at path, signed by ca, and reads it.
func NewCRLFile(path string, ca *x509.Certificate, log *slog.Logger) *CRLFile {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CRLFile{path: path, ca: ca, log: log, listed: map[string]bool{}}
	fi, err := os.Stat(path)
	c.mu.Lock()
	c.refreshLocked(fi, err)
	c.mu.Unlock()
	return c
}

// Listed reports whether the CRL lists serial. It is meant for broker.Config.Revoked, next to
// the registry's Revoked. The stat(2) runs outside the lock: connections asking at once wait
// for one another only while a changed file is read.
func (c *CRLFile) Listed(serial *big.Int) bool {
	if serial == nil {
		return false
	}
	fi, err := os.Stat(c.path)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshLocked(fi, err)
	return c.listed[registry.SerialHex(serial)]
}

// refreshLocked reads the file again if fi and err, its stat(2), say it changed since it was
// last looked at.
func (c *CRLFile) refreshLocked(fi os.FileInfo, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.seen, c.failing = nil, false // none yet (a signer writes it), or moved away: what was read stays
		return
	case err != nil:
		if !c.failing {
			c.log.Error("crl: cannot look at the fleet's CRL; the serials it listed stay refused", "path", c.path, "err", err)
		}
		c.failing = true
		return
	}
	c.failing = false
	if c.seen != nil && os.SameFile(fi, c.seen) && fi.Size() == c.seen.Size() && fi.ModTime().Equal(c.seen.ModTime()) {
		return
	}
	c.seen = fi
	rl, err := ReadCRL(c.path, c.ca)
	if err != nil {
		c.log.Error("crl: the fleet's CRL cannot be read; the serials it listed before stay refused (run fleetctl crl)", "path", c.path, "err", err)
		return
	}
	for _, e := range rl.RevokedCertificateEntries {
		c.listed[registry.SerialHex(e.SerialNumber)] = true
	}
}
