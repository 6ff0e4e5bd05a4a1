package mqtttest

import (
	"testing"
)

// A device certificate presenting another device's client id must not read what the broker
// queued for that device's persistent session (docs/protocol.md, "Identities").
func TestADeviceBorrowingAnotherClientIDReadsNothingQueuedForIt(t *testing.T) {
	f := newFleet(t)
	ForEachBroker(t, f.pki, func(t *testing.T, b Broker) {
		inbox := NewInbox()
		dev := f.connect(t, b, f.camA, inbox)
		subscribe(t, dev, "dev/cam-a/down/cmd", inbox)
		dev.Disconnect(250)

		op := f.connect(t, b, f.oper, nil)
		publish(t, op, "dev/cam-a/down/cmd", 1, false, "secret for cam-a")

		stolen := NewInbox()
		opts := ClientOptions(b, f.pki.ClientTLS(t, f.camB), "cam-a")
		opts.SetDefaultPublishHandler(stolen.Handle)
		if _, err := TryConnect(t, opts); err != nil {
			t.Logf("refused: %v", err)
			return
		}
		// Positive control behind it: cam-b's own command, on its own subscription.
		cb := f.connect(t, b, f.camB, stolen)
		subscribe(t, cb, "dev/cam-b/down/cmd", stolen)
		publish(t, op, "dev/cam-b/down/cmd", 1, false, "control")
		expectOnly(t, stolen, "control")
	})
}
