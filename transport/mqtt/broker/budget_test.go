package broker_test

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// TestTheConnectionBudgetSpreadsAStorm: with MaxConnectRate set, a storm of new connections
// gets TLS handshakes no faster than the budget; the ones whose turn would come too late are
// closed unanswered (and counted), and a client that comes back later is served.
func TestTheConnectionBudgetSpreadsAStorm(t *testing.T) {
	const budget, storm = 20.0, 80
	pki := mqtttest.NewPKI(t)
	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), MaxConnectRate: budget, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	conf := pki.ClientTLS(t, cam)
	dial := func() error {
		c, err := tls.DialWithDialer(&nettimeout, "tcp", b.Addr(), conf)
		if err != nil {
			return err
		}
		// TLS 1.3: a refused client certificate or a closed socket shows on the first read.
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var one [1]byte
		_, err = c.Read(one[:])
		c.Close()
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			return nil // the broker waits for CONNECT: the handshake was served
		}
		return err
	}

	start := time.Now()
	var served atomic.Int64
	var wg sync.WaitGroup
	for range storm {
		wg.Go(func() {
			if dial() == nil {
				served.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	refused := storm - served.Load()
	if max := int64(1 + budget*elapsed + 1); served.Load() > max {
		t.Errorf("%d handshakes served in %.2f s with a budget of %.0f/s (at most %d)", served.Load(), elapsed, budget, max)
	}
	if refused == 0 || uint64(refused) != b.Throttled() {
		t.Errorf("%d of %d connections refused, broker counted %d throttled; want some, and the same", refused, storm, b.Throttled())
	}
	if p := b.PeakAdmitted(); p < 1 || p > budget+1 {
		t.Errorf("PeakAdmitted = %d, want 1 to %d", p, int(budget)+1)
	}
	time.Sleep(200 * time.Millisecond) // the budget refills
	if err := dial(); err != nil {
		t.Fatalf("a connection after the storm: %v", err)
	}
}

var nettimeout = net.Dialer{Timeout: 5 * time.Second}

// Without a budget, PeakAdmitted counts a storm's connections in the second it came.
func TestPeakAdmittedCountsAStormWithoutABudget(t *testing.T) {
	const storm = 80
	pki := mqtttest.NewPKI(t)
	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.PeakAdmitted() != 0 {
		t.Fatalf("PeakAdmitted = %d before any connection", b.PeakAdmitted())
	}
	conf := pki.ClientTLS(t, cam)
	var wg sync.WaitGroup
	for range storm {
		wg.Go(func() {
			if c, err := tls.DialWithDialer(&nettimeout, "tcp", b.Addr(), conf); err == nil {
				c.Close()
			}
		})
	}
	wg.Wait()
	// The storm may straddle a second boundary, or three on a slow machine.
	if p := b.PeakAdmitted(); p < storm/3 || p > storm {
		t.Fatalf("PeakAdmitted = %d after %d connections at once", p, storm)
	}
}
