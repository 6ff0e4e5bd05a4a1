package broker_test

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// fakeClock is the broker's Config.Now in these tests: it stands still unless a test moves it,
// so what a token bucket lets through does not depend on how fast this machine runs the test.
// It starts at the real time, where the test certificates are valid.
type fakeClock struct {
	base time.Time
	off  atomic.Int64
}

func newFakeClock() *fakeClock { return &fakeClock{base: time.Now()} }

func (c *fakeClock) Now() time.Time          { return c.base.Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// startLimited starts a broker on clk with the default limits, logging to logs.
func startLimited(t *testing.T, pki *mqtttest.PKI, clk *fakeClock, logs *logtest.Buffer) *broker.Broker {
	t.Helper()
	return startConfigured(t, broker.Config{
		Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), DataDir: t.TempDir(), Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
}

// tally counts the messages a subscriber gets by payload, and hands on those whose payload
// starts with "control", which tests publish behind what they count.
type tally struct {
	mu      sync.Mutex
	n       map[string]int
	control chan string
}

func newTally() *tally { return &tally{n: map[string]int{}, control: make(chan string, 16)} }

func (ta *tally) Handle(_ paho.Client, m paho.Message) {
	p := string(m.Payload())
	if strings.HasPrefix(p, "control") {
		ta.control <- p
		return
	}
	ta.mu.Lock()
	ta.n[p]++
	ta.mu.Unlock()
}

func (ta *tally) count(payload string) int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.n[payload]
}

// awaitControl waits for the control message want; everything published before it on the
// same connection has been counted then.
func (ta *tally) awaitControl(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-ta.control:
		if got != want {
			t.Fatalf("control %q arrived, want %q", got, want)
		}
	case <-time.After(mqtttest.ClientTimeout):
		t.Fatalf("control %q never arrived", want)
	}
}

// subscriber connects cert with a clean session subscribed to filter, counting into a new tally.
func subscriber(t *testing.T, b *broker.Broker, pki *mqtttest.PKI, cert *tls.Certificate, filter string) *tally {
	t.Helper()
	ta := newTally()
	c := mqtttest.Connect(t, mqtttest.ClientOptions(urlBroker(b.URL()), pki.ClientTLS(t, cert), cert.Leaf.Subject.CommonName+"~sub").
		SetCleanSession(true).SetDefaultPublishHandler(ta.Handle))
	tok := c.Subscribe(filter, 1, ta.Handle)
	mqtttest.Wait(t, tok, "subscribe "+filter)
	return ta
}

// burst publishes n messages with payload at QoS 0 as fast as paho writes them, and waits
// until all are on the wire (not until the broker has read them: see barrier).
func burst(t *testing.T, c paho.Client, topic, payload string, n int) {
	t.Helper()
	toks := make([]paho.Token, n)
	for i := range n {
		toks[i] = c.Publish(topic, 0, false, payload)
	}
	for _, tok := range toks {
		mqtttest.Wait(t, tok, "publish "+topic)
	}
}

// barrier publishes "barrier" on topic at QoS 1 and waits for its PUBACK, which the broker
// sends once it has decided it, and so every message before it on the connection: only then
// may a test move the broker's clock (a bucket still full when the clock moves gains nothing).
// It takes a token if there is one.
func barrier(t *testing.T, c paho.Client, topic string) {
	t.Helper()
	mqtttest.Wait(t, c.Publish(topic, 1, false, "barrier"), "barrier on "+topic)
}

// tryBurst is burst, and barrier if sync, for a client the broker may cut meanwhile (cut
// closes then): it returns early once cut is closed.
func tryBurst(t *testing.T, c paho.Client, topic, payload string, n int, sync bool, cut <-chan struct{}) {
	t.Helper()
	toks := make([]paho.Token, 0, n+1)
	for range n {
		toks = append(toks, c.Publish(topic, 0, false, payload))
	}
	if sync {
		toks = append(toks, c.Publish(topic, 1, false, "barrier"))
	}
	for _, tok := range toks {
		select {
		case <-tok.Done():
		case <-cut:
			return
		case <-time.After(mqtttest.ClientTimeout):
			t.Errorf("publish %s: no answer in %v", topic, mqtttest.ClientTimeout)
			return
		}
	}
}

