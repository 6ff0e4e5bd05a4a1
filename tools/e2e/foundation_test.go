package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

func TestPingRoundTrip(t *testing.T) {
	f, pki := newFleet(t)
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		dir := enroll(t, f, "cam-0001")
		a := startAgent(t, dir, b.URL(), nil)
		a.waitConnected(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: b.URL()})
		if err != nil {
			t.Fatal(err)
		}
		defer op.Close()
		r, rtt, err := op.Ping(ctx, "cam-0001")
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK || r.Status == nil || r.Status.CertSerial != a.Certificate().SerialNumber.Text(16) {
			t.Fatalf("reply %+v", r)
		}
		if rtt <= 0 {
			t.Fatalf("rtt %v", rtt)
		}
	}, brokerIdentities)
}

// unsign removes the signature from an envelope.
func unsign(t *testing.T, env []byte) []byte {
	var m map[string]any
	if err := json.Unmarshal(env, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "sig")
	b, _ := json.Marshal(m)
	return b
}

func TestBadCommandsAreRefusedAndTheAgentKeepsServing(t *testing.T) {
	f, pki := newFleet(t)
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		dir := enroll(t, f, "cam-0001")
		a := startAgent(t, dir, b.URL(), nil)
		a.waitConnected(t)
		op := dialReplies(t, f, b.URL())
		now := time.Now()

		// A valid command first, so that it can be replayed.
		good, seq, err := f.SignCommand("ping", "cam-0001", nil, now, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		op.publish(t, "cam-0001", good)
		if r := op.await(t, seq, 20*time.Second); !r.OK {
			t.Fatalf("valid ping refused: %+v", r)
		}

		rogue, _ := certs.NewSigningKey()
		forged, _ := certs.SignCommand(rogue, certs.Command{Type: "ping", Target: "cam-0001", Seq: uint64(now.UnixNano()) + 1e9, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
		expired, _, _ := f.SignCommand("ping", "cam-0001", nil, now.Add(-time.Hour), 5*time.Minute)
		wrongTarget, _, _ := f.SignCommand("ping", "cam-0002", nil, now, time.Minute)
		unsigned, _, _ := f.SignCommand("ping", "cam-0001", nil, now, time.Minute)
		big := `{"v":1,"kid":"k-0123456789abcdef","body":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 20<<10)) + `","sig":""}`
		bad := map[string][]byte{
			"forged":       forged,
			"unsigned":     unsign(t, unsigned),
			"replayed":     good,
			"expired":      expired,
			"wrong target": wrongTarget,
			"oversized":    []byte(big),
			"malformed":    []byte("\x00not json at all"),
		}
		for _, env := range bad {
			op.publish(t, "cam-0001", env)
		}
		// The agent handles its commands in order, so when the next valid ping is answered
		// every bad one before it was seen; none may have been accepted.
		env, seq2, _ := f.SignCommand("ping", "cam-0001", nil, time.Now(), time.Minute)
		op.publish(t, "cam-0001", env)
		r := op.await(t, seq2, 20*time.Second)
		if !r.OK || r.Status.CmdsOK != 2 || r.Status.CmdsRejected != uint64(len(bad)) {
			t.Fatalf("after %d bad commands: %+v; log:\n%s", len(bad), r.Status, a.log.Text())
		}
		for _, reason := range []string{"unknown key id", "signature", "replayed sequence", "expired", "wrong target", "too large", "malformed"} {
			if !strings.Contains(a.log.Text(), reason) {
				t.Errorf("no refusal logged with %q", reason)
			}
		}
	}, brokerIdentities)
}

// A command published while the device is offline is queued by the broker in the device's
// persistent session; it survives a broker restart and is delivered once (R3).
func TestQueuedCommandSurvivesBrokerRestart(t *testing.T) {
	f, pki := newFleet(t)
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		dir := enroll(t, f, "cam-0001")
		a := startAgent(t, dir, b.URL(), nil)
		a.waitConnected(t) // the broker now holds the device's persistent session
		a.stop(t)

		op := dialReplies(t, f, b.URL())
		env, seq, err := f.SignCommand("ping", "cam-0001", nil, time.Now(), 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		op.publish(t, "cam-0001", env)
		b.Restart(t)

		a2 := startAgent(t, dir, b.URL(), nil)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent log:\n%s", a2.log.Text())
			}
		})
		if r := op.await(t, seq, 30*time.Second); !r.OK {
			t.Fatalf("queued ping: %+v", r)
		}
		env2, seq2, _ := f.SignCommand("ping", "cam-0001", nil, time.Now(), time.Minute)
		op.publish(t, "cam-0001", env2)
		r := op.await(t, seq2, 20*time.Second)
		if r.Status.CmdsOK != 2 || r.Status.CmdsRejected != 0 {
			t.Fatalf("queued command not delivered exactly once: %+v; log:\n%s", r.Status, a2.log.Text())
		}
	}, brokerIdentities)
}

// The device pins its fleet CA: a broker with a certificate from another CA is refused.
func TestDeviceRefusesBrokerFromAnotherCA(t *testing.T) {
	f, _ := newFleet(t)
	other := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, other)
	dir := enroll(t, f, "cam-0001")
	a := startAgent(t, dir, b.URL(), nil)
	a.log.WaitFor(t, 20*time.Second, "cannot connect", "certificate signed by unknown authority")
	select {
	case <-a.Connected():
		t.Fatal("connected to a broker of another CA")
	default:
	}
}
