package e2e

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// restartableBroker is a real broker the test restarts presenting the fleet directory's
// broker certificate as it is then: what an operator does after fleetctl replace broker.
type restartableBroker struct {
	url     string
	restart func(t *testing.T)
}

// startFleetctlBrokerOf runs `fleetctl broker` on f's directory, on a port and data directory
// that survive its restarts.
func startFleetctlBrokerOf(t *testing.T, f *fleet.Fleet) *restartableBroker {
	t.Helper()
	addr, data := fleettest.FreeAddr(t), t.TempDir()
	var (
		mu   sync.Mutex
		stop func()
	)
	start := func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		out := &fleettest.Output{}
		go func() {
			done <- cli.Run(ctx, []string{"broker", "--dir", f.Dir, "--listen", addr, "--data", data, "--revocation-poll", "100ms"}, out, out)
		}()
		mu.Lock()
		stop = func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fleetctl broker: %v\n%s", err, out.String())
			}
		}
		mu.Unlock()
		fleettest.WaitTLS(t, f, addr)
	}
	halt := func() {
		mu.Lock()
		s := stop
		stop = nil
		mu.Unlock()
		if s != nil {
			s()
		}
	}
	t.Cleanup(halt)
	start(t)
	return &restartableBroker{url: "mqtts://" + addr, restart: func(t *testing.T) { halt(); start(t) }}
}

// impostor is a TLS server presenting a stolen broker certificate. It counts the handshakes
// that complete and those the client broke off.
type impostor struct {
	url              string
	accepted, broken atomic.Int64
}

func startImpostor(t *testing.T, f *fleet.Fleet, stolen *tls.Certificate) *impostor {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", certs.ServerTLSConfig(f.Pool, stolen))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	im := &impostor{url: "mqtts://" + ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err != nil {
					im.broken.Add(1)
					return
				}
				// A TLS 1.3 server finishes before the client has checked its certificate:
				// read, so a refusal by the client shows as a broken connection.
				var b [1]byte
				if _, err := c.Read(b[:]); err != nil && !strings.Contains(err.Error(), "timeout") {
					im.broken.Add(1)
					return
				}
				im.accepted.Add(1)
			}()
		}
	}()
	return im
}

// The breach reached the broker's private key. The operator's runbook (fleetctl replace
// broker, restart the broker with the new certificate, keys rotate --retire-brokers, breach
// --keyset) brings the camera onto the new key set, after which a broker presenting the stolen
// certificate, which chains to the fleet CA like any other, gets no connection from the
// camera, while the real broker with its new certificate does. On the embedded broker and on
// Mosquitto.
func TestAStolenBrokerKeyCannotPoseAsTheBrokerAfterTheRunbook(t *testing.T) {
	for _, name := range []string{"embedded", "mosquitto"} {
		t.Run(name, func(t *testing.T) {
			// A fleet made an hour ago: key set floors are whole seconds, and the replaced
			// certificate must be newer than the first by at least one.
			f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Name: "broker key e2e", Now: time.Now().Add(-time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			var b *restartableBroker
			switch name {
			case "embedded":
				b = startFleetctlBrokerOf(t, f)
			case "mosquitto":
				pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
				m := mqtttest.StartMosquitto(t, pki, brokerIdentities)
				present := func(t *testing.T) {
					c, err := f.ServerCertificate()
					if err != nil {
						t.Fatal(err)
					}
					m.RestartWithServerCert(t, c)
				}
				present(t)
				b = &restartableBroker{url: m.URL(), restart: present}
			}
			fleettest.StartSigner(t, f, b.url, "--log-level", "warn")
			dir := enroll(t, f, "cam-0001")
			cam := startAgent(t, dir, b.url, fastRotation)
			cam.waitConnected(t)

			stolen, err := f.ServerCertificate()
			if err != nil {
				t.Fatal(err)
			}
			im := startImpostor(t, f, stolen)
			// Control: the stolen certificate is a good one; only the key set will retire it.
			probe, err := f.OperatorCertificate()
			if err != nil {
				t.Fatal(err)
			}
			if c, err := tls.Dial("tcp", strings.TrimPrefix(im.url, "mqtts://"), certs.ClientTLSConfig(f.Pool, "127.0.0.1", certs.NewHolder(probe))); err != nil {
				t.Fatalf("a client without the floor refuses the stolen certificate: %v", err)
			} else {
				c.Close()
			}

			out := fleetctl(t, "replace", "--dir", f.Dir, "broker")
			if !strings.Contains(out, "--retire-brokers") {
				t.Fatalf("fleetctl replace broker does not say what comes next:\n%s", out)
			}
			ks := strings.TrimSpace(fleetctl(t, "keys", "rotate", "--dir", f.Dir, "--retire-brokers"))
			// Step 2 of the runbook skipped: the broker still presents the old certificate,
			// and fleetctl refuses to cut the fleet off it.
			var stdout, stderr strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err = cli.Run(ctx, []string{"breach", "--dir", f.Dir, "--broker", b.url, "--incident", "BRK-1", "--keyset", ks}, &stdout, &stderr)
			cancel()
			if err == nil || !strings.Contains(err.Error(), "nothing was published") {
				t.Fatalf("breach --keyset through a broker still presenting the retired certificate: %v\n%s%s", err, stdout.String(), stderr.String())
			}

			b.restart(t)
			fleetctl(t, "breach", "--dir", f.Dir, "--broker", b.url, "--incident", "BRK-1", "--keyset", ks)
			waitFor(t, time.Minute, "the camera to rotate under the new key set", func() bool { return cam.Epoch() >= 1 })
			cam.log.WaitFor(t, 10*time.Second, "key set accepted", "version=2")
			cam.stop(t)

			// The camera, pointed at whoever holds the old key (a hijacked name, a rogue
			// access point), never completes a connection to it.
			fooled := startAgent(t, dir, im.url, fastRotation)
			waitFor(t, 30*time.Second, "the camera to try the impostor twice", func() bool { return im.broken.Load()+im.accepted.Load() >= 2 })
			if n := im.accepted.Load(); n != 0 {
				t.Fatalf("the camera completed %d connection(s) to a broker presenting the retired certificate", n)
			}
			if !strings.Contains(fooled.log.Text(), "retired") {
				t.Errorf("the camera's log does not say the broker's certificate is retired:\n%s", fooled.log.Text())
			}
			fooled.stop(t)

			// The real broker, with its new certificate, is still the camera's.
			back := startAgent(t, dir, b.url, fastRotation)
			back.waitConnected(t)
			ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: b.url})
			if err != nil {
				t.Fatal(err)
			}
			defer op.Close()
			r, _, err := op.Ping(ctx, "cam-0001")
			if err != nil || !r.OK || r.Status == nil || r.Status.KeySet != 2 {
				t.Fatalf("ping after the runbook: %+v, %v", r, err)
			}
		})
	}
}
