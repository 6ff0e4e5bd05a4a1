package mqtttest

import (
	"sync"
	"testing"

	"github.com/camagent/camagent/transport/mqtt/broker"
)

// Embedded is a transport/mqtt/broker instance for one test, persisting to t.TempDir().
type Embedded struct {
	cfg broker.Config

	mu sync.Mutex
	b  *broker.Broker // nil while stopped
}

// StartEmbedded starts the embedded broker on a free loopback port with TLS from pki, and
// stops it when the test ends. Its log is shown if the test fails.
func StartEmbedded(t testing.TB, pki *PKI, opts ...Option) *Embedded {
	t.Helper()
	o := collect(opts)
	if o.opensslDefaults {
		t.Fatalf("mqtttest: WithOpenSSLDefaults needs Mosquitto: the embedded broker does not use OpenSSL")
	}
	cfg := broker.Config{
		Addr:      "127.0.0.1:0",
		TLS:       pki.ServerTLS(t),
		DataDir:   t.TempDir(),
		Logger:    newLogger(t, "embedded"),
		OnPublish: o.onPublish,
		Now:       o.now,
	}
	if o.crl != nil {
		cfg.Revoked = revokedSet(t, pki, o.crl)
	}
	e := &Embedded{cfg: cfg}
	e.start(t)
	// The first start picked a port; restarts keep it.
	e.cfg.Addr = e.b.Addr()
	t.Cleanup(func() { e.Stop(t) })
	return e
}

func (e *Embedded) start(t testing.TB) {
	t.Helper()
	b, err := broker.New(e.cfg)
	mustf(t, err, "embedded broker")
	mustf(t, b.Start(), "start embedded broker")
	e.mu.Lock()
	e.b = b
	e.mu.Unlock()
}

// URL returns "mqtts://127.0.0.1:<port>".
func (e *Embedded) URL() string { return "mqtts://" + e.cfg.Addr }

// Name returns "embedded".
func (e *Embedded) Name() string { return "embedded" }

// Broker returns the running broker, e.g. for DisconnectSerial, or nil while stopped.
func (e *Embedded) Broker() *broker.Broker {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.b
}

// Restart closes the broker and starts a new one on the same address and data directory.
func (e *Embedded) Restart(t testing.TB) {
	t.Helper()
	e.Stop(t)
	e.start(t)
}

// Stop closes the broker. Stopping a stopped broker does nothing.
func (e *Embedded) Stop(t testing.TB) {
	t.Helper()
	e.mu.Lock()
	b := e.b
	e.b = nil
	e.mu.Unlock()
	if b != nil {
		mustf(t, b.Close(), "close embedded broker")
	}
}
