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

// A device answers every command and offer it is sent: each one delivered (not retained)
// credits its bucket, so an operator pinging a camera back to back, three bursts' worth with
// the broker's clock standing still, gets every reply. Retained messages earn nothing: a
// device subscribing again and again to have the retained desired state sent again gains no
// message to flood with.
func TestADeviceAnsweringWhatItIsSentIsNeverLimited(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	clk := newFakeClock()
	var logs logtest.Buffer
	b := startLimited(t, pki, clk, &logs)
	url := urlBroker(b.URL())
	limit := broker.DefaultDevicePublishLimit
	replies := subscriber(t, b, pki, pki.ClientCert(t, certs.RoleOperator, "watch"), "dev/cam-a/up/reply")
	op := mqtttest.Connect(t, mqtttest.ClientOptions(url, pki.ClientTLS(t, pki.ClientCert(t, certs.RoleOperator, "admin")), "operator:admin~ping").SetCleanSession(true))

	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	var dev paho.Client
	answered := make(chan struct{}, 1)
	dev = mqtttest.Connect(t, mqtttest.ClientOptions(url, pki.ClientTLS(t, cam), "cam-a").SetCleanSession(true))
	mqtttest.Wait(t, dev.Subscribe("dev/cam-a/down/cmd", 1, func(_ paho.Client, m paho.Message) {
		// Answered from paho's handler, as the agent's reply would be: at QoS 0, in order.
		dev.Publish("dev/cam-a/up/reply", 0, false, "reply")
		answered <- struct{}{}
	}), "subscribe")
	n := 3 * limit.Burst
	for i := range n {
		mqtttest.Wait(t, op.Publish("dev/cam-a/down/cmd", 1, false, "ping"), "command")
		select {
		case <-answered:
		case <-time.After(mqtttest.ClientTimeout):
			t.Fatalf("command %d was not delivered", i)
		}
	}
	publish(t, dev, "dev/cam-a/up/reply", "control 1")
	replies.awaitControl(t, "control 1")
	if got := replies.count("reply"); got != n {
		t.Fatalf("%d of %d replies to back-to-back commands delivered (PublishesDropped %d)", got, n, b.PublishesDropped())
	}

	// Retained: the operator keeps a desired state retained. The device empties its bucket,
	// has the retained message sent again three bursts' worth of times, and floods again:
	// with the clock standing still, nothing of the second flood gets through.
	mqtttest.Wait(t, op.Publish("dev/cam-a/down/desired", 1, true, "desired"), "retained")
	clk.Advance(time.Hour) // a full bucket to start from
	flood := subscriber(t, b, pki, pki.ClientCert(t, certs.RoleOperator, "watch2"), "dev/cam-a/up/telemetry")
	burst(t, dev, "dev/cam-a/up/telemetry", "flood", 2*limit.Burst)
	barrier(t, dev, "dev/cam-a/up/telemetry")
	got := make(chan struct{}, 16)
	for range n {
		mqtttest.Wait(t, dev.Unsubscribe("dev/cam-a/down/desired"), "unsubscribe")
		mqtttest.Wait(t, dev.Subscribe("dev/cam-a/down/desired", 0, func(paho.Client, paho.Message) { got <- struct{}{} }), "subscribe")
		select {
		case <-got:
		case <-time.After(mqtttest.ClientTimeout):
			t.Fatal("the retained desired state was not sent again")
		}
	}
	burst(t, dev, "dev/cam-a/up/telemetry", "flood again", 2*limit.Burst)
	barrier(t, dev, "dev/cam-a/up/telemetry")
	clk.Advance(time.Second)
	publish(t, dev, "dev/cam-a/up/telemetry", "control 2")
	flood.awaitControl(t, "control 2")
	if got := flood.count("flood"); got != limit.Burst {
		t.Fatalf("%d of the first flood delivered, want the burst of %d", got, limit.Burst)
	}
	if got := flood.count("flood again"); got != 0 {
		t.Fatalf("a device that had a retained message sent again %d times then delivered %d messages of a flood with no token earned", n, got)
	}
}
