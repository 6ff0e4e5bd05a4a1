package mqtttest

import (
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// ClientTimeout bounds every wait of the paho helpers below.
const ClientTimeout = 10 * time.Second

// ClientOptions returns paho options for an MQTT 3.1.1 client of b: TLS from tlsConf (see
// PKI.ClientTLS), the given client ID, a persistent session (CleanSession false, as devices
// use), no automatic reconnection or connect retry (a test says when to connect), handlers
// called in arrival order (paho's OrderMatters, which tests that rely on a positive control
// need), and ClientTimeout for connecting and writing. Adjust them before Connect.
func ClientOptions(b Broker, tlsConf *tls.Config, clientID string) *paho.ClientOptions {
	return paho.NewClientOptions().
		AddBroker(b.URL()).
		SetClientID(clientID).
		SetTLSConfig(tlsConf).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(ClientTimeout).
		SetWriteTimeout(ClientTimeout)
}

// TryConnect connects a client made from opts and returns the connection's error, if any: use
// it for connections that must be refused. A client that connected is disconnected when the
// test ends.
func TryConnect(t testing.TB, opts *paho.ClientOptions) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(ClientTimeout) {
		c.Disconnect(0)
		return nil, fmt.Errorf("mqtttest: connect: no answer in %v", ClientTimeout)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// Connect connects a client made from opts and fails the test if that fails.
func Connect(t testing.TB, opts *paho.ClientOptions) paho.Client {
	t.Helper()
	c, err := TryConnect(t, opts)
	if err != nil {
		t.Fatalf("mqtttest: connect %s: %v", opts.ClientID, err)
	}
	return c
}

// Wait waits for tok with ClientTimeout and fails the test if it times out or failed.
func Wait(t testing.TB, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(ClientTimeout) {
		t.Fatalf("mqtttest: %s: no answer in %v", what, ClientTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("mqtttest: %s: %v", what, err)
	}
}

// Message is a received publish, copied out of paho.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
}

// Inbox collects the messages paho hands a handler, in arrival order.
type Inbox struct {
	C chan Message
}

// NewInbox returns an Inbox buffering up to 1024 messages; paho's handler blocks beyond.
func NewInbox() *Inbox { return &Inbox{C: make(chan Message, 1024)} }

// Handle is a paho.MessageHandler.
func (in *Inbox) Handle(_ paho.Client, m paho.Message) {
	in.C <- Message{
		Topic:    m.Topic(),
		Payload:  append([]byte(nil), m.Payload()...),
		QoS:      m.Qos(),
		Retained: m.Retained(),
	}
}

// Next returns the next message, failing the test if none arrives within ClientTimeout.
func (in *Inbox) Next(t testing.TB) Message {
	t.Helper()
	timeout := time.NewTimer(ClientTimeout)
	defer timeout.Stop()
	select {
	case m := <-in.C:
		return m
	case <-timeout.C:
		t.Fatalf("mqtttest: no message in %v", ClientTimeout)
		return Message{}
	}
}
