package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"

	"github.com/camagent/camagent/certs"
)

// BrokerGuard applies, to the TLS connections of a client of the fleet's own (an operator
// session, fleetctl serve), the broker floor of the fleet directory's key set in force
// (certs.KeySet.BrokerNotBefore): fleetctl refuses a broker presenting a retired certificate,
// as every device does, so whoever holds an old broker key fools no operator either. Each
// handshake reads the directory's key set again, so a set put in force later (breach --keyset,
// from this process or another) raises the floor from the next connection on. It remembers
// the broker certificate of the last handshake it accepted, which Check compares with a key
// set about to be published. It is safe for concurrent use.
type BrokerGuard struct {
	dir   string
	floor certs.BrokerFloor

	mu       sync.Mutex
	version  uint64      // of the key set the floor is from
	refused  error       // of the last handshake refused; nil after one accepted
	onRefuse func(error) // nil: none
}

// NewBrokerGuard returns a guard whose floor is that of the key set in force in f.
func (f *Fleet) NewBrokerGuard() *BrokerGuard {
	g := &BrokerGuard{dir: f.Dir}
	g.raise(f.KeySet())
	return g
}

// raise makes the floor that of ks when ks is newer than the set the floor is from, and
// reports whether the broker certificate of the last handshake accepted is now retired.
func (g *BrokerGuard) raise(ks *certs.KeySet) (lastRetired bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ks == nil || ks.Version <= g.version {
		return false
	}
	g.version = ks.Version
	return g.floor.Set(ks)
}

// Reload reads the key set in force in the fleet directory again and, when it is newer than
// the one the floor is from, takes its floor. It reports whether the broker certificate of the
// last handshake accepted is now retired: the connection made with it should be made again. A
// key set that cannot be read leaves the floor as it was.
func (g *BrokerGuard) Reload() (lastRetired bool, err error) {
	ks, err := ReadKeySet(g.dir)
	if err != nil {
		return false, err
	}
	return g.raise(ks), nil
}

// VerifyConnection is a tls.Config.VerifyConnection callback: it reloads the key set (Reload)
// and refuses a broker certificate its floor retired, with an error that says what to do.
func (g *BrokerGuard) VerifyConnection(cs tls.ConnectionState) error {
	g.Reload() // an unreadable key set keeps the floor held: never lower
	if err := g.floor.VerifyConnection(cs); err != nil {
		err = fmt.Errorf("fleet: the broker presents a certificate the key set in force (v%d) retired: %w; restart the broker with the fleet directory's new %s and its key (fleetctl replace broker made them; with Mosquitto or EMQX, on every node), and never connect to one presenting the old certificate", g.keySetVersion(), err, serverCert)
		g.mu.Lock()
		g.refused = err
		onRefuse := g.onRefuse
		g.mu.Unlock()
		if onRefuse != nil {
			onRefuse(err)
		}
		return err
	}
	g.mu.Lock()
	g.refused = nil
	g.mu.Unlock()
	return nil
}

func (g *BrokerGuard) keySetVersion() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.version
}

// Presented returns the broker certificate of the last handshake accepted; nil before one.
func (g *BrokerGuard) Presented() *x509.Certificate { return g.floor.Last() }

// Refused returns the error of the last handshake refused for a retired broker certificate,
// or nil if none was, or one was accepted since.
func (g *BrokerGuard) Refused() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refused
}

// setOnRefuse makes fn (nil: none) see every refusal, on the handshake's goroutine.
func (g *BrokerGuard) setOnRefuse(fn func(error)) {
	g.mu.Lock()
	g.onRefuse = fn
	g.mu.Unlock()
}

// Check returns an error wrapping certs.ErrRetiredBroker when ks retires the broker
// certificate of the last handshake accepted: publishing ks through that broker would cut
// every client that takes it off the broker. It names that certificate, the floor and what to
// do. With no handshake accepted yet it returns an error too: nothing is known of the broker.
func (g *BrokerGuard) Check(ks *certs.KeySet) error {
	leaf := g.Presented()
	if leaf == nil {
		return fmt.Errorf("fleet: no broker certificate seen yet: cannot tell whether key set v%d retires the broker", ks.Version)
	}
	if err := ks.CheckBroker(leaf); err != nil {
		return fmt.Errorf("fleet: key set v%d retires the certificate of the broker fleetctl is connected to (%w): every device and relay that took the set would refuse this broker and be cut off; restart the broker with the fleet directory's new %s and its key first (fleetctl replace broker made them; Mosquitto: fleetctl mosquitto-config, then restart it, on every node of a cluster; fleetctl broker: restart it), then run this again",
			ks.Version, err, serverCert)
	}
	return nil
}
