package e2e

import (
	"os"
	"testing"

	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// fleetctl runs one fleetctl command in this process and returns its standard output.
func fleetctl(t testing.TB, args ...string) string {
	t.Helper()
	return fleettest.Run(t, args...)
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

// forEachFleetBroker runs fn against the real `fleetctl broker` (embedded) and a real Mosquitto,
// each with a `fleetctl serve` signer. bootstrap lists the devices whose bootstrap identity the
// Mosquitto ACL must know.
func forEachFleetBroker(t *testing.T, fn func(t *testing.T, e *env), bootstrap ...string) {
	t.Run("embedded", func(t *testing.T) {
		f, _ := newFleet(t)
		e := &env{name: "embedded", f: f, url: fleettest.StartBroker(t, f, "--revocation-poll", "100ms"), applyCRL: func(testing.TB) {}}
		fleettest.StartSigner(t, f, e.url, "--log-level", "warn")
		fn(t, e)
	})
	t.Run("mosquitto", func(t *testing.T) {
		f, pki := newFleet(t)
		ids := []string{"operator:" + fleet.DefaultOperator, "signer:" + fleet.DefaultSigner, "viewer:test"}
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
			m.RestartWithCRL(t, b)
		}}
		fleettest.StartSigner(t, f, e.url, "--log-level", "warn")
		fn(t, e)
	})
}
