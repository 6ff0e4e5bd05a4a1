package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/camagent/camagent/certs"
)

// waitTimeout bounds every wait in these tests; nothing waits on a timer to synchronise.
const waitTimeout = 15 * time.Second

// brokerConn is one connection the test broker accepted.
type brokerConn struct {
	clientID string
	cn       string
	serial   *big.Int
	remote   netip.AddrPort // the client's address, as the broker's socket sees it
}

// broker is an in-test MQTT broker (mochi) behind a TLS listener that requires a client
// certificate from the test fleet CA and, like the embedded broker, refuses a client id that
// differs from the certificate's identity.
type broker struct {
	t    *testing.T
	ca   *certs.CA
	pool *x509.CertPool
	srv  *mochi.Server
	addr string

	conns       chan brokerConn     // every accepted CONNECT
	pings       chan struct{}       // every PINGREQ read
	acked       chan string         // topic of every QoS 1 message a client acknowledged
	fromDevices chan packets.Packet // every message published under dev/+/up/#
	subscribes  atomic.Int32        // SUBSCRIBE packets read

	mu       sync.Mutex
	inflight map[uint16]string // packet id → topic of QoS 1 messages sent to clients
}

func newBroker(t *testing.T) *broker {
	t.Helper()
	now := time.Now()
	ca, err := certs.NewCA("camagent test fleet", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.IssueRequest{
		Role: certs.RoleServer, Name: "localhost", PublicKey: key.Public(),
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := certs.TLSCertificate(leaf, key)
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{
		t: t, ca: ca, pool: pool,
		conns:       make(chan brokerConn, 64),
		pings:       make(chan struct{}, 1024),
		acked:       make(chan string, 1024),
		inflight:    make(map[uint16]string),
		fromDevices: make(chan packets.Packet, 1024),
	}
	b.srv = mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := b.srv.AddHook(&brokerHook{b: b}, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "mtls", Address: "127.0.0.1:0", TLSConfig: certs.ServerTLSConfig(pool, serverCert)})
	if err := b.srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b.addr = l.Address()
	err = b.srv.Subscribe("dev/+/up/#", 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		b.fromDevices <- pk
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// url is the broker's mqtts:// URL.
func (b *broker) url() string { return "mqtts://" + b.addr }

// issue makes a device certificate for id.
func (b *broker) issue(id string) *tls.Certificate {
	b.t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		b.t.Fatal(err)
	}
	leaf, err := b.ca.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, PublicKey: key.Public(), Now: time.Now()})
	if err != nil {
		b.t.Fatal(err)
	}
	c, err := certs.TLSCertificate(leaf, key)
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}

// deviceConfig is a device's Config: persistent session, its own down topics at QoS 1.
func (b *broker) deviceConfig(id string, h *certs.Holder) Config {
	return Config{
		BrokerURL:     b.url(),
		ClientID:      id,
		TLS:           certs.ClientTLSConfig(b.pool, "localhost", h),
		Subscriptions: []Subscription{{Filter: "dev/" + id + "/down/#", QoS: 1}},
		Handler:       func(context.Context, Message) {},
	}
}

// clockedDevice makes a device client of b on a fake clock, with backoff jitter fixed at half
// (the first retry after a loss waits MinBackoff/2); got receives every payload it handles.
func (b *broker) clockedDevice() (*Client, *fakeClock, chan string) {
	b.t.Helper()
	clock := newFakeClock()
	got := make(chan string, 64)
	cfg := b.deviceConfig(device, certs.NewHolder(b.issue(device)))
	cfg.Clock = clock
	cfg.Rand = func() float64 { return 0.5 }
	cfg.Handler = func(_ context.Context, m Message) { got <- string(m.Payload) }
	c, err := New(cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	return c, clock, got
}

// publish sends a QoS 1 message from the broker's inline client, as an operator would.
func (b *broker) publish(topic string, payload []byte) {
	b.t.Helper()
	if err := b.srv.Publish(topic, payload, false, 1); err != nil {
		b.t.Fatal(err)
	}
}

// cut closes a client's network connection from the broker side, as a network failure would.
func (b *broker) cut(id string) {
	b.t.Helper()
	cl, ok := b.srv.Clients.Get(id)
	if !ok {
		b.t.Fatalf("broker has no client %q", id)
	}
	cl.Net.Conn.Close()
}

// nextConn waits for the broker to accept a connection.
func (b *broker) nextConn() brokerConn {
	b.t.Helper()
	select {
	case c := <-b.conns:
		return c
	case <-time.After(waitTimeout):
		b.t.Fatal("the broker accepted no connection")
	}
	return brokerConn{}
}

type brokerHook struct {
	mochi.HookBase
	b *broker
}

func (h *brokerHook) ID() string { return "camagent-test" }

func (h *brokerHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPacketRead, mochi.OnQosPublish, mochi.OnQosComplete}, []byte{b})
}

