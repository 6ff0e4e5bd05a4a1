package mqtttest

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/certs"
)

// quiet is how long a test waits for a message that must not come, and only ever after a
// positive control sent behind it on the same path has arrived.
const quiet = 300 * time.Millisecond

// fleet is the set of clients most tests use.
type fleet struct {
	pki              *PKI
	camA, camB, oper *tls.Certificate
}

func newFleet(t *testing.T) *fleet {
	pki := NewPKI(t)
	return &fleet{
		pki:  pki,
		camA: pki.ClientCert(t, certs.RoleDevice, "cam-a"),
		camB: pki.ClientCert(t, certs.RoleDevice, "cam-b"),
		oper: pki.ClientCert(t, certs.RoleOperator, "alice"),
	}
}

func (f *fleet) connect(t *testing.T, b Broker, cert *tls.Certificate, inbox *Inbox) paho.Client {
	t.Helper()
	opts := ClientOptions(b, f.pki.ClientTLS(t, cert), cert.Leaf.Subject.CommonName)
	if inbox != nil {
		opts.SetDefaultPublishHandler(inbox.Handle)
	}
	return Connect(t, opts)
}

// subscribe subscribes c to filter at QoS 1 and returns the broker's return code.
func subscribe(t *testing.T, c paho.Client, filter string, inbox *Inbox) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, inbox.Handle)
	Wait(t, tok, "subscribe "+filter)
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func publish(t *testing.T, c paho.Client, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	Wait(t, c.Publish(topic, qos, retained, payload), "publish "+topic)
}

// expectOnly waits for a message with payload want and fails on any other message that comes
// before it or within quiet after it. Copies of the wanted message are fine: a client with
// overlapping subscriptions gets one per subscription.
func expectOnly(t *testing.T, inbox *Inbox, want string) Message {
	t.Helper()
	got := inbox.Next(t)
	if string(got.Payload) != want {
		t.Fatalf("got %q on %s, want %q first", got.Payload, got.Topic, want)
	}
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	for {
		select {
		case m := <-inbox.C:
			if m.Topic != got.Topic || string(m.Payload) != want {
				t.Fatalf("unexpected message %q on %s after %q", m.Payload, m.Topic, want)
			}
		case <-timer.C:
			return got
		}
	}
}

func TestAnOperatorCommandReachesItsDevice(t *testing.T) {
	f := newFleet(t)
	ForEachBroker(t, f.pki, func(t *testing.T, b Broker) {
		inbox := NewInbox()
		dev := f.connect(t, b, f.camA, nil)
		if code := subscribe(t, dev, "dev/cam-a/down/cmd", inbox); code != 1 {
			t.Fatalf("device subscription to its commands got return code %#x, want 1", code)
		}
		op := f.connect(t, b, f.oper, nil)
		publish(t, op, "dev/cam-a/down/cmd", 1, false, "reboot")
		m := inbox.Next(t)
		if m.Topic != "dev/cam-a/down/cmd" || string(m.Payload) != "reboot" || m.QoS != 1 {
			t.Fatalf("device got %+v", m)
		}
	})
}

func TestADevicePublishesOnlyUnderItsOwnUpTopics(t *testing.T) {
	f := newFleet(t)
	ForEachBroker(t, f.pki, func(t *testing.T, b Broker) {
		inbox := NewInbox()
		op := f.connect(t, b, f.oper, nil)
		if code := subscribe(t, op, "dev/#", inbox); code != 1 {
			t.Fatalf("operator subscription got return code %#x", code)
		}
		dev := f.connect(t, b, f.camA, nil)
		// Denied publishes are acknowledged and dropped (MQTT 3.1.1 has no way to say no),
		// at either QoS; the device stays connected.
		for _, qos := range []byte{0, 1} {
			publish(t, dev, "dev/cam-b/up/reply", qos, false, "impersonation")
			publish(t, dev, "dev/cam-a/down/cmd", qos, false, "self-command")
			publish(t, dev, "fleet/down/cmd", qos, false, "fleet-command")
		}
		// The positive control follows on the same connection, so had any of the above been
		// delivered, it would have arrived first.
		publish(t, dev, "dev/cam-a/up/reply", 1, false, "control")
		m := expectOnly(t, inbox, "control")
		if m.Topic != "dev/cam-a/up/reply" {
			t.Fatalf("control arrived on %s", m.Topic)
		}
		if !dev.IsConnectionOpen() {
			t.Fatalf("the device was disconnected for a denied publish")
		}
	})
}

