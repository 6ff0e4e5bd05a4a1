// Package mqtttest gives tests of any package real MQTT brokers to talk to: a throw-away fleet
// PKI (PKI), the embedded broker (StartEmbedded), a real Mosquitto 2.0 process configured by
// transport/mqtt/mosquitto (StartMosquitto), ForEachBroker to run one test against both
// (rule 17 of STYLE.md: integration tests use real parts), and a TCP forwarder that records
// where clients connect from (StartTap).
//
// Both brokers listen on loopback only, on a free port, with their state in t.TempDir(), and
// are stopped when the test ends. Their logs are shown only when the test fails.
//
// It is test support: it must never be imported by non-test code, never listen beyond
// loopback, and never skip a test because Mosquitto is missing (it fails it, saying how to
// install it).
package mqtttest

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/camagent/camagent/internal/logtest"
)

// Broker is a running test broker.
type Broker interface {
	// URL is "mqtts://127.0.0.1:<port>", for paho's AddBroker.
	URL() string
	// Restart stops the broker and starts it again on the same port with the same persisted
	// state, as after a crash-free reboot: persistent sessions, their queued QoS 1/2 messages
	// and retained messages survive. Clients are disconnected.
	Restart(t testing.TB)
	// Stop stops the broker; it is also done when the test ends. Stopping twice is harmless.
	Stop(t testing.TB)
	// Name is "embedded" or "mosquitto", for subtest names.
	Name() string
}

var (
	_ Broker = (*Embedded)(nil)
	_ Broker = (*Mosquitto)(nil)
)

// Option configures StartEmbedded, StartMosquitto and ForEachBroker.
type Option func(*options)

type options struct {
	identities []string
	crl        []byte
	onPublish  func(clientID, topic string, payload []byte, retained bool)
	now        func() time.Time
	// opensslDefaults runs Mosquitto without the openssl.cnf of fleetctl mosquitto-config.
	opensslDefaults bool
}

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithOpenSSLDefaults runs Mosquitto with the system's OpenSSL configuration instead of the
// openssl.cnf fleetctl mosquitto-config writes beside mosquitto.conf, as an operator who
// skipped that file would: OpenSSL then sends two TLS 1.3 session tickets after every
// handshake. Mosquitto only.
func WithOpenSSLDefaults() Option {
	return func(o *options) { o.opensslDefaults = true }
}

// WithIdentities names non-device identities ("operator:alice", "bootstrap:cam-a", ...) that
// Mosquitto's ACL must give a user block, besides those the PKI issued before the broker
// started. The embedded broker needs no list: it reads roles from the identities themselves.
func WithIdentities(identities ...string) Option {
	return func(o *options) { o.identities = append(o.identities, identities...) }
}

// WithCRL makes the broker refuse the certificates a PEM CRL (PKI.CRL) revokes: Mosquitto
// gets it as its crlfile, the embedded broker as Config.Revoked.
func WithCRL(crlPEM []byte) Option {
	return func(o *options) { o.crl = crlPEM }
}

// WithOnPublish observes every publish the embedded broker accepts (broker.Config.OnPublish),
// e.g. for privacy canaries. Mosquitto cannot offer it: StartMosquitto fails the test if it
// is given.
func WithOnPublish(fn func(clientID, topic string, payload []byte, retained bool)) Option {
	return func(o *options) { o.onPublish = fn }
}

// WithClock sets the embedded broker's clock for certificate validity (broker.Config.Now).
// Mosquitto uses the system clock: StartMosquitto fails the test if it is given.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// ForEachBroker runs fn as a subtest against a fresh embedded broker, then against a fresh
// Mosquitto, both from pki and opts. Issue the non-device certificates fn needs before calling
// it (see PKI.ClientCertValidity).
func ForEachBroker(t *testing.T, pki *PKI, fn func(t *testing.T, b Broker), opts ...Option) {
	t.Helper()
	t.Run("embedded", func(t *testing.T) {
		fn(t, StartEmbedded(t, pki, opts...))
	})
	t.Run("mosquitto", func(t *testing.T) {
		fn(t, StartMosquitto(t, pki, opts...))
	})
}

// revokedSet parses a PEM CRL signed by pki's CA into a lookup function.
func revokedSet(t testing.TB, pki *PKI, crlPEM []byte) func(*big.Int) bool {
	t.Helper()
	blk, _ := pem.Decode(crlPEM)
	if blk == nil || blk.Type != "X509 CRL" {
		t.Fatalf("mqtttest: WithCRL: no X509 CRL PEM block")
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatalf("mqtttest: WithCRL: %v", err)
	}
	if err := crl.CheckSignatureFrom(pki.CA.Cert); err != nil {
		t.Fatalf("mqtttest: WithCRL: not signed by the test CA: %v", err)
	}
	serials := make(map[string]bool, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		serials[e.SerialNumber.String()] = true
	}
	return func(s *big.Int) bool { return serials[s.String()] }
}

// newLogger returns a debug-level logger writing to a buffer that t shows if it fails.
func newLogger(t testing.TB, name string) *slog.Logger {
	buf := new(logtest.Buffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s broker log:\n%s", name, buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mustf fails t with a package-prefixed message when err is not nil.
func mustf(t testing.TB, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("mqtttest: %s: %v", fmt.Sprintf(format, args...), err)
	}
}
