package signer_test

import (
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/strictjson"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// A signer whose connection ends without it stopping is "lost" at once, by its will, and
// "serving" again as soon as it is back, not at its next periodic word (an hour here).
func TestASignerCutOffIsLostAtOnceAndServingAgainWhenBack(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	cert, err := f.SignerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	topic := signer.PresenceTopic(fleet.SignerClientID(certs.CertIdentity(cert.Leaf), "a"))
	said := make(chan wire.SignerPresence, 16)
	b := mqtttest.StartEmbedded(t, pki, mqtttest.WithOnPublish(func(_, to string, payload []byte, retained bool) {
		var p wire.SignerPresence
		if to == topic && retained && strictjson.Unmarshal(payload, &p) == nil && p.Validate() == nil {
			said <- p
		}
	}))
	next := func(want string) wire.SignerPresence {
		t.Helper()
		select {
		case p := <-said:
			if p.State != want {
				t.Fatalf("presence %+v, want %s", p, want)
			}
			return p
		case <-time.After(fleettest.Timeout):
			t.Fatalf("no presence %q", want)
		}
		return wire.SignerPresence{}
	}
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) { c.PresenceEvery = time.Hour })
	serving := next(wire.SignerServing)

	if n := b.Broker().DisconnectSerial(cert.Leaf.SerialNumber); n != 1 {
		t.Fatalf("the broker cut %d connections of the signer, want 1", n)
	}
	if lost := next(wire.SignerLost); lost.Since != serving.Since {
		t.Errorf("the will says the signer started at %d, it said %d", lost.Since, serving.Since)
	}
	next(wire.SignerServing)

	s.stop()
	next(wire.SignerStopped)
	select {
	case p := <-said:
		t.Errorf("after stopping cleanly, the broker published %+v", p)
	case <-time.After(200 * time.Millisecond):
	}
}
