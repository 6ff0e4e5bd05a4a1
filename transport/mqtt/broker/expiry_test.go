package broker_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.etcd.io/bbolt"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mosquitto"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// startBroker starts a broker on dir that expires sessions after expiry (0: the default) and
// logs to logs.
func startBroker(t *testing.T, pki *mqtttest.PKI, dir string, expiry time.Duration, logs *logtest.Buffer) *broker.Broker {
	t.Helper()
	return startConfigured(t, broker.Config{
		Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), DataDir: dir, SessionExpiry: expiry,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
}

// leaveWithACommandQueued connects device id with a persistent session subscribed to its
// down topics, disconnects it, and has an operator publish a command to it, which the broker
// queues in the session.
func leaveWithACommandQueued(t *testing.T, b *broker.Broker, pki *mqtttest.PKI, id string) {
	t.Helper()
	inbox := mqtttest.NewInbox()
	dev := connect(t, urlBroker(b.URL()), pki, pki.ClientCert(t, certs.RoleDevice, id), inbox)
	subscribe(t, dev, "dev/"+id+"/down/#", inbox)
	dev.Disconnect(250)
	op := operator(t, b, pki)
	publish(t, op, "dev/"+id+"/down/cmd", "queued for "+id)
	op.Disconnect(250)
}

// reconnect connects device id again with a persistent session and reports whether the broker
// kept its session, and the payloads it then delivers until a positive control published
// behind them arrives.
func reconnect(t *testing.T, b *broker.Broker, pki *mqtttest.PKI, id string) (present bool, got []string) {
	t.Helper()
	inbox := mqtttest.NewInbox()
	cert := pki.ClientCert(t, certs.RoleDevice, id)
	opts := mqtttest.ClientOptions(urlBroker(b.URL()), pki.ClientTLS(t, cert), id).SetDefaultPublishHandler(inbox.Handle)
	c := paho.NewClient(opts)
	tok := c.Connect()
	mqtttest.Wait(t, tok, "reconnect "+id)
	t.Cleanup(func() { c.Disconnect(0) })
	present = tok.(*paho.ConnectToken).SessionPresent()
	subscribe(t, c, "dev/"+id+"/down/#", inbox)
	op := operator(t, b, pki)
	publish(t, op, "dev/"+id+"/down/cmd", "control")
	op.Disconnect(250)
	for {
		m := inbox.Next(t)
		if string(m.Payload) == "control" {
			return present, got
		}
		got = append(got, string(m.Payload))
	}
}

// waitSessions waits until b keeps n sessions, for at most within; what says why n.
func waitSessions(t *testing.T, b *broker.Broker, n int, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for b.Sessions() != n {
		if time.Now().After(deadline) {
			t.Fatalf("the broker keeps %d sessions after %v, want %d: %s", b.Sessions(), within, n, what)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// operator connects an operator with a clean session, as fleetctl does.
func operator(t *testing.T, b *broker.Broker, pki *mqtttest.PKI) paho.Client {
	t.Helper()
	cert := pki.ClientCert(t, certs.RoleOperator, "alice")
	return mqtttest.Connect(t, mqtttest.ClientOptions(urlBroker(b.URL()), pki.ClientTLS(t, cert), "operator:alice").SetCleanSession(true))
}

// storedKeysOf returns the keys of the closed broker's store in dir that belong to client id.
func storedKeysOf(t *testing.T, dir, id string) []string {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "broker.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var keys []string
	err = db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(_ []byte, bucket *bbolt.Bucket) error {
			return bucket.ForEach(func(k, _ []byte) error {
				if strings.Contains(string(k), "_"+id+":") || strings.HasSuffix(string(k), "_"+id) {
					keys = append(keys, string(k))
				}
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// A camera that stays away longer than the session expiry loses its session: the broker no
// longer holds it, its subscription or the command queued for it, in memory or in its store,
// and when it comes back it starts a new session (and, being a camagent device, subscribes
// again and converges from the retained desired state). A camera still connected keeps its
// session. Without an expiry the sessions of every camera a fleet ever lost stay in the
// broker, each with a queue that grows with every command.
func TestASessionAwayLongerThanItsExpiryEnds(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	dir := t.TempDir()
	var logs logtest.Buffer
	b := startBroker(t, pki, dir, 2*time.Second, &logs)

	stays := connect(t, urlBroker(b.URL()), pki, pki.ClientCert(t, certs.RoleDevice, "cam-b"), mqtttest.NewInbox())
	subscribe(t, stays, "dev/cam-b/down/#", mqtttest.NewInbox())
	leaveWithACommandQueued(t, b, pki, "cam-a")
	// The operator's clean session ends as its connection does, a moment after its DISCONNECT.
	waitSessions(t, b, 2, 5*time.Second, "cam-a away and cam-b connected")
	waitSessions(t, b, 1, 15*time.Second, "cam-a's session expired 2 s after it left")
	if !strings.Contains(logs.String(), "msg=\"broker: session expired\" client_id=cam-a away_since=") {
		t.Errorf("the broker did not log the expiry of cam-a's session:\n%s", logs.String())
	}
	stays.Disconnect(250)
	b.Close()
	if keys := storedKeysOf(t, dir, "cam-a"); len(keys) != 0 {
		t.Errorf("the store still holds cam-a's expired session: %v", keys)
	}
	if keys := storedKeysOf(t, dir, "cam-b"); len(keys) < 2 {
		t.Errorf("the store lost cam-b's session (client and subscription): %v", keys)
	}

	b = startBroker(t, pki, dir, time.Hour, &logs)
	present, got := reconnect(t, b, pki, "cam-a")
	if present || len(got) != 0 {
		t.Fatalf("cam-a came back to session present %v with %q, want a new session with nothing queued", present, got)
	}
	present, _ = reconnect(t, b, pki, "cam-b")
	if !present {
		t.Fatal("cam-b, which left just before the restart, lost its session")
	}
}

// The positive control of the test above: within its expiry a session keeps what was queued.
func TestASessionWithinItsExpiryKeepsItsQueue(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBroker(t, pki, t.TempDir(), 0, &logs)
	leaveWithACommandQueued(t, b, pki, "cam-a")
	time.Sleep(3 * time.Second) // longer than the test above lets a session live
	present, got := reconnect(t, b, pki, "cam-a")
	if !present || len(got) != 1 || got[0] != "queued for cam-a" {
		t.Fatalf("cam-a came back to session present %v with %q, want its session and the queued command", present, got)
	}
}

// The rendered Mosquitto configuration and the embedded broker keep an away client's session
// for the same time by default.
func TestBothBrokersDefaultToTheSameSessionExpiry(t *testing.T) {
	if broker.DefaultSessionExpiry != mosquitto.DefaultSessionExpiry {
		t.Fatalf("embedded broker %v, Mosquitto %v", broker.DefaultSessionExpiry, mosquitto.DefaultSessionExpiry)
	}
}