func TestADeviceCannotSubscribeToOtherDevicesTopics(t *testing.T) {
	f := newFleet(t)
	ForEachBroker(t, f.pki, func(t *testing.T, b Broker) {
		want := byte(0x80)
		if b.Name() == "mosquitto" {
			// Mosquitto 2.0 does not consult its acl_file for SUBSCRIBE: it grants every
			// filter and checks read access for each message it would deliver (and each
			// retained message), which the control below shows.
			want = 1
		}
		inbox := NewInbox()
		dev := f.connect(t, b, f.camA, inbox)
		for _, filter := range []string{"dev/cam-b/down/#", "dev/+/down/cmd", "#", "dev/cam-b/up/reply"} {
			if code := subscribe(t, dev, filter, inbox); code != want {
				t.Errorf("subscription to %s got return code %#x, want %#x", filter, code, want)
			}
		}
		if code := subscribe(t, dev, "dev/cam-a/down/#", inbox); code != 1 {
			t.Fatalf("subscription to its own commands got return code %#x", code)
		}
		op := f.connect(t, b, f.oper, nil)
		publish(t, op, "dev/cam-b/down/cmd", 1, false, "for cam-b")
		publish(t, op, "dev/cam-a/down/cmd", 1, false, "control")
		expectOnly(t, inbox, "control")
	})
}

func TestCertificatesThatMustNotConnectAreRefused(t *testing.T) {
	pki := NewPKI(t)
	other := NewPKI(t)
	now := time.Now()
	revoked := pki.ClientCert(t, certs.RoleDevice, "cam-revoked")
	tests := []struct {
		name string
		cert *tls.Certificate
	}{
		{"a certificate from another CA", other.ClientCert(t, certs.RoleDevice, "cam-a")},
		{"an expired certificate", pki.ClientCertValidity(t, certs.RoleDevice, "cam-a", now.Add(-2*time.Hour), time.Hour)},
		{"a certificate not yet valid", pki.ClientCertValidity(t, certs.RoleDevice, "cam-a", now.Add(time.Hour), time.Hour)},
		{"a revoked certificate", revoked},
	}
	good := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	crl := pki.CRL(t, Serial(revoked))
	ForEachBroker(t, pki, func(t *testing.T, b Broker) {
		for _, tt := range tests {
			t.Run(tt.name+" is refused", func(t *testing.T) {
				opts := ClientOptions(b, pki.ClientTLS(t, tt.cert), tt.cert.Leaf.Subject.CommonName)
				if _, err := TryConnect(t, opts); err == nil {
					t.Fatal("connected")
				} else {
					t.Logf("refused: %v", err)
				}
			})
		}
		t.Run("a valid certificate connects", func(t *testing.T) {
			Connect(t, ClientOptions(b, pki.ClientTLS(t, good), "cam-a"))
		})
	}, WithCRL(crl))
}

func TestWeakTLSIsRefused(t *testing.T) {
	pki := NewPKI(t)
	cert := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	tests := []struct {
		name  string
		tweak func(c *tls.Config)
		ok    bool
	}{
		{"TLS 1.3 is accepted", func(c *tls.Config) {}, true},
		{"TLS 1.2 with ECDHE and AES-GCM is accepted", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		}, true},
		{"TLS 1.1 is refused", func(c *tls.Config) {
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		}, false},
		{"TLS 1.2 with a CBC cipher is refused", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}
		}, false},
	}
	ForEachBroker(t, pki, func(t *testing.T, b Broker) {
		addr := strings.TrimPrefix(b.URL(), "mqtts://")
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				conf := pki.ClientTLS(t, cert)
				tt.tweak(conf)
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ClientTimeout}, "tcp", addr, conf)
				if err == nil {
					conn.Close()
				}
				if (err == nil) != tt.ok {
					t.Fatalf("handshake error %v, want success %v", err, tt.ok)
				}
				if err != nil {
					t.Logf("refused: %v", err)
				}
			})
		}
	})
}

