package broker_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// TestSessionTakeoverLosesNoDelivery: a device reconnecting takes its persistent session over
// from the connection it had, while an operator keeps publishing commands to it. Every command
// the broker acknowledged must reach the device on one connection or the next. mochi v2.7.9
// cloned the old session's deliveries and then cleared them, dropping any published to the
// old session in between (third_party/mochi-server carries the fix).
func TestSessionTakeoverLosesNoDelivery(t *testing.T) {
	const commands, takeovers = 3000, 30
	pki := mqtttest.NewPKI(t)
	cam := pki.ClientCert(t, certs.RoleDevice, "cam-a")
	oper := pki.ClientCert(t, certs.RoleOperator, "alice")
	b := mqtttest.StartEmbedded(t, pki)

	var mu sync.Mutex
	got := make(map[int]bool)
	all := make(chan struct{})
	handle := func(_ paho.Client, m paho.Message) {
		n, err := strconv.Atoi(string(m.Payload()))
		if err != nil {
			t.Errorf("device got %q", m.Payload())
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !got[n] {
			got[n] = true
			if len(got) == commands {
				close(all)
			}
		}
	}
	dial := func() paho.Client {
		opts := mqtttest.ClientOptions(b, pki.ClientTLS(t, cam), "cam-a").SetDefaultPublishHandler(handle)
		return mqtttest.Connect(t, opts)
	}
	dev := dial()
	mqtttest.Wait(t, dev.Subscribe("dev/cam-a/down/cmd", 1, handle), "subscribe")

	op := connect(t, b, pki, oper, nil)
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range commands {
			if tok := op.Publish("dev/cam-a/down/cmd", 1, false, strconv.Itoa(i)); !tok.WaitTimeout(mqtttest.ClientTimeout) || tok.Error() != nil {
				t.Errorf("publish %d: %v", i, tok.Error())
				return
			}
		}
	}()
	for range takeovers {
		time.Sleep(5 * time.Millisecond)
		dial() // takes the session over; the broker drops the previous connection
	}
	<-published
	select {
	case <-all:
	case <-time.After(mqtttest.ClientTimeout):
		mu.Lock()
		defer mu.Unlock()
		var missing []int
		for i := range commands {
			if !got[i] {
				missing = append(missing, i)
			}
		}
		t.Fatalf("%d of %d acknowledged commands never reached the device across %d session take-overs, e.g. %v",
			len(missing), commands, takeovers, missing[:min(len(missing), 10)])
	}
}
