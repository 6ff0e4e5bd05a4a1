package broker_test

import (
	"errors"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// Signaling is QoS 0 and never retained (docs/protocol.md, "Topics"; P2b): a viewer relay's
// certificate must not make the broker keep an offer for a device, neither as a retained
// message (which also lets it store any number of them under made-up device ids) nor queued
// in an offline device's persistent session (where it would take the room of its commands).
func TestSignalingIsNeverRetainedNorQueued(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	camA := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	viewer := pki.ClientCert(t, certs.RoleViewer, "relay")
	oper := pki.ClientCert(t, certs.RoleOperator, "alice")
	b := mqtttest.StartEmbedded(t, pki)

	// cam-a has a persistent session subscribed to everything addressed to it, and is away.
	dev := connect(t, b, pki, camA, nil)
	subscribe(t, dev, "dev/cam-a/down/#", mqtttest.NewInbox())
	dev.Disconnect(250)

	v := connect(t, b, pki, viewer, nil)
	mqtttest.Wait(t, v.Publish("dev/cam-a/down/signal", 1, false, "queued offer"), "publish")
	mqtttest.Wait(t, v.Publish("dev/cam-a/down/signal", 0, true, "retained offer"), "publish")
	mqtttest.Wait(t, v.Publish("dev/made-up-0001/down/signal", 0, true, "retained junk"), "publish")
	op := connect(t, b, pki, oper, nil)
	publish(t, op, "dev/cam-a/down/cmd", "control")

	// The broker resends a session's queue in no set order within a second: take everything
	// up to the command and for quiet after it.
	inbox := mqtttest.NewInbox()
	connect(t, b, pki, camA, inbox)
	for m := inbox.Next(t); string(m.Payload) != "control"; m = inbox.Next(t) {
		t.Errorf("the device got %q on %s", m.Payload, m.Topic)
	}
	select {
	case m := <-inbox.C:
		t.Errorf("the device got %q on %s", m.Payload, m.Topic)
	case <-time.After(quiet):
	}

	// Every retained message under dev/ comes right after the SUBACK, in no set order, with
	// the operator's own retained control among them.
	opIn := mqtttest.NewInbox()
	mqtttest.Wait(t, op.Publish("dev/zz-control/down/desired", 1, true, "retained control"), "publish")
	subscribe(t, op, "dev/#", opIn)
	for m := opIn.Next(t); string(m.Payload) != "retained control"; m = opIn.Next(t) {
		t.Errorf("the broker kept %q on %s", m.Payload, m.Topic)
	}
	select {
	case m := <-opIn.C:
		t.Errorf("the broker kept %q on %s", m.Payload, m.Topic)
	case <-time.After(quiet):
	}
	if !v.IsConnectionOpen() {
		t.Fatal("the viewer was disconnected")
	}
}

// A will is published by the broker itself, so its QoS and retain flag are checked at CONNECT.
func TestASignalingWillThatWouldBeKeptIsRefused(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	viewer := pki.ClientCert(t, certs.RoleViewer, "relay")
	b := mqtttest.StartEmbedded(t, pki)
	for _, w := range []struct {
		name     string
		qos      byte
		retained bool
	}{{"retained", 0, true}, {"qos 1", 1, false}} {
		t.Run("a "+w.name+" signaling will is refused", func(t *testing.T) {
			opts := mqtttest.ClientOptions(b, pki.ClientTLS(t, viewer), "viewer:relay").
				SetWill("dev/cam-a/down/signal", "bye", w.qos, w.retained)
			_, err := mqtttest.TryConnect(t, opts)
			if !errors.Is(err, pahopackets.ErrorRefusedNotAuthorised) {
				t.Fatalf("connect: %v, want CONNACK not authorized", err)
			}
		})
	}
	t.Run("a qos 0 signaling will is accepted", func(t *testing.T) {
		opts := mqtttest.ClientOptions(b, pki.ClientTLS(t, viewer), "viewer:relay").
			SetWill("dev/cam-a/down/signal", "bye", 0, false)
		mqtttest.Connect(t, opts)
	})
}
