package broker_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
	"go.etcd.io/bbolt"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// quiet is how long a test waits for a message that must not come, and only after a positive
// control sent behind it has arrived.
const quiet = 300 * time.Millisecond

func connect(t *testing.T, b mqtttest.Broker, pki *mqtttest.PKI, cert *tls.Certificate, inbox *mqtttest.Inbox) paho.Client {
	t.Helper()
	opts := mqtttest.ClientOptions(b, pki.ClientTLS(t, cert), cert.Leaf.Subject.CommonName)
	if inbox != nil {
		opts.SetDefaultPublishHandler(inbox.Handle)
	}
	return mqtttest.Connect(t, opts)
}

func subscribe(t *testing.T, c paho.Client, filter string, inbox *mqtttest.Inbox) {
	t.Helper()
	tok := c.Subscribe(filter, 1, inbox.Handle)
	mqtttest.Wait(t, tok, "subscribe "+filter)
	if code := tok.(*paho.SubscribeToken).Result()[filter]; code != 1 {
		t.Fatalf("subscribe %s: return code %#x", filter, code)
	}
}

func publish(t *testing.T, c paho.Client, topic, payload string) {
	t.Helper()
	mqtttest.Wait(t, c.Publish(topic, 1, false, payload), "publish "+topic)
}

func TestNewRefusesAnUnsafeConfig(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	good := pki.ServerTLS(t)
	with := func(f func(c *tls.Config)) *tls.Config {
		c := good.Clone()
		f(c)
		return c
	}
	tests := []struct {
		name string
		cfg  broker.Config
		want string
	}{
		{"no address is refused", broker.Config{TLS: good}, "Config.Addr"},
		{"no TLS is refused", broker.Config{Addr: "127.0.0.1:0"}, "Config.TLS is required"},
		{"optional client certificates are refused", broker.Config{Addr: "127.0.0.1:0", TLS: with(func(c *tls.Config) { c.ClientAuth = tls.VerifyClientCertIfGiven })}, "ClientAuth"},
		{"unverified client certificates are refused", broker.Config{Addr: "127.0.0.1:0", TLS: with(func(c *tls.Config) { c.ClientAuth = tls.RequireAnyClientCert })}, "ClientAuth"},
		{"a TLS config without the fleet CA is refused", broker.Config{Addr: "127.0.0.1:0", TLS: with(func(c *tls.Config) { c.ClientCAs = nil })}, "ClientCAs"},
		{"a TLS config without a server certificate is refused", broker.Config{Addr: "127.0.0.1:0", TLS: with(func(c *tls.Config) { c.Certificates = nil })}, "server certificate"},
		{"TLS 1.1 is refused", broker.Config{Addr: "127.0.0.1:0", TLS: with(func(c *tls.Config) { c.MinVersion = tls.VersionTLS11 })}, "MinVersion"},
		{"a per-client TLS config is refused", broker.Config{Addr: "127.0.0.1:0", TLS: with(func(c *tls.Config) {
			c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, nil }
		})}, "GetConfigForClient"},
		{"a negative packet size is refused", broker.Config{Addr: "127.0.0.1:0", TLS: good, MaxPacketSize: -1}, "MaxPacketSize"},
		{"a negative connect timeout is refused", broker.Config{Addr: "127.0.0.1:0", TLS: good, ConnectTimeout: -time.Second}, "ConnectTimeout"},
		{"a negative connection budget is refused", broker.Config{Addr: "127.0.0.1:0", TLS: good, MaxConnectRate: -1}, "MaxConnectRate"},
		{"a connection budget too small to pace is refused", broker.Config{Addr: "127.0.0.1:0", TLS: good, MaxConnectRate: 1e-10}, "MaxConnectRate"},
		{"a session expiry under a second is refused", broker.Config{Addr: "127.0.0.1:0", TLS: good, SessionExpiry: time.Millisecond}, "SessionExpiry"},
		{"a session expiry in fractions of a second is refused", broker.Config{Addr: "127.0.0.1:0", TLS: good, SessionExpiry: 1500 * time.Millisecond}, "SessionExpiry"},
		{"a negative session expiry is refused", broker.Config{Addr: "127.0.0.1:0", TLS: good, SessionExpiry: -time.Hour}, "SessionExpiry"},
		{"a session expiry beyond 2^32 s is refused", broker.Config{Addr: "127.0.0.1:0", TLS: good, SessionExpiry: 1 << 32 * time.Second}, "SessionExpiry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := broker.New(tt.cfg)
			if err == nil {
				t.Fatal("New accepted it")
			}
			if !strings.HasPrefix(err.Error(), "broker: ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not start with %q and name %q", err, "broker: ", tt.want)
			}
		})
	}
}

