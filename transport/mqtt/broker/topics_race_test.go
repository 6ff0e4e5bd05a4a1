package broker_test

import (
	"fmt"
	"sync"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestRetainedPublishRacesWildcardSubscribe is the race behind third_party/mochi-server's
// patch: one client's wildcard subscription scans the retained messages while others publish
// retained state (what fleetctl status does while a fleet rotates). Under -race, upstream
// v2.7.9 fails it; the patched index must also still find every retained message.
func TestRetainedPublishRacesWildcardSubscribe(t *testing.T) {
	const devices, rounds = 8, 200
	x := mochi.NewTopicsIndex()
	retain := func(dev, round int, payload string) {
		x.RetainMessage(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
			TopicName:   fmt.Sprintf("dev/d%d/up/state", dev),
			Payload:     []byte(payload),
		})
	}
	var wg sync.WaitGroup
	for d := range devices {
		wg.Go(func() {
			for r := range rounds {
				retain(d, r, "") // cleared, then set again: retainPath flips
				retain(d, r, fmt.Sprintf("round %d", r))
			}
		})
	}
	wg.Go(func() {
		for range rounds {
			x.Messages("dev/+/up/state")
			x.Messages("dev/#")
		}
	})
	wg.Wait()
	if got := len(x.Messages("dev/+/up/state")); got != devices {
		t.Fatalf("after the races, dev/+/up/state matches %d retained messages, want %d", got, devices)
	}
}
