package fleet_test

import (
	"context"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// A reply answers a command only when it comes from the device the command went to: the ACL
// lets every device publish replies on its own topic, and one that learnt or guessed the
// sequence of a command to another camera (sequences are the operator's clock) must not be
// able to answer `fleetctl ping` for it, reporting as alive, with its serial and firmware, a
// camera that is off or taken.
func TestAReplyFromAnotherDeviceDoesNotAnswerACommand(t *testing.T) {
	f := newFleet(t)
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()

	target, err := fleettest.TryConnect(t, f, url, fleettest.Issue(t, f, certs.RoleDevice, "cam-aaaa"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := fleettest.TryConnect(t, f, url, fleettest.Issue(t, f, certs.RoleDevice, "cam-bbbb"))
	if err != nil {
		t.Fatal(err)
	}
	cmds := make(chan []byte, 1)
	if tok := target.Client.Subscribe(topic.DeviceCmd("cam-aaaa"), 1, func(_ paho.Client, m paho.Message) { cmds <- m.Payload() }); !tok.WaitTimeout(fleettest.Timeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	reply := func(s *fleettest.Session, id string, seq uint64, fw string) {
		t.Helper()
		b, err := wire.Encode(&wire.Reply{V: wire.Version, Seq: seq, Type: "ping", OK: true, Status: &wire.Status{Firmware: fw, CertSerial: "01"}})
		if err != nil {
			t.Fatal(err)
		}
		if tok := s.Client.Publish(topic.Reply(id), 1, false, b); !tok.WaitTimeout(fleettest.Timeout) || tok.Error() != nil {
			t.Fatalf("publish reply: %v", tok.Error())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: url})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	type result struct {
		r   *wire.Reply
		err error
	}
	got := make(chan result, 1)
	go func() {
		r, _, err := op.Ping(ctx, "cam-aaaa")
		got <- result{r, err}
	}()
	var env []byte
	select {
	case env = <-cmds:
	case <-ctx.Done():
		t.Fatal("the ping never reached cam-aaaa")
	}
	c, _, err := certs.OpenCommand(f.KeySet().CommandVerifier(), env)
	if err != nil {
		t.Fatal(err)
	}
	reply(other, "cam-bbbb", c.Seq, "forged")   // cam-bbbb answers for cam-aaaa
	reply(target, "cam-aaaa", c.Seq, "genuine") // then cam-aaaa itself
	res := <-got
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.r.Status.Firmware != "genuine" {
		t.Fatalf("ping cam-aaaa returned the reply cam-bbbb published (fw %q)", res.r.Status.Firmware)
	}
}
