package agent

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// These tests retire a broker certificate after a breach that reached the broker's key
// (certs.KeySet.BrokerNotBefore): the device refuses a broker presenting it, whatever way the
// key set reached the device, and takes the broker back once it presents a newer one.

// serverCert issues a broker certificate from pki as if at issued.
func serverCert(t *testing.T, pki *mqtttest.PKI, issued time.Time) *tls.Certificate {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleServer, Name: mqtttest.ServerName, DNSNames: []string{mqtttest.ServerName},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, PublicKey: key.Public(), Now: issued})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := certs.TLSCertificate(c, key)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// retiringKeySet signs, with f's root, key set version trusting f's command key and retiring
// the broker certificates issued before notBefore.
func retiringKeySet(t *testing.T, f *fixture, version uint64, notBefore time.Time) []byte {
	t.Helper()
	ks, err := certs.SignKeySet(f.root, certs.KeySet{Version: version, CommandKeys: []certs.PublicKey{f.cmdKey.Public()},
		GrantKeys: []certs.PublicKey{f.cmdKey.Public()}, BrokerNotBefore: notBefore.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// certBroker is the embedded broker presenting the server certificate stored last in cert,
// from the next handshake on: a broker given a new certificate, without the restart.
type certBroker struct {
	b    *broker.Broker
	cert atomic.Pointer[tls.Certificate]
}

func startCertBroker(t *testing.T, pki *mqtttest.PKI, cert *tls.Certificate, onPublish func(clientID, topic string, payload []byte, retained bool)) *certBroker {
	t.Helper()
	cb := &certBroker{}
	cb.cert.Store(cert)
	conf := certs.ServerTLSConfig(pki.Pool, cert)
	conf.Certificates = nil
	conf.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cb.cert.Load(), nil }
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: conf, OnPublish: onPublish, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cb.b = b
	return cb
}

// publishRetained publishes payload, retained, to t on cb as an operator.
func (cb *certBroker) publishRetained(t *testing.T, pki *mqtttest.PKI, tp string, payload []byte) {
	t.Helper()
	conf := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleOperator, "test"))
	opts := paho.NewClientOptions().AddBroker(cb.b.URL()).SetClientID("operator:test").SetTLSConfig(conf).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(mqtttest.ClientTimeout)
	c := mqtttest.Connect(t, opts)
	mqtttest.Wait(t, c.Publish(tp, 1, true, payload), "publish "+tp)
}

// count returns how many lines of rec contain every one of subs.
func count(rec *logtest.Recorder, subs ...string) int {
	n := 0
next:
	for _, l := range rec.Lines() {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		n++
	}
	return n
}