func (h *brokerHook) OnConnectAuthenticate(cl *mochi.Client, _ packets.Packet) bool {
	if cl.Net.Inline {
		return true
	}
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return false
	}
	peers := tc.ConnectionState().PeerCertificates
	if len(peers) == 0 || certs.CertIdentity(peers[0]) != cl.ID {
		return false
	}
	remote, _ := netip.ParseAddrPort(tc.RemoteAddr().String())
	h.b.conns <- brokerConn{clientID: cl.ID, cn: certs.CertIdentity(peers[0]), serial: peers[0].SerialNumber, remote: remote}
	return true
}

// OnACLCheck allows everything except the forbidden/ tree, which tests use to provoke a
// refused subscription.
func (h *brokerHook) OnACLCheck(_ *mochi.Client, topic string, _ bool) bool {
	return !strings.HasPrefix(topic, "forbidden/")
}

func (h *brokerHook) OnPacketRead(_ *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Subscribe {
		h.b.subscribes.Add(1)
	}
	if pk.FixedHeader.Type == packets.Pingreq {
		select {
		case h.b.pings <- struct{}{}:
		default:
		}
	}
	return pk, nil
}

func (h *brokerHook) OnQosPublish(_ *mochi.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish {
		return // mochi also reports the PUBACKs it sends for a client's own QoS 1 messages
	}
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	h.b.inflight[pk.PacketID] = pk.TopicName
}

// OnQosComplete is called with the client's PUBACK, which carries only the packet id.
func (h *brokerHook) OnQosComplete(_ *mochi.Client, pk packets.Packet) {
	h.b.mu.Lock()
	topic, ok := h.b.inflight[pk.PacketID]
	delete(h.b.inflight, pk.PacketID)
	h.b.mu.Unlock()
	if !ok {
		return
	}
	select {
	case h.b.acked <- topic:
	default:
	}
}

// run starts c.Run and registers a cleanup that cancels it and checks that it returns nil.
// The returned stop does the same at once; it is idempotent.
func run(t *testing.T, c *Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitConnected waits for c to be connected.
func waitConnected(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatalf("WaitConnected: %v", err)
	}
}

// recv waits for a value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// waitFor polls cond until it holds or the deadline passes. It is for conditions no event
// announces (goroutines ending, counters).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ourGoroutines lists the goroutines running code of this package or of paho, other than
// the test's own.
func ourGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "eclipse/paho.mqtt.golang") || strings.Contains(g, "camagent/transport/mqtt.(*") {
			out = append(out, g)
		}
	}
	return out
}

// checkNoGoroutines fails unless every goroutine of this package and of paho has ended.
func checkNoGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		left := ourGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left behind:\n\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// textLogger logs every level as text to w.
func textLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeClock is a Clock whose timers fire only when the test says so.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan fakeWait
}

type fakeWait struct {
	d    time.Duration
	fire chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), waits: make(chan fakeWait, 64)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	w := fakeWait{d: d, fire: make(chan time.Time, 1)}
	f.waits <- w
	return w.fire
}

// next waits for the code under test to start a timer.
func (f *fakeClock) next(t *testing.T) fakeWait {
	t.Helper()
	return recv(t, f.waits, "a backoff timer")
}

// fire advances the clock by w.d and fires w.
func (f *fakeClock) fire(w fakeWait) {
	f.mu.Lock()
	f.now = f.now.Add(w.d)
	now := f.now
	f.mu.Unlock()
	w.fire <- now
}
