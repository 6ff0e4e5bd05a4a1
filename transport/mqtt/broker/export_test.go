package broker

import "net"

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

// SetMinHelloRoom sets the least room for connections waiting for their ClientHello, for
// brokers started until the test ends, so that tests fill it with a few dozen sockets.
func SetMinHelloRoom(t interface{ Cleanup(func()) }, n int) {
	old := minHelloRoom
	minHelloRoom = n
	t.Cleanup(func() { minHelloRoom = old })
}

// WaitingForHello returns how many accepted connections wait for their ClientHello.
func (b *Broker) WaitingForHello() int {
	ln := b.listener()
	if ln == nil || ln.room == nil {
		return 0
	}
	ln.room.mu.Lock()
	defer ln.room.mu.Unlock()
	return ln.room.all.Len()
}

// QueuedTurns returns how many turns of the connection budget are queued, not yet come.
func (b *Broker) QueuedTurns() int {
	ln := b.listener()
	if ln == nil || ln.budget == nil {
		return 0
	}
	ln.budget.mu.Lock()
	defer ln.budget.mu.Unlock()
	n := 0
	for _, l := range ln.budget.bySrc {
		n += l.Len()
	}
	return n
}

// SourceWeight returns what the source of the address ip weighs in the sharing of the
// connection budget's queue.
func (b *Broker) SourceWeight(ip string) int {
	ln := b.listener()
	if ln == nil || ln.budget == nil {
		return 0
	}
	ln.budget.mu.Lock()
	defer ln.budget.mu.Unlock()
	return ln.budget.weight(sourceOf(&net.TCPAddr{IP: net.ParseIP(ip)}))
}
