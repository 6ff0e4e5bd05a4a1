package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// refusalWait bounds a Dial expected to fail: long enough for a few connection attempts to a
// broker on loopback, short enough that the test does not wait for fleettest.Timeout.
const refusalWait = 3 * time.Second

// brokerCert issues a broker certificate of fleet f for 127.0.0.1, as if issued at at.
func brokerCert(t *testing.T, f *fleet.Fleet, at time.Time) *tls.Certificate {
	t.Helper()
	k, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleServer, Name: "camagent broker", PublicKey: k.Public(), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Now: at})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := certs.TLSCertificate(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// swappableBroker runs the embedded broker of fleet f on loopback until the test ends,
// presenting at each handshake the certificate in the returned holder (first cert), the way
// `fleetctl broker` serves its renewed one; it returns the broker's URL.
func swappableBroker(t *testing.T, f *fleet.Fleet, cert *tls.Certificate) (string, *certs.Holder) {
	t.Helper()
	h := certs.NewHolder(cert)
	conf := certs.ServerTLSConfig(f.Pool, cert)
	conf.Certificates, conf.GetCertificate = nil, h.GetCertificate
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b.URL(), h
}

// retiringKeySet signs, with f's root, f's key set in force with the next version and the
// broker floor notBefore (Unix seconds): what `fleetctl keys rotate --retire-brokers` makes.
func retiringKeySet(t *testing.T, f *fleet.Fleet, notBefore int64) []byte {
	t.Helper()
	rk, err := f.LoadRootKey(f.RootKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	cur := f.KeySet()
	b, err := certs.SignKeySet(rk, certs.KeySet{Version: cur.Version + 1, IssuedAt: time.Now().Unix(), CommandKeys: cur.CommandKeys, GrantKeys: cur.GrantKeys, BrokerNotBefore: notBefore})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitConnected waits until r's MQTT session is up (want) or down, failing the test after
// fleettest.Timeout.
func waitConnected(t *testing.T, r *relay.Relay, want bool, rec *logtest.Recorder) {
	t.Helper()
	deadline := time.Now().Add(fleettest.Timeout)
	for r.Connected() != want {
		if time.Now().After(deadline) {
			t.Fatalf("the relay's connection is not up=%v within %s; log:\n%s", want, fleettest.Timeout, rec.Text())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialFunc dials a relay of fleet f to the broker at url, handing the key sets it takes to
// onKeySet.
type dialFunc func(ctx context.Context, f *fleet.Fleet, url string, log *slog.Logger, onKeySet func(*certs.KeySet)) (*relay.Relay, error)

// A breach reached the broker's key: the fleet gave the broker a new certificate and put in
// force a key set whose floor retires the old one. A relay, with an identity of its own or on
// the fleet directory, that learns the set while connected to a broker presenting the old
// certificate (whoever holds the stolen key) drops that connection, and connects again only
// once the broker presents a certificate issued from the floor on. Before, it stayed connected,
// and reconnected, to whoever held the old broker key; a relay on the fleet directory did not
// even read the set.
func TestARelayLeavesABrokerItsNewKeySetRetired(t *testing.T) {
	dials := map[string]dialFunc{
		"with an identity of its own": func(ctx context.Context, f *fleet.Fleet, url string, log *slog.Logger, onKeySet func(*certs.KeySet)) (*relay.Relay, error) {
			return relay.DialIdentity(ctx, enrollIdentity(t, f, "cloud"), url, log, onKeySet)
		},
		"on the fleet directory": func(ctx context.Context, f *fleet.Fleet, url string, log *slog.Logger, onKeySet func(*certs.KeySet)) (*relay.Relay, error) {
			return relay.DialFleetKeySets(ctx, f, "web", url, log, onKeySet)
		},
	}
	for name, dial := range dials {
		t.Run(name, func(t *testing.T) { leavesABrokerItsNewKeySetRetired(t, dial) })
	}
}

func leavesABrokerItsNewKeySetRetired(t *testing.T, dial dialFunc) {
	f, _ := fleettest.NewFleet(t)
	now := time.Now()
	stolen, replaced := brokerCert(t, f, now.Add(-time.Hour)), brokerCert(t, f, now)
	url, served := swappableBroker(t, f, stolen)

	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	log, rec := logtest.New()
	got := make(chan *certs.KeySet, 4)
	r, err := dial(ctx, f, url, log, func(ks *certs.KeySet) { got <- ks })
	if err != nil {
		t.Fatalf("before the floor the relay connects to the broker: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })

	floor := replaced.Leaf.NotBefore.Unix()
	if err := op.Client().Publish(ctx, topic.FleetKeySet, 1, true, retiringKeySet(t, f, floor)); err != nil {
		t.Fatal(err)
	}
	select {
	case ks := <-got:
		if ks.BrokerNotBefore != floor {
			t.Fatalf("the relay took a key set with floor %d, want %d", ks.BrokerNotBefore, floor)
		}
	case <-ctx.Done():
		t.Fatalf("the relay never took the key set; log:\n%s", rec.Text())
	}
	rec.WaitFor(t, fleettest.Timeout, "mqtt: cannot connect", certs.ErrRetiredBroker.Error())
	waitConnected(t, r, false, rec)
	rec.WaitFor(t, fleettest.Timeout, "WARN", "retires the certificate of the broker the relay is connected to")

	// The broker is given its new certificate: the relay, retrying with backoff, is back.
	served.Set(replaced)
	waitConnected(t, r, true, rec)
}

// A relay with an identity of its own that holds a key set with a floor (kept in keyset.json
// since it learnt it) refuses a broker presenting a certificate issued before it, even one
// that withholds the set, and connects to one presenting a certificate issued from the floor
// on. Before, the fleet CA alone decided.
func TestAnIdentityRelayRefusesABrokerTheKeySetItHoldsRetired(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	now := time.Now()
	stolen, replaced := brokerCert(t, f, now.Add(-time.Hour)), brokerCert(t, f, now)
	url, served := swappableBroker(t, f, stolen)
	id := enrollIdentity(t, f, "cloud")
	floor := replaced.Leaf.NotBefore.Unix()
	if err := os.WriteFile(filepath.Join(id.Dir, relay.IdentityKeySetFile), retiringKeySet(t, f, floor), 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := relay.LoadIdentity(id.Dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if id.KeySet().BrokerNotBefore != floor {
		t.Fatalf("the identity holds floor %d, want %d", id.KeySet().BrokerNotBefore, floor)
	}

	ctx, cancel := context.WithTimeout(context.Background(), refusalWait)
	defer cancel()
	r, err := relay.DialIdentity(ctx, id, url, nil, nil)
	if err == nil {
		r.Close()
		t.Fatal("the relay connected to a broker presenting a retired certificate")
	}
	if !errors.Is(err, certs.ErrRetiredBroker) {
		t.Fatalf("DialIdentity to a retired broker: %v, want certs.ErrRetiredBroker", err)
	}

	served.Set(replaced)
	ctx, cancel = context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	r, err = relay.DialIdentity(ctx, id, url, nil, nil)
	if err != nil {
		t.Fatalf("the broker with its new certificate: %v", err)
	}
	r.Close()
}

// A relay on the operator's machine (camview serve --fleet) refuses a broker whose certificate
// the key set in force in the fleet directory retired, and connects to the broker given a new
// certificate.
func TestAFleetRelayRefusesABrokerTheFleetsKeySetRetired(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	now := time.Now()
	stolen, replaced := brokerCert(t, f, now.Add(-time.Hour)), brokerCert(t, f, now)
	url, served := swappableBroker(t, f, stolen)
	floor := replaced.Leaf.NotBefore.Unix()
	if err := f.InstallKeySet(retiringKeySet(t, f, floor)); err != nil {
		t.Fatal(err)
	}
	f, err := fleet.Open(f.Dir) // as camview serve --fleet opens it
	if err != nil {
		t.Fatal(err)
	}
	if f.KeySet().BrokerNotBefore != floor {
		t.Fatalf("the fleet's key set has floor %d, want %d", f.KeySet().BrokerNotBefore, floor)
	}

	ctx, cancel := context.WithTimeout(context.Background(), refusalWait)
	defer cancel()
	r, err := relay.DialFleet(ctx, f, "web", url, nil)
	if err == nil {
		r.Close()
		t.Fatal("the relay connected to a broker presenting a retired certificate")
	}
	if !errors.Is(err, certs.ErrRetiredBroker) {
		t.Fatalf("DialFleet to a retired broker: %v, want certs.ErrRetiredBroker", err)
	}

	served.Set(replaced)
	ctx, cancel = context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	r, err = relay.DialFleet(ctx, f, "web", url, nil)
	if err != nil {
		t.Fatalf("the broker with its new certificate: %v", err)
	}
	r.Close()
}
