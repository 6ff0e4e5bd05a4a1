package broker_test

import (
	"strings"
	"testing"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// The caps are the readers' own: what the fleet tools and the viewer relays take.
func TestTheUpTopicCapsAreTheReaders(t *testing.T) {
	if broker.MaxDeviceMessage != wire.MaxMessageSize || broker.MaxSignalingMessage != signal.MaxMessageSize {
		t.Fatalf("broker caps %d/%d, readers' %d/%d", broker.MaxDeviceMessage, broker.MaxSignalingMessage, wire.MaxMessageSize, signal.MaxMessageSize)
	}
}

// A device (or a bootstrap identity) may publish nothing larger than its topic's reader takes:
// a stolen camera certificate must not fill a signer's queue, while the signer is away, with
// messages of the broker's packet size (256 KiB). A message at the cap goes through; one byte
// more is acknowledged and dropped, and the client stays connected.
func TestAnUpMessageOverItsTopicsCapIsDropped(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	inbox := mqtttest.NewInbox()
	op := connect(t, b, pki, pki.ClientCert(t, certs.RoleOperator, "alice"), inbox)
	subscribe(t, op, "dev/+/up/#", inbox)
	signer := connect(t, b, pki, pki.ClientCert(t, certs.RoleSigner, "s1"), inbox)
	subscribe(t, signer, "boot/+/up/csr", inbox)
	dev := connect(t, b, pki, pki.ClientCert(t, certs.RoleDevice, "cam-a"), nil)
	boot := connect(t, b, pki, pki.ClientCert(t, certs.RoleBootstrap, "cam-a"), nil)

	for _, tc := range []struct {
		who   string
		topic string
		limit int
	}{
		{"device", "dev/cam-a/up/csr", broker.MaxDeviceMessage},
		{"device", "dev/cam-a/up/state", broker.MaxDeviceMessage},
		{"device", "dev/cam-a/up/signal", broker.MaxSignalingMessage},
		{"bootstrap", "boot/cam-a/up/csr", broker.MaxDeviceMessage},
	} {
		c := dev
		if tc.who == "bootstrap" {
			c = boot
		}
		var qos byte = 1
		if strings.HasSuffix(tc.topic, "/signal") {
			qos = 0 // signaling the broker would keep is refused
		}
		for _, p := range []string{strings.Repeat("x", tc.limit+1), strings.Repeat("y", tc.limit)} {
			mqtttest.Wait(t, c.Publish(tc.topic, qos, false, p), "publish "+tc.topic)
		}
		if m := inbox.Next(t); m.Topic != tc.topic || len(m.Payload) != tc.limit || m.Payload[0] != 'y' {
			t.Fatalf("%s on %s: got %d bytes of %q first, want the %d-byte message at the cap (the larger one dropped)", tc.who, tc.topic, len(m.Payload), m.Payload[:1], tc.limit)
		}
	}
	if !dev.IsConnectionOpen() || !boot.IsConnectionOpen() {
		t.Fatal("a client was disconnected for an oversized message")
	}
}