// ticketCount is a tls.ClientSessionCache that counts the session tickets it is given.
type ticketCount struct{ n atomic.Int32 }

func (c *ticketCount) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (c *ticketCount) Put(_ string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.n.Add(1)
	}
}

// TestBrokersGiveNoSessionTickets: a client that would take tickets (one with a session cache;
// of camagent's, only the signer's has one, which keeps nothing) is given no TLS 1.3 session ticket by either broker, as
// configured for deployment: a resumed session would skip the certificate check, and for
// Mosquitto the tickets cost about a third of every handshake (mosquitto.RenderOpenSSLConf).
// Mosquitto run without that openssl.cnf gives them, which the same probe sees.
func TestBrokersGiveNoSessionTickets(t *testing.T) {
	pki := NewPKI(t)
	cert := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	ForEachBroker(t, pki, func(t *testing.T, b Broker) {
		if n := ticketsGiven(t, pki, cert, b); n != 0 {
			t.Fatalf("%s gave %d session tickets, want none", b.Name(), n)
		}
	})
	t.Run("mosquitto with OpenSSL's defaults", func(t *testing.T) {
		m := StartMosquitto(t, pki, WithOpenSSLDefaults())
		if n := ticketsGiven(t, pki, cert, m); n == 0 {
			t.Fatal("Mosquitto without the openssl.cnf gave no session ticket: the probe sees none either way")
		}
	})
}

// ticketsGiven makes one TLS handshake with b as a client that would take session tickets,
// and returns how many b gave.
func ticketsGiven(t *testing.T, pki *PKI, cert *tls.Certificate, b Broker) int32 {
	t.Helper()
	conf := pki.ClientTLS(t, cert)
	cache := &ticketCount{}
	conf.ClientSessionCache = cache
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ClientTimeout}, "tcp", strings.TrimPrefix(b.URL(), "mqtts://"), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated TLS version %#x, want TLS 1.3", v)
	}
	// A server sends its tickets right after the handshake; the client takes them in
	// while it reads. The broker sends nothing else before a CONNECT.
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	n, err := conn.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read after the handshake: %d bytes, %v; want a timeout", n, err)
	}
	return cache.n.Load()
}

func TestAQueuedCommandSurvivesABrokerRestart(t *testing.T) {
	f := newFleet(t)
	ForEachBroker(t, f.pki, func(t *testing.T, b Broker) {
		inbox := NewInbox()
		dev := f.connect(t, b, f.camA, inbox)
		subscribe(t, dev, "dev/cam-a/down/cmd", inbox)
		dev.Disconnect(250)

		op := f.connect(t, b, f.oper, nil)
		publish(t, op, "dev/cam-a/down/cmd", 1, false, "queued while offline")
		op.Disconnect(250)

		b.Restart(t)

		// A new client with the same identity and a persistent session: the subscription
		// lives in the broker, so the message comes to the default handler.
		f.connect(t, b, f.camA, inbox)
		m := inbox.Next(t)
		if m.Topic != "dev/cam-a/down/cmd" || string(m.Payload) != "queued while offline" {
			t.Fatalf("device got %+v", m)
		}
	})
}

func TestARetainedMessageSurvivesABrokerRestart(t *testing.T) {
	f := newFleet(t)
	ForEachBroker(t, f.pki, func(t *testing.T, b Broker) {
		dev := f.connect(t, b, f.camA, nil)
		publish(t, dev, "dev/cam-a/up/state", 1, true, `{"fw":"1.2.3"}`)
		dev.Disconnect(250)

		b.Restart(t)

		inbox := NewInbox()
		op := f.connect(t, b, f.oper, nil)
		subscribe(t, op, "dev/+/up/state", inbox)
		m := inbox.Next(t)
		if m.Topic != "dev/cam-a/up/state" || string(m.Payload) != `{"fw":"1.2.3"}` || !m.Retained {
			t.Fatalf("operator got %+v", m)
		}
	})
}

