package broker_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net/url"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// v5Client speaks MQTT 5 packet by packet: paho's Go client speaks 3.1.1 only, and the
// broker must hold MQTT 5 clients to the same limits.
type v5Client struct {
	t    *testing.T
	conn *tls.Conn
	r    *bufio.Reader
}

// dialV5 connects id over TLS with an MQTT 5 CONNECT carrying props and returns the client
// and the CONNACK.
func dialV5(t *testing.T, addr string, conf *tls.Config, id string, props packets.Properties) (*v5Client, packets.Packet) {
	t.Helper()
	u, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, conf)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Host, err)
	}
	c := &v5Client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 5,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: id,
			Keepalive:        30,
		},
		Properties: props,
	})
	return c, c.read("CONNACK")
}

func (c *v5Client) write(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = 5 // the encoders write properties only for MQTT 5
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	default:
		c.t.Fatalf("v5Client cannot write packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *v5Client) read(what string) packets.Packet {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(mqtttest.ClientTimeout))
	var fh packets.FixedHeader
	b, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
	if err := fh.Decode(b); err != nil {
		c.t.Fatal(err)
	}
	if fh.Remaining, _, err = packets.DecodeLength(c.r); err != nil {
		c.t.Fatal(err)
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	default:
		c.t.Fatalf("waiting for %s: got packet type %d", what, fh.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return pk
}

// An MQTT 5 client may change its session expiry interval in its DISCONNECT (MQTT 5.0
// section 3.14.2.2.2), but not beyond the broker's Config.SessionExpiry: otherwise any
// client could keep its session, and the messages queued for it, for 136 years, which is
// what the cap is there to prevent.
func TestAnMQTT5DisconnectCannotOutliveTheSessionExpiry(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cert := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	var logs logtest.Buffer
	b := startBroker(t, pki, t.TempDir(), 2*time.Second, &logs)

	c, ack := dialV5(t, b.URL(), pki.ClientTLS(t, cert), "cam-a", packets.Properties{
		SessionExpiryInterval: 1, SessionExpiryIntervalFlag: true,
	})
	if ack.ReasonCode != packets.CodeSuccess.Code {
		t.Fatalf("CONNECT answered with reason %#x", ack.ReasonCode)
	}
	if n := b.Sessions(); n != 1 {
		t.Fatalf("the broker keeps %d sessions with cam-a connected, want 1", n)
	}
	c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
		Properties: packets.Properties{
			SessionExpiryInterval: 0xFFFFFFFF, SessionExpiryIntervalFlag: true,
		},
	})
	waitSessions(t, b, 0, 15*time.Second, "cam-a's session, given 2^32-1 s in its DISCONNECT, expired 2 s after it left")
}

// Topic aliases (MQTT 5.0 section 3.3.2.3.4) are stored per connection before any ACL check,
// up to the server's Topic Alias Maximum: at mochi's default, 65535 topics of up to 64 KiB
// each that any client with a certificate could pin in the broker's memory. No fleet client
// uses them, so the broker allows none.
func TestTheBrokerAllowsNoTopicAliases(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	cert := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	var logs logtest.Buffer
	b := startBroker(t, pki, t.TempDir(), time.Hour, &logs)

	c, ack := dialV5(t, b.URL(), pki.ClientTLS(t, cert), "cam-a", packets.Properties{})
	if ack.ReasonCode != packets.CodeSuccess.Code {
		t.Fatalf("CONNECT answered with reason %#x", ack.ReasonCode)
	}
	if ack.Properties.TopicAliasMaximum != 0 {
		t.Errorf("CONNACK offers %d topic aliases, want none", ack.Properties.TopicAliasMaximum)
	}
	c.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   "dev/cam-a/up/state",
		Properties:  packets.Properties{TopicAlias: 1, TopicAliasFlag: true},
		Payload:     []byte("{}"),
	})
	if d := c.read("DISCONNECT"); d.ReasonCode != packets.ErrTopicAliasInvalid.Code {
		t.Fatalf("a PUBLISH with a topic alias was answered with DISCONNECT reason %#x, want %#x", d.ReasonCode, packets.ErrTopicAliasInvalid.Code)
	}
}
