package mqtt

import (
	"testing"

	"github.com/camagent/camagent/certs"
)

// The will is the broker's to publish when a connection ends without the client's
// DISCONNECT — a network cut here, as a crash or a kill would be — and never when the client
// ends it: Run's return.
func TestTheWillIsPublishedOnlyWhenTheConnectionEndsWithoutDisconnect(t *testing.T) {
	b := newBroker(t)
	const topic = "dev/" + device + "/up/state"
	cfg := b.deviceConfig(device, certs.NewHolder(b.issue(device)))
	cfg.Will = &Will{Topic: topic, Payload: []byte("gone"), QoS: 1, Retained: true}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Will.Payload[0] = 'G' // New keeps its own copy
	stop := run(t, c)
	waitConnected(t, c)
	retained := func() string {
		if m := b.srv.Topics.Messages(topic); len(m) == 1 {
			return string(m[0].Payload)
		}
		return ""
	}
	if got := retained(); got != "" {
		t.Fatalf("retained %q while connected", got)
	}

	b.cut(device)
	waitFor(t, "the will, retained", func() bool { return retained() == "gone" })

	// Cleared, then the client connects again and ends cleanly: no will.
	if err := b.srv.Publish(topic, nil, true, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retained will cleared", func() bool { return retained() == "" })
	waitFor(t, "a new connection", func() bool { return c.Stats().Connects == 2 && c.Connected() })
	stop()
	waitFor(t, "the broker to see the client go", func() bool {
		cl, ok := b.srv.Clients.Get(device)
		return !ok || cl.Closed()
	})
	if got := retained(); got != "" {
		t.Errorf("the broker published the will %q after a clean end", got)
	}
}

func TestConfigRefusesABadWill(t *testing.T) {
	for name, w := range map[string]*Will{
		"no topic":         {Payload: []byte("x")},
		"a wildcard topic": {Topic: "dev/+/up/state"},
		"qos 2":            {Topic: "dev/x/up/state", QoS: 2},
		"too big":          {Topic: "dev/x/up/state", Payload: make([]byte, DefaultMaxPayload+1)},
	} {
		cfg := validConfig()
		cfg.Will = w
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, w)
		}
	}
}