func TestABrokerStartsOnceAndClosesAnyNumberOfTimes(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t)})
	if err != nil {
		t.Fatal(err)
	}
	if b.Addr() != "" || b.URL() != "" {
		t.Fatalf("before Start: Addr %q, URL %q", b.Addr(), b.URL())
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.URL(), "mqtts://127.0.0.1:") || strings.HasSuffix(b.Addr(), ":0") {
		t.Fatalf("after Start: Addr %q, URL %q", b.Addr(), b.URL())
	}
	if err := b.Start(); !errors.Is(err, broker.ErrStarted) {
		t.Fatalf("second Start: %v, want ErrStarted", err)
	}
	for range 2 {
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if err := b.Start(); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}

	never, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := never.Close(); err != nil {
		t.Fatalf("Close before Start: %v", err)
	}
}

func TestRunServesUntilItsContextEnds(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := b.Start(); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Start after Run: %v, want ErrClosed", err)
	}
}

func TestTwoBrokersCannotShareADataDir(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	dir := t.TempDir()
	first, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(); err == nil {
		second.Close()
		t.Fatal("a second broker opened a data dir in use")
	}
}

func TestAClientIDThatIsNotTheCertificateIdentityIsRefused(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	camA := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	camB := pki.ClientCert(t, certs.RoleDevice, "cam-b")
	b := mqtttest.StartEmbedded(t, pki)

	lost := make(chan error, 1)
	victimOpts := mqtttest.ClientOptions(b, pki.ClientTLS(t, camB), "cam-b").
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	victim := mqtttest.Connect(t, victimOpts)

	for _, id := range []string{"cam-b", "operator:alice", "CAM-A", ""} {
		t.Run("client id "+id+" with the certificate of cam-a is refused", func(t *testing.T) {
			opts := mqtttest.ClientOptions(b, pki.ClientTLS(t, camA), id)
			if id == "" {
				opts.SetCleanSession(true) // an empty id is only legal with a clean session
			}
			_, err := mqtttest.TryConnect(t, opts)
			if !errors.Is(err, pahopackets.ErrorRefusedNotAuthorised) {
				t.Fatalf("connect: %v, want CONNACK not authorized", err)
			}
		})
	}
	select {
	case err := <-lost:
		t.Fatalf("cam-b's session was taken over by a refused client: %v", err)
	default:
	}
	if !victim.IsConnectionOpen() {
		t.Fatal("cam-b was disconnected")
	}
}

func TestARevokedCertificateIsRefusedWithNotAuthorized(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cert := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	b := mqtttest.StartEmbedded(t, pki, mqtttest.WithCRL(pki.CRL(t, mqtttest.Serial(cert))))
	_, err := mqtttest.TryConnect(t, mqtttest.ClientOptions(b, pki.ClientTLS(t, cert), "cam-a"))
	if !errors.Is(err, pahopackets.ErrorRefusedNotAuthorised) {
		t.Fatalf("connect: %v, want CONNACK not authorized", err)
	}
}

func TestTheBrokerClockDecidesCertificateValidity(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cert := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	future := func() time.Time { return time.Now().Add(certs.DefaultDeviceValidity + time.Hour) }
	b := mqtttest.StartEmbedded(t, pki, mqtttest.WithClock(future))
	if _, err := mqtttest.TryConnect(t, mqtttest.ClientOptions(b, pki.ClientTLS(t, cert), "cam-a")); err == nil {
		t.Fatal("a certificate expired by the broker's clock connected")
	}
}

func TestAWillOutsideTheACLIsRefused(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cert := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	b := mqtttest.StartEmbedded(t, pki)
	opts := mqtttest.ClientOptions(b, pki.ClientTLS(t, cert), "cam-a").
		SetWill("dev/cam-b/up/state", "offline", 1, true)
	_, err := mqtttest.TryConnect(t, opts)
	if !errors.Is(err, pahopackets.ErrorRefusedNotAuthorised) {
		t.Fatalf("connect: %v, want CONNACK not authorized", err)
	}
}