// waitCount waits until at least n lines of rec contain every one of subs.
func waitCount(t *testing.T, rec *logtest.Recorder, n int, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for count(rec, subs...) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d log lines with %q; log:\n%s", n, subs, rec.Text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refusedLine is what the agent logs for each handshake it refuses to a retired broker.
var refusedLine = []string{"cannot connect: the broker presents a certificate the fleet's key set retired", "code=" + codeBrokerRetired}

// refusedOnly waits until a, which the test made hold a key set retiring its broker, has no
// connection up, and has refused the broker three times since while staying off. It fails the
// test at once when a connects meanwhile.
func refusedOnly(t *testing.T, a *Agent, rec *logtest.Recorder) {
	t.Helper()
	up := func() bool { c := a.mqttc.Load(); return c != nil && c.Connected() }
	deadline := time.Now().Add(20 * time.Second)
	for up() {
		if time.Now().After(deadline) {
			t.Fatalf("still connected to the broker the key set retired; log:\n%s", rec.Text())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := count(rec, refusedLine...)
	for count(rec, refusedLine...) < before+3 {
		if up() {
			t.Fatalf("connected to the broker the key set retired; log:\n%s", rec.Text())
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 refusals of the retired broker; log:\n%s", rec.Text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A connected device that takes, through the retained breach notice, a key set retiring the
// certificate of the broker it is connected to, drops that connection and does not connect
// again while the broker presents that certificate, retrying with its backoff. Once the broker
// presents a certificate issued at the floor, the device connects and publishes its state
// with the new key set. Before, the device kept talking to whoever held the old broker key.
func TestAKeySetRetiringTheBrokerDropsTheConnectionUntilTheBrokerHasANewCertificate(t *testing.T) {
	const id = "cam-0001"
	now := time.Now()
	pki := pkiSince(t, now.Add(-2*time.Hour))
	old, fresh := serverCert(t, pki, now.Add(-time.Hour)), serverCert(t, pki, now)
	var mu sync.Mutex
	var keySets []uint64 // of the device states published, in order
	cb := startCertBroker(t, pki, old, func(_, tp string, payload []byte, _ bool) {
		var s wire.DeviceState
		if tp == topic.State(id) && wire.Decode(payload, &s) == nil {
			mu.Lock()
			keySets = append(keySets, s.KeySet)
			mu.Unlock()
		}
	})
	published := func() []uint64 { mu.Lock(); defer mu.Unlock(); return append([]uint64(nil), keySets...) }
	f := enrolledFleet(t, pki, cb.b.URL(), id, now, 0, false)
	log, rec := logtest.New()
	a := startAgent(t, Config{StateDir: f.dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	select {
	case <-a.Connected():
	case <-time.After(20 * time.Second):
		t.Fatalf("no connection to the broker before the key set; log:\n%s", rec.Text())
	}

	notice, err := certs.SignDesired(f.cmdKey, certs.Desired{Target: certs.TargetFleet, Version: 1, Incident: "INC-7",
		KeySet: retiringKeySet(t, f, 2, fresh.Leaf.NotBefore), IssuedAt: now.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	cb.publishRetained(t, pki, fleetDesired(a), notice)
	rec.WaitFor(t, 20*time.Second, "key set accepted", "version=2")
	refusedOnly(t, a, rec)
	rec.WaitFor(t, time.Second, "broker certificate in use was retired by the new key set", "key_set=2")
	if n := count(rec, "connected to broker"); n != 1 {
		t.Fatalf("%d connections; want the first only; log:\n%s", n, rec.Text())
	}
	for _, ks := range published() {
		if ks != 1 {
			t.Fatalf("a device state with key set %d reached the retired broker", ks)
		}
	}
	if n := a.authFails.Load(); n != 0 {
		t.Fatalf("%d refusals of a retired broker counted as the broker refusing the device's certificate (which leads to the bootstrap identity)", n)
	}

	cb.cert.Store(fresh)
	waitCount(t, rec, 2, "connected to broker")
	deadline := time.Now().Add(20 * time.Second)
	for ks := published(); len(ks) == 0 || ks[len(ks)-1] != 2; ks = published() {
		if time.Now().After(deadline) {
			t.Fatalf("no device state with key set 2 after the broker's new certificate (published %v); log:\n%s", ks, rec.Text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runFor starts an agent on cfg and returns a function that stops it and waits for it.
func runFor(t *testing.T, cfg Config) (*Agent, func()) {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return a, stop
}

// A device that holds a key set retiring its broker's certificate refuses that broker from its
// first connection, on both brokers: after a restart that reads the key set from the state
// file, and after one that found the state file corrupt and recovered the key set from the
// floor file. It never exits, and keeps retrying with its backoff.
func TestAnAgentHoldingAKeySetThatRetiredTheBrokerRefusesItFromTheStart(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		f := enrolledFleet(t, pki, b.URL(), "cam-0001", time.Now(), 0, false)
		took, err := New(Config{StateDir: f.dir, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		took.acceptKeySet(retiringKeySet(t, f, 2, pki.ServerCert(t).Leaf.NotBefore.Add(time.Second)))

		refused := func(t *testing.T, also ...string) {
			log, rec := logtest.New()
			a, stop := runFor(t, Config{StateDir: f.dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
			defer stop()
			for _, s := range also {
				rec.WaitFor(t, 5*time.Second, s)
			}
			refusedOnly(t, a, rec)
			select {
			case <-a.Connected():
				t.Fatalf("connected to the broker the key set retired; log:\n%s", rec.Text())
			default:
			}
		}
		t.Run("from the state file", func(t *testing.T) { refused(t) })
		t.Run("from the floor file when the state file is corrupt", func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(f.dir, StateFile), []byte("{\x00garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
			refused(t, "state file was corrupt")
		})
	})
}
