package broker

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