func TestDisconnectSerialCutsOnlyThatCertificate(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	camA := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	camB := pki.ClientCert(t, certs.RoleDevice, "cam-b")
	oper := pki.ClientCert(t, certs.RoleOperator, "alice")
	b := mqtttest.StartEmbedded(t, pki)

	wills := mqtttest.NewInbox()
	op := connect(t, b, pki, oper, nil)
	subscribe(t, op, "dev/+/up/state", wills)

	lostA := make(chan error, 1)
	optsA := mqtttest.ClientOptions(b, pki.ClientTLS(t, camA), "cam-a").
		SetWill("dev/cam-a/up/state", "cam-a gone", 1, false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lostA <- err })
	mqtttest.Connect(t, optsA)
	devB := connect(t, b, pki, camB, nil)

	if n := b.Broker().DisconnectSerial(big.NewInt(12345)); n != 0 {
		t.Fatalf("DisconnectSerial(unknown) = %d", n)
	}
	if n := b.Broker().DisconnectSerial(mqtttest.Serial(camA)); n != 1 {
		t.Fatalf("DisconnectSerial(cam-a) = %d, want 1", n)
	}
	select {
	case <-lostA:
	case <-time.After(mqtttest.ClientTimeout):
		t.Fatal("cam-a was not disconnected")
	}
	// The connection was cut, not closed politely, so the broker publishes cam-a's will.
	if m := wills.Next(t); string(m.Payload) != "cam-a gone" {
		t.Fatalf("operator got %q", m.Payload)
	}
	publish(t, devB, "dev/cam-b/up/state", "cam-b still here")
	if m := wills.Next(t); string(m.Payload) != "cam-b still here" {
		t.Fatalf("operator got %q", m.Payload)
	}
}

func TestOnPublishSeesOnlyAcceptedPublishes(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	camA := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	type seen struct{ client, topic, payload string }
	observed := make(chan seen, 16)
	b := mqtttest.StartEmbedded(t, pki, mqtttest.WithOnPublish(func(client, topic string, payload []byte, _ bool) {
		observed <- seen{client, topic, string(payload)}
	}))
	dev := connect(t, b, pki, camA, nil)
	publish(t, dev, "dev/cam-b/up/reply", "denied")
	publish(t, dev, "dev/cam-a/up/reply", "accepted")
	var got seen
	select {
	case got = <-observed:
	case <-time.After(mqtttest.ClientTimeout):
		t.Fatal("the observer saw nothing")
	}
	if got != (seen{"cam-a", "dev/cam-a/up/reply", "accepted"}) {
		t.Fatalf("observer saw %+v first", got)
	}
	select {
	case extra := <-observed:
		t.Fatalf("observer also saw %+v", extra)
	case <-time.After(quiet):
	}
}

func TestAPacketOverTheSizeCapEndsTheConnection(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	camA := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	tlsConf := pki.ServerTLS(t)
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: tlsConf, MaxPacketSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	lost := make(chan error, 1)
	opts := mqtttest.ClientOptions(urlBroker(b.URL()), pki.ClientTLS(t, camA), "cam-a").
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	c := mqtttest.Connect(t, opts)
	mqtttest.Wait(t, c.Publish("dev/cam-a/up/reply", 1, false, "small"), "small publish")
	c.Publish("dev/cam-a/up/reply", 1, false, strings.Repeat("x", 2048))
	select {
	case <-lost:
	case <-time.After(mqtttest.ClientTimeout):
		t.Fatal("the broker kept a client that sent a 2 KiB packet over a 1 KiB cap")
	}
}

