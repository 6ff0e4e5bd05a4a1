package signer

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"sync"
	"time"

	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// CRLFile answers whether the fleet's CRL lists a serial, for the embedded broker: with the
// registry's log, the second copy of every revocation (see WriteCRL), so that a revocation
// the log lost to damage is still refused at CONNECT. It reads the file again whenever the
// file changed (every writer replaces it by rename), at the cost of a stat(2) per question.
// A file that cannot be read, or is not signed by the fleet CA, is reported once per change.
// A serial once listed stays listed whatever later files say (nothing a fault does to the
// file, nor a CRL written from a damaged log after it, admits it) until a day after the
// certificate it revokes expired, as a CRL recorded that expiry (ListedNotAfter): the TLS
// handshake refuses such a certificate anyway, and a broker that runs for years holds only
// what its fleet's CRL holds, not every serial ever revoked. A serial whose expiry no CRL
// recorded (written by a fleetctl before that, or revoked without the log holding the
// certificate) stays listed for as long as the CRLFile lives. It is safe for concurrent use.
type CRLFile struct {
	path string
	ca   *x509.Certificate
	log  *slog.Logger
	now  func() time.Time

	mu   sync.Mutex
	seen os.FileInfo // the file last looked at, nil if none
	// listed maps a serial to the time from which it may be forgotten: a day after its
	// certificate's NotAfter, the latest any CRL recorded; zero while none did (kept).
	listed  map[string]time.Time
	failing bool // the last stat(2) failed other than for a missing file, and was reported
}

// NewCRLFile returns a CRLFile for the CRL at path, signed by ca, and reads it.
func NewCRLFile(path string, ca *x509.Certificate, log *slog.Logger) *CRLFile {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &CRLFile{path: path, ca: ca, log: log, now: time.Now, listed: map[string]time.Time{}}
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
	_, ok := c.listed[registry.SerialHex(serial)]
	return ok
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
	bad := 0
	for _, e := range rl.RevokedCertificateEntries {
		hex := registry.SerialHex(e.SerialNumber)
		notAfter, ok, err := ListedNotAfter(e)
		if err != nil {
			bad++ // listed, kept for as long as the CRLFile lives
		}
		forget, had := c.listed[hex]
		switch {
		case !had:
			forget = time.Time{}
			if ok {
				forget = notAfter.Add(crlExpiredGrace)
			}
		case ok && notAfter.Add(crlExpiredGrace).After(forget):
			forget = notAfter.Add(crlExpiredGrace)
		}
		c.listed[hex] = forget
	}
	if bad > 0 {
		c.log.Error("crl: entries of the fleet's CRL carry a certificate expiry that does not parse; those serials stay refused until the broker restarts", "path", c.path, "entries", bad)
	}
	now := c.now()
	for hex, forget := range c.listed {
		if !forget.IsZero() && forget.Before(now) {
			delete(c.listed, hex) // its certificate expired over a day ago
		}
	}
}
