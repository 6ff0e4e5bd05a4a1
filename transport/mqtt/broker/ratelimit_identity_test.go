package broker_test

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// The publish bucket belongs to the identity, not the client id: every identity but a
// device's may vary the "~suffix" of its client id, so whoever holds a stolen camera's
// bootstrap certificate (or a viewer relay's) would otherwise get a full bucket per client id,
// up to MaxSessionsPerIdentity of them at once, and a new one after every flood cut. Here four
// client ids of one bootstrap identity, with the broker's clock standing still, deliver one
// burst to the signers' CSR topic, not four.
func TestAnIdentityGetsOneBucketWhateverItsClientIDs(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	clk := newFakeClock()
	var logs logtest.Buffer
	b := startLimited(t, pki, clk, &logs)
	csrs := subscriber(t, b, pki, pki.ClientCert(t, certs.RoleSigner, "s1"), "boot/+/up/csr")
	boot := pki.ClientCert(t, certs.RoleBootstrap, "cam-a")
	identity := boot.Leaf.Subject.CommonName
	const topic = "boot/cam-a/up/csr"
	limit := broker.DefaultDevicePublishLimit

	const sessions = 4
	var last paho.Client
	for i := range sessions {
		c := mqtttest.Connect(t, mqtttest.ClientOptions(urlBroker(b.URL()), pki.ClientTLS(t, boot), fmt.Sprintf("%s~s%d", identity, i)).SetCleanSession(true))
		burst(t, c, topic, "flood", limit.Burst)
		barrier(t, c, topic)
		last = c
	}
	// One second later the identity has earned Rate tokens: the control goes through and
	// everything before it has been decided.
	clk.Advance(time.Second)
	publish(t, last, topic, "control")
	csrs.awaitControl(t, "control")
	if got := csrs.count("flood"); got > limit.Burst {
		t.Fatalf("one bootstrap identity delivered %d messages at once through %d client ids; its limit is a burst of %d (PublishesDropped %d)",
			got, sessions, limit.Burst, b.PublishesDropped())
	}
}

// PublishFloodCut cuts a client still over its limit, not one that overran its burst twice
// with a spell within its rate between: a viewer relay that overran its burst once, then
// carried 150 messages a second (three quarters of its 200/s) for 35 s, and then set up 27
// sessions at once (fewer than the 30 the default burst is sized for) stays connected.
func TestARelayWithinItsRateBetweenTwoOverrunsIsNotCut(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	clk := newFakeClock()
	var logs logtest.Buffer
	b := startLimited(t, pki, clk, &logs)
	url := urlBroker(b.URL())
	devIn := newTally()
	dev := connect(t, url, pki, pki.ClientCert(t, certs.RoleDevice, "cam-b"), nil)
	mqtttest.Wait(t, dev.Subscribe("dev/cam-b/down/#", 1, devIn.Handle), "subscribe")

	cert := pki.ClientCert(t, certs.RoleViewer, "relay")
	lost := make(chan struct{})
	relay := mqtttest.Connect(t, mqtttest.ClientOptions(url, pki.ClientTLS(t, cert), cert.Leaf.Subject.CommonName).SetCleanSession(true).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) }))
	const topic = "dev/cam-b/down/signal"
	limit := broker.DefaultViewerPublishLimit

	// t=0: a moment over the burst (one message dropped).
	burst(t, relay, topic, "setup", limit.Burst+1)
	barrier(t, relay, topic)
	// 35 s at 150 messages a second (and a barrier), under the 200/s rate throughout.
	const steady, seconds = 150, 35
	for s := 1; s <= seconds; s++ {
		clk.Advance(time.Second)
		tryBurst(t, relay, topic, "steady", steady, true, lost)
		if b.FloodCuts() != 0 {
			t.Fatalf("cut at %d s while publishing %d a second, under its rate of %g", s, steady+1, limit.Rate)
		}
	}
	// 27 sessions (an offer, 64 candidates, a bye each) at once: under the burst.
	tryBurst(t, relay, topic, "sessions", 27*66, true, lost)
	if n := b.FloodCuts(); n != 0 {
		t.Fatalf("a relay that stayed under its rate for %d s and then set up 27 sessions at once was cut as a flooder (FloodCuts %d, PublishesDropped %d)",
			seconds, n, b.PublishesDropped())
	}
	select {
	case <-lost:
		t.Fatal("the relay was disconnected")
	default:
	}
}