func TestLogsNeverCarryPayloads(t *testing.T) {
	const canary = "CANARY-7f3a-payload"
	pki := mqtttest.NewPKI(t)
	camA := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	oper := pki.ClientCert(t, certs.RoleOperator, "alice")
	var logs logtest.Buffer
	b, err := broker.New(broker.Config{
		Addr:    "127.0.0.1:0",
		TLS:     pki.ServerTLS(t),
		DataDir: t.TempDir(),
		Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	target := urlBroker(b.URL())

	inbox := mqtttest.NewInbox()
	dev := connect(t, target, pki, camA, inbox)
	subscribe(t, dev, "dev/cam-a/down/cmd", inbox)
	dev.Disconnect(250)
	op := connect(t, target, pki, oper, nil)
	// Queued for an offline client: mochi logs the packet it could not send.
	publish(t, op, "dev/cam-a/down/cmd", canary)
	// Denied: the broker logs the denial.
	dev2 := connect(t, target, pki, camA, inbox)
	if m := inbox.Next(t); string(m.Payload) != canary {
		t.Fatalf("device got %q", m.Payload)
	}
	publish(t, dev2, "dev/cam-b/up/reply", canary)
	// The denial is logged on the broker's goroutine: wait for it rather than race Close.
	// (Whether mochi also logs the queued packet depends on whether the offline client's
	// disconnect was processed first, so only the denial is required.)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "acl denied") {
		if time.Now().After(deadline) {
			t.Fatalf("the scenario did not make the broker log a packet and a denial; log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Close()
	out := logs.String()
	if strings.Contains(out, canary) {
		t.Fatalf("a payload reached the log:\n%s", out)
	}
}

// urlBroker is an mqtttest.Broker for a broker a test runs itself.
type urlBroker string

func (u urlBroker) URL() string          { return string(u) }
func (u urlBroker) Restart(t testing.TB) { t.Fatal("urlBroker cannot restart") }
func (u urlBroker) Stop(testing.TB)      {}
func (u urlBroker) Name() string         { return "url" }

var _ mqtttest.Broker = urlBroker("")

// A broker starting on a fresh data directory, and again on the one it left, logs no error:
// an operator reads ERROR as something to act on. (mochi v2.7.9's bolt hook logged "failed to
// get data" for the system info a fresh store does not hold yet.)
func TestAFreshStoreStartsWithoutAnError(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	dir := t.TempDir()
	for _, run := range []string{"fresh", "again"} {
		var logs logtest.Buffer
		b, err := broker.New(broker.Config{
			Addr:    "127.0.0.1:0",
			TLS:     pki.ServerTLS(t),
			DataDir: dir,
			Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		dev := connect(t, urlBroker(b.URL()), pki, pki.ClientCert(t, certs.RoleDevice, "cam-a"), nil)
		dev.Disconnect(250)
		b.Close()
		if !strings.Contains(logs.String(), "loaded $SYS info from store") {
			t.Fatalf("%s: the broker did not load its store; log:\n%s", run, logs.String())
		}
		if strings.Contains(logs.String(), "level=ERROR") {
			t.Fatalf("%s: an error logged:\n%s", run, logs.String())
		}
	}
}

// The store is bbolt with its free-page list left unwritten (rebuilt when the store opens). A
// store made with bbolt's defaults, as brokers before 2026-11-29 made it, opens and keeps what
// it holds, and the store the broker leaves opens with the defaults (a downgrade) and checks
// clean.
func TestTheStoreOpensEitherWayItsFreePagesWereKept(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "broker.db")
	db, err := bbolt.Open(path, 0o600, nil) // bbolt's defaults: the free-page list is written
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	start := func() *broker.Broker {
		b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := start()
	dev := connect(t, urlBroker(b.URL()), pki, pki.ClientCert(t, certs.RoleDevice, "cam-a"), nil)
	mqtttest.Wait(t, dev.Publish("dev/cam-a/up/state", 1, true, "epoch 7"), "publish the retained state")
	dev.Disconnect(250)
	b.Close()

	db, err = bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("the broker's store does not open with bbolt's defaults: %v", err)
	}
	err = db.Update(func(tx *bbolt.Tx) error { // a write: the defaults write the list again
		if _, err := tx.CreateBucketIfNotExists([]byte("downgrade")); err != nil {
			return err
		}
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatalf("the broker's store, opened with bbolt's defaults: %v", err)
	}

	b = start()
	defer b.Close()
	inbox := mqtttest.NewInbox()
	op := connect(t, urlBroker(b.URL()), pki, pki.ClientCert(t, certs.RoleOperator, "alice"), nil)
	defer op.Disconnect(250)
	subscribe(t, op, "dev/+/up/state", inbox)
	if m := inbox.Next(t); m.Topic != "dev/cam-a/up/state" || string(m.Payload) != "epoch 7" || !m.Retained {
		t.Fatalf("after the store went through both: %s %q retained=%v, want the retained state", m.Topic, m.Payload, m.Retained)
	}
}