func countLines(logs *logtest.Buffer, msg string) int { return strings.Count(logs.String(), msg) }

const overLimit = "over its publish limit; dropping"

// A device flooding its up topic has only its bucket's worth delivered: with the broker's clock
// standing still, exactly the burst; the rest is acknowledged, dropped and counted, logged
// once. Meanwhile the broker serves other clients, and once time passes the device's messages
// go through again. Without the limit every message reached every reader of the fleet's up
// topics, as fast as the network took them.
func TestADeviceFloodingItsUpTopicGetsOnlyItsRateDelivered(t *testing.T) {
	const flood = 3000
	pki := mqtttest.NewPKI(t)
	clk := newFakeClock()
	var logs logtest.Buffer
	b := startLimited(t, pki, clk, &logs)
	url := urlBroker(b.URL())
	up := subscriber(t, b, pki, pki.ClientCert(t, certs.RoleOperator, "alice"), "dev/+/up/#")
	camA := connect(t, url, pki, pki.ClientCert(t, certs.RoleDevice, "cam-a"), nil)
	camBIn := mqtttest.NewInbox()
	camB := connect(t, url, pki, pki.ClientCert(t, certs.RoleDevice, "cam-b"), camBIn)
	subscribe(t, camB, "dev/cam-b/down/cmd", camBIn)
	op := connect(t, url, pki, pki.ClientCert(t, certs.RoleOperator, "bob"), nil)

	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		for i := 0; i < flood; i += 100 {
			tryBurst(t, camA, "dev/cam-a/up/telemetry", "flood", 100, false, nil) // Errorf only: another goroutine
		}
	}()
	// The broker stays responsive while the flood lasts: another device publishes, an
	// operator commands it.
	for i := range 5 {
		publish(t, camB, "dev/cam-b/up/state", "cam-b alive")
		publish(t, op, "dev/cam-b/down/cmd", "cmd")
		if m := camBIn.Next(t); string(m.Payload) != "cmd" {
			t.Fatalf("round %d: cam-b got %q", i, m.Payload)
		}
	}
	<-flooded
	barrier(t, camA, "dev/cam-a/up/telemetry")

	// One second later the bucket holds Rate tokens: the control, published behind the flood
	// on the same connection, goes through, so everything before it has been decided.
	clk.Advance(time.Second)
	publish(t, camA, "dev/cam-a/up/telemetry", "control 1")
	up.awaitControl(t, "control 1")
	if got, want := up.count("flood"), broker.DefaultDevicePublishLimit.Burst; got != want {
		t.Fatalf("%d of %d flood messages delivered, want the burst, %d", got, flood, want)
	}
	if got := up.count("cam-b alive"); got != 5 {
		t.Errorf("cam-b's state delivered %d times of 5", got)
	}
	if got, want := b.PublishesDropped(), uint64(flood-broker.DefaultDevicePublishLimit.Burst+1); got != want { // the barrier too
		t.Errorf("PublishesDropped = %d, want %d", got, want)
	}
	if n := countLines(&logs, overLimit); n != 1 {
		t.Errorf("the episode was logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "identity=cam-a") {
		t.Errorf("the log does not name cam-a:\n%s", logs.String())
	}
	if !camA.IsConnectionOpen() {
		t.Fatal("cam-a was disconnected for a flood of a few seconds")
	}

	// Quiet for as long as the bucket takes to refill: the episode ends, logged once, and a
	// whole burst goes through again.
	clk.Advance(time.Duration(float64(broker.DefaultDevicePublishLimit.Burst)/broker.DefaultDevicePublishLimit.Rate*float64(time.Second)) + time.Second)
	burst(t, camA, "dev/cam-a/up/telemetry", "again", broker.DefaultDevicePublishLimit.Burst)
	publish(t, camA, "dev/cam-a/up/telemetry", "control 2") // dropped: no token left
	clk.Advance(time.Second)
	publish(t, camA, "dev/cam-a/up/telemetry", "control 3")
	up.awaitControl(t, "control 3")
	if got := up.count("again"); got != broker.DefaultDevicePublishLimit.Burst {
		t.Errorf("after a quiet spell %d of a burst of %d delivered", got, broker.DefaultDevicePublishLimit.Burst)
	}
	if n := countLines(&logs, "back within its publish limit"); n != 1 {
		t.Errorf("the end of the episode was logged %d times, want once:\n%s", n, logs.String())
	}
}

