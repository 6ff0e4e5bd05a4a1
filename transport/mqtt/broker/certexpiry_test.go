package broker_test

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// expiryMargin is how late after its certificate's NotAfter the test accepts a connection's
// end: the broker cuts it at NotAfter; the rest is the client noticing on a busy machine.
const expiryMargin = 2 * time.Second

// A connection ends when its client certificate expires, not at the client's next CONNECT:
// otherwise a certificate's lifetime, the fleet's bound on a missed revocation, would not bound
// a connection made just before it ran out. The broker logs the cut with the identity and the
// serial, and the certificate cannot connect again. A connection with a long-lived certificate
// made at the same time stays up.
func TestAConnectionEndsWhenItsCertificateExpires(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBroker(t, pki, t.TempDir(), 0, &logs)
	url := urlBroker(b.URL())

	// NotAfter is whole seconds, so this certificate expires 4 to 5 s from now: room for the
	// set-up below on a loaded machine.
	short := pki.ClientCertValidity(t, certs.RoleDevice, "cam-a", time.Now(), 5*time.Second)
	notAfter := short.Leaf.NotAfter
	lost := make(chan time.Time, 1)
	opts := mqtttest.ClientOptions(url, pki.ClientTLS(t, short), "cam-a").
		SetConnectionLostHandler(func(paho.Client, error) { lost <- time.Now() })
	dev := mqtttest.Connect(t, opts)
	stays := connect(t, url, pki, pki.ClientCert(t, certs.RoleDevice, "cam-b"), nil)
	inbox := mqtttest.NewInbox()
	op := operator(t, b, pki)
	subscribe(t, op, "dev/+/up/state", inbox)

	// The test is about an instant: it waits until just before it, then checks the connection
	// is still up.
	time.Sleep(time.Until(notAfter.Add(-time.Second)))
	select {
	case at := <-lost:
		t.Fatalf("cam-a was disconnected at %v, %v before its certificate expired", at, notAfter.Sub(at))
	default:
	}
	publish(t, dev, "dev/cam-a/up/state", "cam-a before expiry")
	if m := inbox.Next(t); string(m.Payload) != "cam-a before expiry" {
		t.Fatalf("operator got %q", m.Payload)
	}

	select {
	case at := <-lost:
		if at.Before(notAfter) || at.After(notAfter.Add(expiryMargin)) {
			t.Fatalf("cam-a was disconnected at %v, want within %v after NotAfter %v", at, expiryMargin, notAfter)
		}
	case <-time.After(time.Until(notAfter.Add(expiryMargin))):
		t.Fatalf("cam-a is still connected %v after its certificate expired", expiryMargin)
	}
	want := "msg=\"broker: certificate expired; connection cut\" identity=cam-a serial=" + mqtttest.Serial(short).Text(16) + "\n"
	if !strings.Contains(logs.String(), want) {
		t.Errorf("the broker did not log the cut as %q:\n%s", want, logs.String())
	}

	if _, err := mqtttest.TryConnect(t, mqtttest.ClientOptions(url, pki.ClientTLS(t, short), "cam-a")); err == nil {
		t.Fatal("cam-a connected again with its expired certificate")
	}
	if !stays.IsConnectionOpen() {
		t.Fatal("cam-b, whose certificate is valid for 30 days, was disconnected")
	}
	publish(t, stays, "dev/cam-b/up/state", "cam-b still here")
	if m := inbox.Next(t); string(m.Payload) != "cam-b still here" {
		t.Fatalf("operator got %q", m.Payload)
	}
}

// A connection that ends before its certificate expires takes its expiry timer with it:
// a broker serving thousands of cameras that come and go must not keep one per connection it
// ever had until each certificate's NotAfter, weeks away.
func TestAConnectionThatEndsEarlierLeavesNoExpiryTimer(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dev := connect(t, b, pki, pki.ClientCertValidity(t, certs.RoleDevice, "cam-a", time.Now(), time.Hour), nil)
	if n := b.Broker().ExpiryTimers(); n != 1 {
		t.Fatalf("%d expiry timers pending with one connection, want 1", n)
	}
	dev.Disconnect(250)
	deadline := time.Now().Add(mqtttest.ClientTimeout)
	for b.Broker().ExpiryTimers() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d expiry timers pending %v after the only connection ended", b.Broker().ExpiryTimers(), mqtttest.ClientTimeout)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// A connection lives until the first certificate of its chain expires, the CA's included; with
// several verified chains (a cross-signed CA), until the last chain does.
func TestAChainExpiresWithItsFirstCertificate(t *testing.T) {
	at := func(h int) *x509.Certificate {
		return &x509.Certificate{NotAfter: time.Date(2030, 1, 1, h, 0, 0, 0, time.UTC)}
	}
	tests := []struct {
		name   string
		chains [][]*x509.Certificate
		want   *x509.Certificate
	}{
		{"a leaf expiring before its CA ends the connection at its own expiry", [][]*x509.Certificate{{at(3), at(9)}}, at(3)},
		{"a CA expiring before the leaf ends the connection at the CA's expiry", [][]*x509.Certificate{{at(9), at(5), at(12)}}, at(5)},
		{"of two chains, the one that lasts longer decides", [][]*x509.Certificate{{at(9), at(2)}, {at(9), at(7)}}, at(7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := broker.ChainExpiry(tls.ConnectionState{VerifiedChains: tt.chains}); !got.Equal(tt.want.NotAfter) {
				t.Fatalf("got %v, want %v", got, tt.want.NotAfter)
			}
		})
	}
}
