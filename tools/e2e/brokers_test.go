package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// fleetctl runs one fleetctl command in this process and returns its standard output.
func fleetctl(t testing.TB, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cli.Run(ctx, args, &out, &errb); err != nil {
		t.Fatalf("fleetctl %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errb.String())
	}
	return out.String()
}

// background runs a long-lived fleetctl command (broker, serve) until the test ends.
func background(t testing.TB, args ...string) {
	t.Helper()
	var out syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, args, &out, &out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("fleetctl %v: %v", args, err)
		}
		if t.Failed() {
			t.Logf("fleetctl %v output:\n%s", args, out.String())
		}
	})
}

// syncBuf is a bytes.Buffer safe for concurrent writers.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a fleet with its broker and signer running.
type env struct {
	name string
	f    *fleet.Fleet
	url  string
	// applyCRL makes the broker refuse what the signer revoked: nothing to do for the embedded
	// broker (it reads the registry); Mosquitto reads its crlfile only when it starts.
	applyCRL func(t testing.TB)
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitTLS waits until something accepts a TLS handshake at addr.
func waitTLS(t testing.TB, f *fleet.Fleet, addr string) {
	cert, _ := f.OperatorCertificate()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := tls.Dial("tcp", addr, certs.ClientTLSConfig(f.Pool, "127.0.0.1", certs.NewHolder(cert)))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker at %s not up: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forEachFleetBroker runs fn against the real `fleetctl broker` (embedded) and a real Mosquitto,
// each with a `fleetctl serve` signer. bootstrap lists the devices whose bootstrap identity the
// Mosquitto ACL must know.
func forEachFleetBroker(t *testing.T, fn func(t *testing.T, e *env), bootstrap ...string) {
	t.Run("embedded", func(t *testing.T) {
		f, _ := newFleet(t)
		addr := freePort(t)
		background(t, "broker", "--dir", f.Dir, "--listen", addr, "--revocation-poll", "100ms")
		waitTLS(t, f, addr)
		e := &env{name: "embedded", f: f, url: "mqtts://" + addr, applyCRL: func(testing.TB) {}}
		background(t, "serve", "--dir", f.Dir, "--broker", e.url, "--log-level", "warn")
		fn(t, e)
	})
	t.Run("mosquitto", func(t *testing.T) {
		f, pki := newFleet(t)
		ids := []string{"operator:" + fleet.DefaultOperator, "signer:" + fleet.DefaultSigner}
		for _, id := range bootstrap {
			ids = append(ids, "bootstrap:"+id)
		}
		fleetctl(t, "crl", "--dir", f.Dir)
		crlPEM, err := os.ReadFile(f.CRLPath())
		if err != nil {
			t.Fatal(err)
		}
		m := mqtttest.StartMosquitto(t, pki, mqtttest.WithIdentities(ids...), mqtttest.WithCRL(crlPEM))
		e := &env{name: "mosquitto", f: f, url: m.URL(), applyCRL: func(t testing.TB) {
			// What an operator does: write the CRL from the registry and restart Mosquitto.
			fleetctl(t, "crl", "--dir", f.Dir)
			b, err := os.ReadFile(f.CRLPath())
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(m.Dir(), "crl.pem"), b, 0o644); err != nil {
				t.Fatal(err)
			}
			m.Restart(t)
		}}
		background(t, "serve", "--dir", f.Dir, "--broker", e.url, "--log-level", "warn")
		fn(t, e)
	})
}
