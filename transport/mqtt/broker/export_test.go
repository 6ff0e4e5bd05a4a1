package broker

import (
	"net"
	"time"
)

// ExpiryTimers returns how many live connections have a certificate-expiry timer pending, for
// tests that check none is left behind.
func (b *Broker) ExpiryTimers() int64 {
	if ln := b.listener(); ln != nil {
		return ln.expiring.Load()
	}
	return 0
}

// ChainExpiry is chainExpiry, for its table test.
var ChainExpiry = chainExpiry

// Suspect reports whether the connection budget holds the source of ip suspect now.
func (b *Broker) Suspect(ip string) bool {
	ln := b.listener()
	if ln == nil || ln.sources == nil {
		return false
	}
	return ln.sources.suspect(sourceOf(&net.TCPAddr{IP: net.ParseIP(ip)}), ln.now())
}

// NextTurnIn returns how long until the connection budget's next turn: zero or less when a
// turn is free now.
func (b *Broker) NextTurnIn() time.Duration {
	ln := b.listener()
	if ln == nil || ln.budget == nil {
		return 0
	}
	ln.budget.mu.Lock()
	defer ln.budget.mu.Unlock()
	return time.Until(ln.budget.next)
}
