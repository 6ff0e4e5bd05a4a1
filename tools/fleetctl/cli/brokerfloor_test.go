package cli_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// initOldFleet makes a fleet as if `fleetctl init` ran an hour ago, so that a broker
// certificate issued now (fleetctl replace broker) is newer than the first one to the second:
// key set floors are whole Unix seconds.
func initOldFleet(t *testing.T) (string, *fleet.Fleet) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fleet")
	f, err := fleet.Init(dir, fleet.InitOptions{Name: "broker floor test", Now: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return dir, f
}

// serverPair loads the broker pair the fleet directory keeps now.
func serverPair(t *testing.T, dir string) *tls.Certificate {
	t.Helper()
	f, err := fleet.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// floorBroker is a real broker whose server certificate the test chooses.
type floorBroker interface {
	URL() string
	// Present restarts the broker, with its retained messages, presenting cert.
	Present(t *testing.T, cert *tls.Certificate)
}

// fleetctlBroker is `fleetctl broker` run from its own copy of the fleet directory (the
// broker's host), into which Present copies the pair.
type fleetctlBroker struct {
	host, addr, data string
	stop             func()
}

func startFleetctlBroker(t *testing.T, dir string, cert *tls.Certificate) *fleetctlBroker {
	t.Helper()
	b := &fleetctlBroker{host: filepath.Join(t.TempDir(), "broker-host"), addr: fleettest.FreeAddr(t), data: t.TempDir()}
	if out, err := exec.Command("cp", "-a", dir, b.host).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if b.stop != nil {
			b.stop()
		}
	})
	b.Present(t, cert)
	return b
}

func (b *fleetctlBroker) URL() string { return "mqtts://" + b.addr }

func (b *fleetctlBroker) Present(t *testing.T, cert *tls.Certificate) {
	t.Helper()
	if b.stop != nil {
		b.stop()
	}
	if err := certs.WriteKeyFile(filepath.Join(b.host, "broker", "server.key"), cert.PrivateKey.(crypto.Signer)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.host, "broker", "server.crt"), certs.EncodeCertPEM(cert.Leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	out := newOutput()
	go func() {
		done <- cli.Run(ctx, []string{"broker", "--dir", b.host, "--listen", b.addr, "--data", b.data}, out, out)
	}()
	var once sync.Once
	b.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fleetctl broker: %v\n%s", err, out.String())
			}
		})
	}
	out.waitFor(t, "broker listening on")
	fleettest.WaitTLS(t, mustOpen(t, b.host), b.addr)
}

// mosquittoBroker is a real Mosquitto given the pair by RestartWithServerCert.
type mosquittoBroker struct{ *mqtttest.Mosquitto }

func (m mosquittoBroker) Present(t *testing.T, cert *tls.Certificate) {
	t.Helper()
	m.RestartWithServerCert(t, cert)
}

func mustOpen(t *testing.T, dir string) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// forEachFloorBroker runs fn against `fleetctl broker` and against Mosquitto, each presenting
// cert to begin with.
func forEachFloorBroker(t *testing.T, dir string, cert *tls.Certificate, fn func(t *testing.T, b floorBroker)) {
	t.Run("fleetctl broker", func(t *testing.T) {
		fn(t, startFleetctlBroker(t, dir, cert))
	})
	t.Run("mosquitto", func(t *testing.T) {
		f := mustOpen(t, dir)
		m := mqtttest.StartMosquitto(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}, fleettest.Identities())
		m.RestartWithServerCert(t, cert)
		fn(t, mosquittoBroker{m})
	})
}