func TestNonDeviceRolesGetTheirRulesOnBothBrokers(t *testing.T) {
	f := newFleet(t)
	signer := f.pki.ClientCert(t, certs.RoleSigner, "s1")
	viewer := f.pki.ClientCert(t, certs.RoleViewer, "relay")
	boot := f.pki.ClientCert(t, certs.RoleBootstrap, "cam-a")
	ForEachBroker(t, f.pki, func(t *testing.T, b Broker) {
		csrs := NewInbox()
		s := f.connect(t, b, signer, nil)
		if code := subscribe(t, s, "dev/+/up/csr", csrs); code != 1 {
			t.Fatalf("signer subscription to CSRs got %#x", code)
		}
		if code := subscribe(t, s, "boot/+/up/csr", csrs); code != 1 {
			t.Fatalf("signer subscription to bootstrap CSRs got %#x", code)
		}
		signals := NewInbox()
		v := f.connect(t, b, viewer, nil)
		if code := subscribe(t, v, "dev/+/up/signal", signals); code != 1 {
			t.Fatalf("viewer subscription to signaling got %#x", code)
		}

		answers := NewInbox()
		bt := f.connect(t, b, boot, nil)
		if code := subscribe(t, bt, "boot/cam-a/down/#", answers); code != 1 {
			t.Fatalf("bootstrap subscription got %#x", code)
		}
		publish(t, bt, "dev/cam-a/up/csr", 1, false, "bootstrap posing as device")
		publish(t, bt, "boot/cam-a/up/csr", 1, false, "boot csr")
		expectOnly(t, csrs, "boot csr")

		publish(t, s, "dev/cam-a/down/cmd", 1, false, "signer command")
		publish(t, s, "boot/cam-a/down/cert", 1, false, "boot cert")
		expectOnly(t, answers, "boot cert")

		dev := f.connect(t, b, f.camA, nil)
		publish(t, dev, "dev/cam-a/up/state", 1, false, "state, not for viewers")
		publish(t, dev, "dev/cam-a/up/signal", 0, false, "offer") // signaling is QoS 0
		expectOnly(t, signals, "offer")

		// Mosquitto applies its device patterns to every user; the ACL's deny lines keep
		// them from giving a signer the fleet commands or a namespace of its own.
		want := byte(0x80)
		if b.Name() == "mosquitto" {
			want = 1 // Mosquitto 2.0 grants every SUBSCRIBE and checks each delivery.
		}
		for _, filter := range []string{"fleet/down/#", "dev/signer:s1/down/#"} {
			if code := subscribe(t, s, filter, csrs); code != want {
				t.Errorf("signer subscription to %s got %#x, want %#x", filter, code, want)
			}
		}
		op := f.connect(t, b, f.oper, nil)
		publish(t, op, "fleet/down/cmd", 1, false, "fleet command")
		publish(t, op, "dev/signer:s1/down/x", 1, false, "pattern leak")
		publish(t, op, "dev/cam-a/up/csr", 1, false, "csr")
		expectOnly(t, csrs, "csr")
	})
}

func TestMosquittoIsFoundOrTheTestFails(t *testing.T) {
	// StartMosquitto never skips; this documents where it looks.
	if got := mosquittoBinary(t); !strings.HasSuffix(got, "mosquitto") {
		t.Fatalf("mosquittoBinary() = %q", got)
	}
}

// After RestartWithServerCert, Mosquitto presents the new certificate.
func TestMosquittoRestartsWithANewServerCertificate(t *testing.T) {
	pki := NewPKI(t)
	m := StartMosquitto(t, pki)
	presented := func() *tls.Certificate {
		t.Helper()
		conf := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
		c, err := tls.Dial("tcp", strings.TrimPrefix(m.URL(), "mqtts://"), conf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		leaf := c.ConnectionState().PeerCertificates[0]
		return &tls.Certificate{Leaf: leaf}
	}
	if got := presented().Leaf.SerialNumber; got.Cmp(pki.ServerCert(t).Leaf.SerialNumber) != 0 {
		t.Fatalf("presented serial %x, want the PKI's", got)
	}
	next := pki.issue(t, certs.IssueRequest{
		Role: certs.RoleServer, Name: ServerName, DNSNames: []string{ServerName},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, Now: time.Now(),
	})
	m.RestartWithServerCert(t, next)
	if got := presented().Leaf.SerialNumber; got.Cmp(next.Leaf.SerialNumber) != 0 {
		t.Fatalf("after the restart Mosquitto presents serial %x, want %x", got, next.Leaf.SerialNumber)
	}
}