// A client that goes on publishing over its limit is cut after Config.PublishFloodCut, logged
// once; its bucket outlives the connection, so coming back, with a clean session or not, gains
// it nothing: it is cut again at its first message over the limit until it has been quiet for
// long enough to refill.
func TestAClientFloodingForTooLongIsCutAndGainsNothingByReconnecting(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	clk := newFakeClock()
	var logs logtest.Buffer
	b := startLimited(t, pki, clk, &logs)
	up := subscriber(t, b, pki, pki.ClientCert(t, certs.RoleOperator, "alice"), "dev/+/up/#")
	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	dial := func(clean bool) (paho.Client, chan struct{}) {
		t.Helper()
		lost := make(chan struct{})
		opts := mqtttest.ClientOptions(urlBroker(b.URL()), pki.ClientTLS(t, cam), "cam-a").SetCleanSession(clean).
			SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
		return mqtttest.Connect(t, opts), lost
	}
	isCut := func(lost chan struct{}, what string) {
		t.Helper()
		select {
		case <-lost:
		case <-time.After(mqtttest.ClientTimeout):
			t.Fatalf("%s: the broker kept the client", what)
		}
	}

	c, lost := dial(false)
	limit := broker.DefaultDevicePublishLimit
	burst(t, c, "dev/cam-a/up/telemetry", "flood", limit.Burst+1) // the episode starts
	barrier(t, c, "dev/cam-a/up/telemetry")
	// Twice the rate every second for the cut's length: still over it throughout.
	step := time.Second
	for elapsed := time.Duration(0); elapsed < broker.DefaultPublishFloodCut; elapsed += step {
		clk.Advance(step)
		select {
		case <-lost:
			t.Fatalf("cut %v into the episode, before %v", elapsed, broker.DefaultPublishFloodCut)
		default:
		}
		tryBurst(t, c, "dev/cam-a/up/telemetry", "flood", 2*int(limit.Rate), true, lost)
	}
	isCut(lost, "over its limit for the whole cut")
	if b.FloodCuts() != 1 {
		t.Errorf("FloodCuts = %d, want 1", b.FloodCuts())
	}

	for _, clean := range []bool{false, true} {
		c, lost = dial(clean)
		tryBurst(t, c, "dev/cam-a/up/telemetry", "after reconnecting", 1, false, lost)
		isCut(lost, "reconnected and publishing at once")
	}
	if n := countLines(&logs, "over its publish limit for too long"); n != 3 {
		t.Errorf("%d cuts logged, want 3 (one warning, two at debug)", n)
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"broker: client disconnected: over its publish limit"); n != 1 {
		t.Errorf("the cut was warned about %d times, want once per episode:\n%s", n, logs.String())
	}
	if got := up.count("after reconnecting"); got != 0 {
		t.Errorf("%d messages published right after reconnecting were delivered, want none", got)
	}

	// Quiet long enough to refill, the device is welcome again.
	clk.Advance(time.Minute)
	c, lost = dial(false)
	publish(t, c, "dev/cam-a/up/telemetry", "control back")
	up.awaitControl(t, "control back")
	select {
	case <-lost:
		t.Fatal("cut after a quiet minute")
	default:
	}
}

