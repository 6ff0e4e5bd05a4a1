// Package fleettest gives the tests of fleetctl's packages a fleet directory, enrolled devices
// and device-side MQTT clients that speak the rotation protocol (agent/wire) to the signer,
// on real brokers (transport/mqtt/mqtttest, or `fleetctl broker`).
//
// It is test support: it must never be imported by non-test code. Every wait in it has a
// deadline and none sleeps.
package fleettest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// Timeout bounds every wait of this package.
const Timeout = 20 * time.Second

// NewFleet makes a fleet directory in t.TempDir() and a mqtttest.PKI view of its CA, so the
// mqtttest brokers trust the fleet's certificates.
func NewFleet(t testing.TB) (*fleet.Fleet, *mqtttest.PKI) {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Name: "fleettest"})
	if err != nil {
		t.Fatal(err)
	}
	return f, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
}

// Identities is the mqtttest option giving Mosquitto's ACL the fleet's operator and signer,
// and the bootstrap identities of the devices named.
func Identities(bootstrapFor ...string) mqtttest.Option {
	ids := []string{"operator:" + fleet.DefaultOperator, "signer:" + fleet.DefaultSigner}
	for _, id := range bootstrapFor {
		ids = append(ids, "bootstrap:"+id)
	}
	return mqtttest.WithIdentities(ids...)
}

// Enrolled is a device enrolled the real way: agent.Enroll made its keys and request,
// fleet.Enroll signed it, agent.InstallBundle installed the bundle.
type Enrolled struct {
	ID       string
	StateDir string
	// Cert and Boot are its device and bootstrap TLS certificates.
	Cert, Boot *tls.Certificate
}

