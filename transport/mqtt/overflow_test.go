package mqtt

import (
	"fmt"
	"testing"
)

// A QoS 0 message the full inbox cannot take is lost either way (the broker never sends it
// again), so it must not cost a reconnection: otherwise whoever may write one of the device's
// QoS 0 topics (a viewer relay, on dev/<id>/down/signal) could keep it reconnecting, without
// backoff, just by sending faster than its Handler runs.
func TestAFullQueueDropsQoS0WithoutReconnecting(t *testing.T) {
	b := newBroker(t)
	c, got, started, release := stalledClient(t, b)
	b.nextConn()

	signal := "dev/" + device + "/down/signal"
	const n = 12
	if err := b.srv.Publish(signal, []byte("s00"), false, 0); err != nil {
		t.Fatal(err)
	}
	<-started
	for i := 1; i < n; i++ {
		if err := b.srv.Publish(signal, fmt.Appendf(nil, "s%02d", i), false, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the queue to overflow", func() bool { return c.Stats().MessagesIn == n })
	close(release)
	for i := range 1 + 3 {
		if p := recv(t, got, "a queued message"); p != fmt.Sprintf("s%02d", i) {
			t.Fatalf("handled %q, want s%02d", p, i)
		}
	}
	b.publish("dev/"+device+"/down/cmd", []byte("control"))
	if p := recv(t, got, "the control"); p != "control" {
		t.Fatalf("handled %q, want the control", p)
	}
	if n := len(b.conns); n != 0 {
		t.Fatalf("the client connected %d more times after dropping QoS 0 messages", n)
	}
	if s := c.Stats(); s.QueueDropped != n-1-3 || s.Connects != 1 {
		t.Errorf("Stats = %+v, want %d dropped and one connection", s, n-1-3)
	}
}
