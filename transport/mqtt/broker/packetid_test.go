package broker_test

import (
	"crypto/tls"
	"net/url"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// rawClient speaks MQTT 3.1.1 packet by packet, so a test can choose packet ids and leave a
// delivery unacknowledged, which paho does not let it do.
type rawClient struct {
	t    *testing.T
	conn *tls.Conn
}

func dialRaw(t *testing.T, b mqtttest.Broker, conf *tls.Config, id string) *rawClient {
	t.Helper()
	u, err := url.Parse(b.URL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, conf)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Host, err)
	}
	c := &rawClient{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	cp := pahopackets.NewControlPacket(pahopackets.Connect).(*pahopackets.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.ClientIdentifier, cp.CleanSession, cp.Keepalive = id, false, 30
	c.write(cp)
	if ack, ok := c.read("CONNACK").(*pahopackets.ConnackPacket); !ok || ack.ReturnCode != 0 {
		t.Fatalf("%s: CONNECT answered with %v", id, ack)
	}
	return c
}

func (c *rawClient) write(p pahopackets.ControlPacket) {
	c.t.Helper()
	if err := p.Write(c.conn); err != nil {
		c.t.Fatalf("write %s: %v", p, err)
	}
}

// read reads one packet; what says what the test waits for, for the failure message.
func (c *rawClient) read(what string) pahopackets.ControlPacket {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(mqtttest.ClientTimeout))
	p, err := pahopackets.ReadPacket(c.conn)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
	return p
}

// await reads packets until one of type T, which it returns; what names it for a failure.
func await[T pahopackets.ControlPacket](c *rawClient, what string) T {
	c.t.Helper()
	for {
		if p, ok := c.read(what).(T); ok {
			return p
		}
	}
}

// TestAClientPacketIDDoesNotCancelADeliveryInFlight: packet ids are per direction (MQTT
// 2.2.1), so a device publishing with the id of a command the broker has not yet seen
// acknowledged must not make the broker forget that command. mochi v2.7.9 did (upstream
// #519; third_party/mochi-server carries the fix): the command was neither resent after the
// device reconnected nor kept across a broker restart, a lost command (issue 7).
func TestAClientPacketIDDoesNotCancelADeliveryInFlight(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	oper := pki.ClientCert(t, certs.RoleOperator, "alice")
	for _, restart := range []bool{false, true} {
		name := "reconnect"
		if restart {
			name = "broker restart"
		}
		t.Run(name, func(t *testing.T) {
			mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
				dev := dialRaw(t, b, pki.ClientTLS(t, cam), "cam-a")
				sub := pahopackets.NewControlPacket(pahopackets.Subscribe).(*pahopackets.SubscribePacket)
				sub.MessageID, sub.Topics, sub.Qoss = 1, []string{"dev/cam-a/down/cmd"}, []byte{1}
				dev.write(sub)
				if ack, ok := dev.read("SUBACK").(*pahopackets.SubackPacket); !ok || len(ack.ReturnCodes) != 1 || ack.ReturnCodes[0] != 1 {
					t.Fatalf("SUBSCRIBE answered with %v", ack)
				}

				op := connect(t, b, pki, oper, nil)
				publish(t, op, "dev/cam-a/down/cmd", "reboot")
				cmd := await[*pahopackets.PublishPacket](dev, "the command") // and do not acknowledge it
				if string(cmd.Payload) != "reboot" || cmd.Qos != 1 {
					t.Fatalf("device got %q at QoS %d", cmd.Payload, cmd.Qos)
				}

				// The device publishes with the same id, from its own id space.
				up := pahopackets.NewControlPacket(pahopackets.Publish).(*pahopackets.PublishPacket)
				up.TopicName, up.Qos, up.MessageID, up.Payload = "dev/cam-a/up/state", 1, cmd.MessageID, []byte("{}")
				dev.write(up)
				if ack := await[*pahopackets.PubackPacket](dev, "PUBACK of the state publish"); ack.MessageID != up.MessageID {
					t.Fatalf("PUBACK for id %d, want %d", ack.MessageID, up.MessageID)
				}
				dev.conn.Close()
				if restart {
					b.Restart(t)
				}

				again := dialRaw(t, b, pki.ClientTLS(t, cam), "cam-a")
				got := await[*pahopackets.PublishPacket](again, "the unacknowledged command, resent")
				if string(got.Payload) != "reboot" || got.TopicName != "dev/cam-a/down/cmd" {
					t.Fatalf("after reconnecting the device got %q on %s, want the unacknowledged command", got.Payload, got.TopicName)
				}
				if !got.Dup {
					t.Errorf("the resent command has DUP unset")
				}
			}, mqtttest.WithIdentities("operator:alice"))
		})
	}
}