// Enroll enrolls device id into f.
func Enroll(t testing.TB, f *fleet.Fleet, id string) *Enrolled {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	req, err := agent.Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	bundle, _, err := f.Enroll(req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	vb, err := agent.InstallBundle(dir, bundle, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	load := func(c *x509.Certificate, keyFile string) *tls.Certificate {
		key, err := certs.LoadKeyFile(filepath.Join(dir, keyFile))
		if err != nil {
			t.Fatal(err)
		}
		tc, err := certs.TLSCertificate(c, key)
		if err != nil {
			t.Fatal(err)
		}
		return tc
	}
	return &Enrolled{ID: id, StateDir: dir, Cert: load(vb.Cert, agent.KeyFile), Boot: load(vb.Bootstrap, agent.BootstrapKey)}
}

// Issue makes a device certificate for id with a fresh key straight from the fleet CA,
// without recording it anywhere: a device the registry does not know.
func Issue(t testing.TB, f *fleet.Fleet, role certs.Role, id string) *tls.Certificate {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.CA.Issue(certs.IssueRequest{Role: role, Name: id, PublicKey: key.Public(), Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := certs.TLSCertificate(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// Device is a device-side MQTT session speaking the rotation protocol: as the device (its
// id as client id, dev/<id>/down/cert) or as its bootstrap identity (boot/<id>/down/cert).
type Device struct {
	ID     string
	client *mqtt.Client
	boot   bool
	cancel context.CancelFunc
	done   chan error

	answers chan *wire.CertResponse
	once    sync.Once
}

// Connect opens a session to url with cert (a device or bootstrap certificate of f) and
// waits until it is subscribed. It is closed when the test ends.
func Connect(t testing.TB, f *fleet.Fleet, url string, cert *tls.Certificate) *Device {
	t.Helper()
	identity := certs.CertIdentity(cert.Leaf)
	role, id, err := certs.ParseIdentity(identity)
	if err != nil {
		t.Fatal(err)
	}
	d := &Device{ID: id, boot: role == certs.RoleBootstrap, done: make(chan error, 1), answers: make(chan *wire.CertResponse, 256)}
	sub := topic.Cert(id)
	if d.boot {
		sub = topic.BootCert(id)
	}
	host, _ := certs.BrokerHost(url)
	c, err := mqtt.New(mqtt.Config{
		BrokerURL:     url,
		ClientID:      identity,
		TLS:           certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert)),
		CleanSession:  false,
		Subscriptions: []mqtt.Subscription{{Filter: sub, QoS: 1}},
		Handler: func(_ context.Context, m mqtt.Message) {
			var r wire.CertResponse
			if err := wire.Decode(m.Payload, &r); err != nil {
				t.Errorf("fleettest: malformed certificate response on %s: %v", m.Topic, err)
				return
			}
			d.answers <- &r
		},
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	d.client = c
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- c.Run(ctx) }()
	t.Cleanup(d.Close)
	wctx, wcancel := context.WithTimeout(context.Background(), Timeout)
	defer wcancel()
	if err := c.WaitConnected(wctx); err != nil {
		t.Fatalf("fleettest: %s did not connect: %v", identity, err)
	}
	return d
}

// Close ends the session and waits for it. It is idempotent.
func (d *Device) Close() {
	d.once.Do(func() {
		d.cancel()
		<-d.done
	})
}

// NewRequest makes a certificate request for a fresh key whose CSR names cn, with a random
// request id and token hash, and returns it with the key.
func NewRequest(t testing.TB, cn string, epoch uint64) (wire.CertRequest, crypto.Signer) {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, cn)
	if err != nil {
		t.Fatal(err)
	}
	var id [8]byte
	var th [32]byte
	rand.Read(id[:])
	rand.Read(th[:])
	return wire.CertRequest{V: wire.Version, Kind: wire.KindRequest, ReqID: hex.EncodeToString(id[:]), Epoch: epoch, CSR: string(csr), TokenHash: hex.EncodeToString(th[:])}, key
}

// Send publishes a request or confirmation on the session's csr topic.
func (d *Device) Send(t testing.TB, r wire.CertRequest) {
	t.Helper()
	b, err := wire.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	tp := topic.CSR(d.ID)
	if d.boot {
		tp = topic.BootCSR(d.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := d.client.Publish(ctx, tp, 1, false, b); err != nil {
		t.Fatalf("fleettest: publish %s: %v", tp, err)
	}
}

// Await returns the next answer, failing the test if none comes within Timeout.
func (d *Device) Await(t testing.TB) *wire.CertResponse {
	t.Helper()
	select {
	case r := <-d.answers:
		return r
	case <-time.After(Timeout):
		t.Fatalf("fleettest: no certificate response for %s within %s", d.ID, Timeout)
		return nil
	}
}

// AwaitFor returns the answer to reqID, skipping others, failing the test after Timeout.
func (d *Device) AwaitFor(t testing.TB, reqID string) *wire.CertResponse {
	t.Helper()
	deadline := time.After(Timeout)
	for {
		select {
		case r := <-d.answers:
			if r.ReqID == reqID {
				return r
			}
		case <-deadline:
			t.Fatalf("fleettest: no certificate response to %s within %s", reqID, Timeout)
			return nil
		}
	}
}

// Answers is the channel of answers, for tests that count them.
func (d *Device) Answers() <-chan *wire.CertResponse { return d.answers }

// Certificate checks an answer's certificate as the agent does — chains to the fleet CA
// with clientAuth, names the device, carries key — and returns it with its TLS pairing.
func Certificate(t testing.TB, f *fleet.Fleet, r *wire.CertResponse, device string, key crypto.Signer) *tls.Certificate {
	t.Helper()
	if r.Error != "" {
		t.Fatalf("fleettest: request %s refused: %s", r.ReqID, r.Error)
	}
	c, err := certs.ParseCertPEM([]byte(r.Cert))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := certs.VerifyClient(c, f.Pool, time.Now()); err != nil || id != device {
		t.Fatalf("fleettest: issued certificate: identity %q, %v", id, err)
	}
	tc, err := certs.TLSCertificate(c, key)
	if err != nil {
		t.Fatalf("fleettest: issued certificate is not for the request's key: %v", err)
	}
	return tc
}

// Confirmation is the confirmation a device sends once connected with newCert.
func Confirmation(reqID string, epoch uint64, newCert, oldCert *x509.Certificate) wire.CertRequest {
	return wire.CertRequest{V: wire.Version, Kind: wire.KindConfirm, ReqID: reqID, Epoch: epoch,
		NewSerial: newCert.SerialNumber.Text(16), OldSerial: oldCert.SerialNumber.Text(16)}
}

// Session is a raw paho session, for watching a connection being cut.
type Session struct {
	Client paho.Client
	// Lost is closed when the broker cuts the connection.
	Lost <-chan struct{}
}

// TryConnect makes a plain MQTT 3.1.1 connection to url with cert and its identity as client
// id, and returns the connection error, if any. A connected session is closed when the test
// ends.
func TryConnect(t testing.TB, f *fleet.Fleet, url string, cert *tls.Certificate) (*Session, error) {
	t.Helper()
	lost := make(chan struct{})
	var once sync.Once
	host, _ := certs.BrokerHost(url)
	opts := paho.NewClientOptions().AddBroker(url).
		SetClientID(certs.CertIdentity(cert.Leaf)).
		SetTLSConfig(certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert))).
		SetProtocolVersion(4).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(Timeout).
		SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(lost) }) })
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(Timeout) {
		c.Disconnect(0)
		t.Fatalf("fleettest: connect %s: no answer in %s", certs.CertIdentity(cert.Leaf), Timeout)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return &Session{Client: c, Lost: lost}, nil
}
