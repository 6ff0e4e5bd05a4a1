package signer

import "time"

// Len returns how many serials c lists.
func (c *CRLFile) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.listed)
}

// SetClock makes c forget expired serials by now rather than the system clock.
func (c *CRLFile) SetClock(now func() time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
}

// OIDCertNotAfter names the CRL entry extension with the certificate's expiry.
var OIDCertNotAfter = oidCertNotAfter