// TestQoS2IsGrantedAsQoS1: the embedded broker offers at most QoS 1 (the fleet uses no more),
// so mochi's QoS 2 bookkeeping, which shares the server's packet-id table, never runs.
func TestQoS2IsGrantedAsQoS1(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	b := mqtttest.StartEmbedded(t, pki)
	dev := dialRaw(t, b, pki.ClientTLS(t, cam), "cam-a")
	sub := pahopackets.NewControlPacket(pahopackets.Subscribe).(*pahopackets.SubscribePacket)
	sub.MessageID, sub.Topics, sub.Qoss = 1, []string{"dev/cam-a/down/cmd"}, []byte{2}
	dev.write(sub)
	ack, ok := dev.read("SUBACK").(*pahopackets.SubackPacket)
	if !ok || len(ack.ReturnCodes) != 1 || ack.ReturnCodes[0] != 1 {
		t.Fatalf("SUBSCRIBE at QoS 2 answered with %v, want QoS 1 granted", ack)
	}
}

// TestASubscribeWithTheIDOfADeliveryInFlightIsGranted: v2.7.9 answered such a SUBSCRIBE with
// 0x91 (packet identifier in use), comparing the client's id with the server's deliveries;
// a 3.1.1 client could take that for a grant and go without its subscription.
func TestASubscribeWithTheIDOfADeliveryInFlightIsGranted(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	oper := pki.ClientCert(t, certs.RoleOperator, "alice")
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		dev := dialRaw(t, b, pki.ClientTLS(t, cam), "cam-a")
		sub := pahopackets.NewControlPacket(pahopackets.Subscribe).(*pahopackets.SubscribePacket)
		sub.MessageID, sub.Topics, sub.Qoss = 1, []string{"dev/cam-a/down/cmd"}, []byte{1}
		dev.write(sub)
		dev.read("SUBACK")
		publish(t, connect(t, b, pki, oper, nil), "dev/cam-a/down/cmd", "reboot")
		cmd := await[*pahopackets.PublishPacket](dev, "the command") // not acknowledged

		again := pahopackets.NewControlPacket(pahopackets.Subscribe).(*pahopackets.SubscribePacket)
		again.MessageID, again.Topics, again.Qoss = cmd.MessageID, []string{"fleet/down/#"}, []byte{1}
		dev.write(again)
		if ack := await[*pahopackets.SubackPacket](dev, "SUBACK"); ack.MessageID != cmd.MessageID || len(ack.ReturnCodes) != 1 || ack.ReturnCodes[0] != 1 {
			t.Fatalf("SUBSCRIBE with id %d answered with id %d codes %v, want QoS 1 granted", cmd.MessageID, ack.MessageID, ack.ReturnCodes)
		}
		un := pahopackets.NewControlPacket(pahopackets.Unsubscribe).(*pahopackets.UnsubscribePacket)
		un.MessageID, un.Topics = cmd.MessageID, []string{"fleet/down/#"}
		dev.write(un)
		if ack := await[*pahopackets.UnsubackPacket](dev, "UNSUBACK"); ack.MessageID != cmd.MessageID {
			t.Fatalf("UNSUBACK for id %d, want %d", ack.MessageID, cmd.MessageID)
		}
	}, mqtttest.WithIdentities("operator:alice"))
}