// The defaults let legitimate bursts through whole, with room to spare: a device answering a
// trickle-ICE-like burst of 60 messages within a second, a viewer relay setting up 16 sessions
// at once with the most candidates a device takes, state and replies, and they stop a flood
// right above that. Operators and signers, who publish one message per device of a fleet
// within seconds, have no limit at all (those two subtests are controls: they pass without
// the limits too).
func TestLegitimateBurstsAreNeverLimited(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	clk := newFakeClock() // standing still: a burst is as fast as it can be
	var logs logtest.Buffer
	b := startLimited(t, pki, clk, &logs)
	url := urlBroker(b.URL())

	t.Run("a device's burst of 60 goes through, and a flood behind it stops at the burst", func(t *testing.T) {
		up := subscriber(t, b, pki, pki.ClientCert(t, certs.RoleViewer, "relay"), "dev/+/up/signal")
		dev := connect(t, url, pki, pki.ClientCert(t, certs.RoleDevice, "cam-a"), nil)
		burst(t, dev, "dev/cam-a/up/signal", "trickle", 60)
		barrier(t, dev, "dev/cam-a/up/telemetry")
		clk.Advance(time.Second)
		publish(t, dev, "dev/cam-a/up/state", "state") // a state and a reply in the same second
		publish(t, dev, "dev/cam-a/up/reply", "reply")
		burst(t, dev, "dev/cam-a/up/signal", "control 1", 1)
		up.awaitControl(t, "control 1")
		if got := up.count("trickle"); got != 60 {
			t.Fatalf("%d of a burst of 60 delivered", got)
		}
		// What is left of the bucket, and not one message more.
		burst(t, dev, "dev/cam-a/up/signal", "flood", 1000)
		barrier(t, dev, "dev/cam-a/up/telemetry")
		clk.Advance(time.Second)
		burst(t, dev, "dev/cam-a/up/signal", "control 2", 1)
		up.awaitControl(t, "control 2")
		left := broker.DefaultDevicePublishLimit.Burst - 60 - 1 - 3 + int(broker.DefaultDevicePublishLimit.Rate) // a barrier, state, reply, control
		if got := up.count("flood"); got != left {
			t.Fatalf("%d of a flood of 1000 delivered, want what was left of the bucket, %d", got, left)
		}
	})

	t.Run("a viewer relay's 16 sessions at once go through, and a flood behind them stops at the burst", func(t *testing.T) {
		const sessions, perSession = 16, 1 + 64 + 1 // an offer, the most candidates, a bye
		devIn := newTally()
		dev := connect(t, url, pki, pki.ClientCert(t, certs.RoleDevice, "cam-b"), nil)
		mqtttest.Wait(t, dev.Subscribe("dev/cam-b/down/#", 1, devIn.Handle), "subscribe")
		relay := connect(t, url, pki, pki.ClientCert(t, certs.RoleViewer, "relay2"), nil)
		burst(t, relay, "dev/cam-b/down/signal", "session", sessions*perSession)
		barrier(t, relay, "dev/cam-b/down/signal")
		clk.Advance(time.Second)
		burst(t, relay, "dev/cam-b/down/signal", "control 1", 1)
		devIn.awaitControl(t, "control 1")
		if got := devIn.count("session"); got != sessions*perSession {
			t.Fatalf("%d of %d signaling messages delivered", got, sessions*perSession)
		}
		burst(t, relay, "dev/cam-b/down/signal", "flood", 3000)
		barrier(t, relay, "dev/cam-b/down/signal") // it is refused anyway, at QoS 1
		clk.Advance(time.Second)
		burst(t, relay, "dev/cam-b/down/signal", "control 2", 1)
		devIn.awaitControl(t, "control 2")
		l := broker.DefaultViewerPublishLimit
		left := l.Burst - sessions*perSession - 2 + int(l.Rate) // a barrier, a control
		if got := devIn.count("flood"); got != left {
			t.Fatalf("%d of a flood of 3000 delivered, want what was left of the bucket, %d", got, left)
		}
	})

	for _, who := range []struct {
		role       certs.Role
		device, to string
	}{
		{certs.RoleOperator, "cam-c", "cmd"},
		{certs.RoleSigner, "cam-d", "cert"},
	} {
		t.Run("a "+string(who.role)+" publishing thousands at once is not limited", func(t *testing.T) {
			const n = 5000
			devIn := newTally()
			dev := connect(t, url, pki, pki.ClientCert(t, certs.RoleDevice, who.device), nil)
			mqtttest.Wait(t, dev.Subscribe("dev/"+who.device+"/down/#", 1, devIn.Handle), "subscribe")
			pub := connect(t, url, pki, pki.ClientCert(t, who.role, "s1"), nil)
			dropped := b.PublishesDropped()
			topic := "dev/" + who.device + "/down/" + who.to
			burst(t, pub, topic, "many", n)
			burst(t, pub, topic, "control", 1)
			devIn.awaitControl(t, "control")
			if got := devIn.count("many"); got != n {
				t.Fatalf("%d of %d delivered", got, n)
			}
			if b.PublishesDropped() != dropped {
				t.Fatalf("PublishesDropped went from %d to %d", dropped, b.PublishesDropped())
			}
		})
	}
}
