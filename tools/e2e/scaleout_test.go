package e2e

import (
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// Three `fleetctl serve` instances share one fleet's signing load through the shared
// subscription $share/signers/dev/+/up/csr on Mosquitto, as they would on a clustered broker
// (docs/scale-out.md): a breach of 30 devices converges, every certificate is issued exactly
// once, and each instance issued some of them.
func TestScaleOutThreeSignersShareTheSigningLoadOnMosquitto(t *testing.T) {
	const n = 30
	f, pki := newFleet(t)
	fleetctl(t, "crl", "--dir", f.Dir)
	crl, err := os.ReadFile(f.CRLPath())
	if err != nil {
		t.Fatal(err)
	}
	m := mqtttest.StartMosquitto(t, pki, brokerIdentities, mqtttest.WithCRL(crl))
	e := &env{name: "mosquitto", f: f, url: m.URL()}
	names := []string{"signer-a", "signer-b", "signer-c"}
	outs := map[string]*fleettest.Output{}
	for _, name := range names {
		out := fleettest.Background(t, "serve", "--dir", f.Dir, "--broker", e.url, "--name", name, "--log-level", "info")
		out.WaitFor(t, fmt.Sprintf("signer %q serving", name))
		outs[name] = out
	}
	v := viewFleet(t, e)
	pb := dialPingBox(t, e)
	agents, dirs := startFleet(t, e, "cam-scale", n, func(int) string { return e.url })
	epoch := breachNow(t, e, "SCALE-OUT")
	settled(t, v, pb, dirs, epoch, nil, agentLogs(agents))

	issued := regexp.MustCompile(`msg="signer: certificate issued" .*?\bdevice=(\S+)`)
	byDevice := map[string]string{}
	for _, name := range names {
		got := issued.FindAllStringSubmatch(outs[name].String(), -1)
		t.Logf("%s issued %d certificates", name, len(got))
		if len(got) == 0 {
			t.Errorf("%s issued no certificate: the shared subscription did not spread the load", name)
		}
		for _, m := range got {
			if other, dup := byDevice[m[1]]; dup {
				t.Errorf("%s was issued a certificate by %s and by %s for one breach", m[1], other, name)
			}
			byDevice[m[1]] = name
		}
	}
	if len(byDevice) != n {
		t.Errorf("certificates issued to %d devices, want %d", len(byDevice), n)
	}
}