// retainedOn returns what the broker at url retains on tp (nil: nothing), read with a fresh
// operator session of dir.
func retainedOn(t *testing.T, dir, url, tp string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	var mu sync.Mutex
	var got []byte
	op, err := mustOpen(t, dir).Dial(ctx, fleet.OperatorOptions{Broker: url, Subscriptions: []string{tp}, OnMessage: func(_ string, b []byte) {
		mu.Lock()
		got = bytes.Clone(b)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	if err := op.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

// The runbook after a breach that reached the broker's key, on both brokers: replace broker,
// keys rotate --retire-brokers, breach --keyset. The breach refuses, publishing nothing, while
// the broker still presents the old certificate, and goes through once it presents the new
// one. Then fleetctl itself, and the signer, refuse a broker presenting the old certificate
// (whoever holds its key), saying so.
func TestRetiringABrokerCertificate(t *testing.T) {
	base, _ := initOldFleet(t)
	old := serverPair(t, base)
	forEachFloorBroker(t, base, old, func(t *testing.T, b floorBroker) {
		// Each broker's run changes the fleet directory: it works on a copy of its own.
		dir := filepath.Join(t.TempDir(), "fleet")
		if out, err := exec.Command("cp", "-a", base, dir).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, out)
		}
		url := b.URL()
		mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-1")
		notice := retainedOn(t, dir, url, topic.FleetDesired("3f"))
		if len(notice) == 0 {
			t.Fatal("no retained breach notice after breach INC-1")
		}
		// A signer serving through the broker as it is now, key set v1 in force.
		serveOut, serveErr := start(t, "serve", "--dir", dir, "--broker", url, "--name", "floor")
		serveOut.waitFor(t, `signer "floor" serving`)

		mustRun(t, "replace", "--dir", dir, "broker")
		path, errOut, err := run(t, "keys", "rotate", "--dir", dir, "--retire-brokers")
		if err != nil {
			t.Fatalf("keys rotate --retire-brokers: %v\n%s", err, errOut)
		}
		path = strings.TrimSpace(path)

		_, errOut, err = run(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-2", "--keyset", path)
		oldSerial := registry.SerialHex(old.Leaf.SerialNumber)
		if err == nil || !errors.Is(err, certs.ErrRetiredBroker) || !strings.Contains(err.Error(), "serial "+oldSerial) ||
			!strings.Contains(err.Error(), "restart the broker") || !strings.Contains(err.Error(), "nothing was published") {
			t.Fatalf("breach --keyset through the broker presenting the retired certificate: %v\n%s", err, errOut)
		}
		if got := retainedOn(t, dir, url, topic.FleetDesired("3f")); !bytes.Equal(got, notice) {
			t.Fatal("the refused breach changed the retained breach notice")
		}
		if got := retainedOn(t, dir, url, topic.FleetKeySet); got != nil {
			t.Fatalf("the refused breach published a key set on %s", topic.FleetKeySet)
		}
		if v := mustOpen(t, dir).KeySet().Version; v != 1 {
			t.Fatalf("the refused breach put key set v%d in force", v)
		}

		b.Present(t, serverPair(t, dir))
		out, errOut, err := run(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-2", "--keyset", path)
		if err != nil || !strings.Contains(out, "key set v2 published and in force") {
			t.Fatalf("breach --keyset through the broker presenting the new certificate: %v\n%s%s", err, out, errOut)
		}
		// --broker is not the fleet's URL, which the cameras use: only the broker at --broker
		// was seen to present the new certificate, and breach says so.
		if !strings.Contains(errOut, "make sure every broker there presents the new certificate") {
			t.Errorf("breach --keyset through --broker %s, not the fleet's URL, gave no warning:\n%s", url, errOut)
		}

		// Whoever holds the old key poses as the broker: fleetctl refuses it, and says why.
		b.Present(t, old)
		_, errOut, err = run(t, "status", "--dir", dir, "--broker", url)
		if !errors.Is(err, certs.ErrRetiredBroker) || !strings.Contains(err.Error(), "serial "+oldSerial) || !strings.Contains(err.Error(), "restart the broker with the fleet directory's new broker/server.crt") {
			t.Fatalf("status against a broker presenting the retired certificate: %v\n%s", err, errOut)
		}
		// The signer, which started under key set v1, refuses it from its next connection.
		serveErr.waitFor(t, `certs: broker certificate retired by the key set: serial `+oldSerial)
	})
}

// fleetctl replace broker gives the broker a new key and certificate for the same names; the
// old key is not the new certificate's. A stop between writing the key and the certificate
// leaves a pair the next load repairs.
func TestReplaceBroker(t *testing.T) {
	dir, _ := initOldFleet(t)
	old := serverPair(t, dir)
	out := mustRun(t, "replace", "--dir", dir, "broker")
	for _, want := range []string{"fleetctl mosquitto-config", "fleetctl keys rotate --dir " + dir + " --retire-brokers", "fleetctl breach --dir " + dir + " --incident ID --keyset FILE"} {
		if !strings.Contains(out, want) {
			t.Errorf("replace broker does not say %q:\n%s", want, out)
		}
	}
	cur := serverPair(t, dir)
	if cur.Leaf.SerialNumber.Cmp(old.Leaf.SerialNumber) == 0 {
		t.Fatal("replace broker kept the serial")
	}
	if cur.Leaf.Subject.CommonName != old.Leaf.Subject.CommonName || !slices.Equal(cur.Leaf.DNSNames, old.Leaf.DNSNames) ||
		!slices.EqualFunc(cur.Leaf.IPAddresses, old.Leaf.IPAddresses, net.IP.Equal) {
		t.Fatalf("replace broker changed the names: %q %v %v, was %q %v %v", cur.Leaf.Subject.CommonName, cur.Leaf.DNSNames, cur.Leaf.IPAddresses,
			old.Leaf.Subject.CommonName, old.Leaf.DNSNames, old.Leaf.IPAddresses)
	}
	if certs.SamePublicKey(cur.Leaf, old.PrivateKey.(crypto.Signer)) {
		t.Fatal("the old key still matches the new broker certificate")
	}
	if !cur.Leaf.NotBefore.After(old.Leaf.NotBefore) {
		t.Fatalf("the new certificate is not newer: %v, was %v", cur.Leaf.NotBefore, old.Leaf.NotBefore)
	}
	// A stop after the new key was written and before its certificate: the pair does not
	// match, and the next load issues a certificate for the key kept, with the same names.
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteKeyFile(filepath.Join(dir, "broker", "server.key"), key); err != nil {
		t.Fatal(err)
	}
	repaired := serverPair(t, dir)
	if !slices.Equal(repaired.Leaf.DNSNames, old.Leaf.DNSNames) || repaired.Leaf.SerialNumber.Cmp(cur.Leaf.SerialNumber) == 0 {
		t.Fatalf("a half-written replacement was not repaired: %v %s", repaired.Leaf.DNSNames, repaired.Leaf.SerialNumber)
	}
}

// keys rotate carries the broker floor of the set in force forward; --retire-brokers makes it
// the NotBefore of the fleet directory's broker certificate, and is refused while that
// certificate is not newer than the floor.
func TestKeysRotateBrokerFloor(t *testing.T) {
	dir, _ := initOldFleet(t)
	mustRun(t, "replace", "--dir", dir, "broker")
	first := serverPair(t, dir).Leaf.NotBefore.Unix()
	install := func(path string) *certs.KeySet {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f := mustOpen(t, dir)
		if err := f.InstallKeySet(b); err != nil {
			t.Fatal(err)
		}
		return f.KeySet()
	}
	path, errOut, err := run(t, "keys", "rotate", "--dir", dir, "--retire-brokers")
	if err != nil {
		t.Fatalf("keys rotate --retire-brokers: %v\n%s", err, errOut)
	}
	if ks := install(strings.TrimSpace(path)); ks.BrokerNotBefore != first {
		t.Fatalf("key set v%d floor %d, want the broker certificate's NotBefore %d", ks.Version, ks.BrokerNotBefore, first)
	}
	if !strings.Contains(errOut, "retires every broker certificate issued before "+time.Unix(first, 0).UTC().Format(time.RFC3339)) {
		t.Errorf("keys rotate does not say which broker certificates the set retires:\n%s", errOut)
	}

	_, errOut, err = run(t, "keys", "rotate", "--dir", dir, "--retire-brokers")
	if err == nil || !strings.Contains(err.Error(), "run fleetctl replace broker first") {
		t.Fatalf("keys rotate --retire-brokers with no newer broker certificate: %v\n%s", err, errOut)
	}
	path, errOut, err = run(t, "keys", "rotate", "--dir", dir)
	if err != nil {
		t.Fatalf("keys rotate: %v\n%s", err, errOut)
	}
	if ks := install(strings.TrimSpace(path)); ks.BrokerNotBefore != first {
		t.Fatalf("key set v%d floor %d: keys rotate did not carry the floor %d forward", ks.Version, ks.BrokerNotBefore, first)
	}
	if !strings.Contains(errOut, "carried forward") {
		t.Errorf("keys rotate does not say it carried the floor forward:\n%s", errOut)
	}
}

// fleetctl check fails when the key set in force retires the broker certificate the fleet
// directory keeps (every client would refuse the broker), and warns when the key set waiting
// to be published would.
func TestCheckFailsOnARetiredBrokerCertificate(t *testing.T) {
	dir, _ := initOldFleet(t)
	crt, key := filepath.Join(dir, "broker", "server.crt"), filepath.Join(dir, "broker", "server.key")
	oldCrt, err := os.ReadFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	oldKey, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, "replace", "--dir", dir, "broker")
	path := strings.TrimSpace(mustRun(t, "keys", "rotate", "--dir", dir, "--retire-brokers"))
	// A broker certificate older than the floor back in the directory (a copy restored from
	// before the replacement).
	if err := os.WriteFile(crt, oldCrt, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	line, err := checkLine(t, dir, "broker floor")
	wantStatus(t, line, "WARN", "not published yet")
	if err != nil {
		t.Fatalf("check with a pending set retiring the broker certificate: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := mustOpen(t, dir).InstallKeySet(b); err != nil {
		t.Fatal(err)
	}
	line, err = checkLine(t, dir, "broker floor")
	wantStatus(t, line, "FAIL", "key set v2 in force retires broker/server.crt")
	if !errors.Is(err, cli.ErrCheckFailed) {
		t.Fatalf("check with the broker certificate retired: %v", err)
	}
}

// A broker certificate issued on a machine whose clock ran ahead would make a floor in the
// future, retiring every broker certificate until then: keys rotate --retire-brokers refuses it.
func TestKeysRotateRefusesAFloorInTheFuture(t *testing.T) {
	dir, f := initOldFleet(t)
	k, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ahead, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleServer, Name: "camagent broker", PublicKey: k.Public(), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Now: time.Now().Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteKeyFile(filepath.Join(dir, "broker", "server.key"), k); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "broker", "server.crt"), certs.EncodeCertPEM(ahead), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := run(t, "keys", "rotate", "--dir", dir, "--retire-brokers")
	if err == nil || !strings.Contains(err.Error(), "check the clocks") {
		t.Fatalf("keys rotate --retire-brokers with a broker certificate valid only from tomorrow: %v\n%s", err, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "keysets", fleet.PendingKeySetName(2))); err == nil {
		t.Fatal("a key set was written all the same")
	}
}
