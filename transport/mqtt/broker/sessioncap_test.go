package broker_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// A non-device identity may hold several sessions by varying the "~suffix" of its client id,
// but no more than Config.MaxSessionsPerIdentity: a stolen operator or viewer certificate must
// not make the broker keep any number of persistent sessions, each with its subscriptions and
// its queue. Past the cap a new session is refused with "server unavailable" (MQTT 5: "quota
// exceeded"); a reconnection to a session the broker keeps, or the take-over of a live one, is
// never refused; a clean session that ends and a persistent one that expires free their slot.
func TestAnIdentityHoldsNoMoreSessionsThanTheCap(t *testing.T) {
	const limit = 3
	for _, role := range []certs.Role{certs.RoleOperator, certs.RoleViewer} {
		t.Run("a "+string(role)+" identity is held to the cap", func(t *testing.T) {
			pki := mqtttest.NewPKI(t)
			cert := pki.ClientCert(t, role, "alice")
			identity := string(role) + ":alice"
			var logs logtest.Buffer
			b, err := broker.New(broker.Config{
				Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), DataDir: t.TempDir(),
				SessionExpiry: 2 * time.Second, MaxSessionsPerIdentity: limit,
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			dial := func(suffix string, clean bool) (paho.Client, error) {
				t.Helper()
				opts := mqtttest.ClientOptions(urlBroker(b.URL()), pki.ClientTLS(t, cert), identity+"~"+suffix).SetCleanSession(clean)
				return mqtttest.TryConnect(t, opts)
			}
			mustDial := func(suffix string, clean bool) paho.Client {
				t.Helper()
				c, err := dial(suffix, clean)
				if err != nil {
					t.Fatalf("session %s: %v", suffix, err)
				}
				return c
			}
			refused := func(suffix, when string) {
				t.Helper()
				if _, err := dial(suffix, false); !errors.Is(err, pahopackets.ErrorRefusedServerUnavailable) {
					t.Fatalf("%s: a new session %s: %v, want CONNACK server unavailable", when, suffix, err)
				}
			}

			mustDial("a", false)                 // persistent, connected
			clean := mustDial("b", true)         // clean, connected
			mustDial("c", false).Disconnect(250) // persistent, kept while away
			waitSessions(t, b, limit, 5*time.Second, "a and b connected, c kept")
			refused("d", "with a and b connected and c kept")
			if got := logs.String(); !strings.Contains(got, "identity="+identity) || !strings.Contains(got, "sessions=3 cap=3") {
				t.Errorf("the refusal was not logged with the identity, the count and the cap:\n%s", got)
			}
			// MQTT 5 says why.
			v5, ack := dialV5(t, b.URL(), pki.ClientTLS(t, cert), identity+"~v5", packets.Properties{})
			v5.conn.Close()
			if ack.ReasonCode != packets.ErrQuotaExceeded.Code {
				t.Errorf("MQTT 5 CONNECT past the cap answered with reason %#x, want %#x", ack.ReasonCode, packets.ErrQuotaExceeded.Code)
			}
			if n := b.SessionsRefused(); n != 2 {
				t.Errorf("SessionsRefused = %d, want 2", n)
			}

			// Reconnecting to the kept session, and taking over the live one, are never refused.
			c := mustDial("c", false)
			mustDial("a", false)
			refused("d", "after c came back and a was taken over")

			// A clean session that ends frees its slot.
			clean.Disconnect(250)
			waitSessions(t, b, limit-1, 5*time.Second, "b's clean session ended")
			mustDial("d", false)
			refused("e", "with a, c and d")

			// So does a kept session that expires.
			c.Disconnect(250)
			waitSessions(t, b, limit-1, 15*time.Second, "c's session expired 2 s after it left")
			mustDial("e", false)
			refused("f", "with a, d and e")
		})
	}
}

// A device's client id is its identity, so it holds one session at most, and reconnecting
// takes it over: the cap never refuses a device, even at 1.
func TestADeviceAlwaysReconnectsUnderTheCap(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), MaxSessionsPerIdentity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range 3 {
		connect(t, urlBroker(b.URL()), pki, cam, nil)
	}
	if n := b.SessionsRefused(); n != 0 {
		t.Fatalf("SessionsRefused = %d", n)
	}
}
