package agent

import (
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// A rotation publishes the device state once, when it ends: the connection it makes with the
// new certificate does not publish the intermediate state (rotation issued, old epoch), which
// the committed state would replace within milliseconds — one retained write fewer per
// rotation, and no older state that could reach the broker after the newer one.
func TestARotationPublishesTheStateOnceItEnds(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var mu sync.Mutex
	var states []wire.DeviceState
	b := mqtttest.StartEmbedded(t, pki, mqtttest.WithOnPublish(func(_, tp string, payload []byte, _ bool) {
		if tp != topic.State("cam-0001") {
			return
		}
		var s wire.DeviceState
		if wire.Decode(payload, &s) == nil {
			mu.Lock()
			states = append(states, s)
			mu.Unlock()
		}
	}))
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	testSigner(t, b, pki, "cam-0001", time.Now)

	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; log:\n%s", what, rec.Text())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the state of the first connection", func() bool { mu.Lock(); defer mu.Unlock(); return len(states) == 1 })

	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	a.poke()
	waitFor("the committed state", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(states) > 1 && states[len(states)-1].Epoch == 1
	})
	rec.WaitFor(t, 5*time.Second, "connected to broker", "cert_serial="+serialHex(a.Certificate()))
	mu.Lock()
	defer mu.Unlock()
	if len(states) != 2 || states[1].Rotation != wire.RotationIdle {
		t.Fatalf("states published: %+v; want the first connection's, then only the committed one", states)
	}
}

// A rotation that waits for a signer that does not answer (none runs, here) says so once, a
// few seconds in: fleetctl status then counts the device rotating, not behind as if it had
// not heard of the breach.
func TestARotationWaitingForTheSignerSaysItIsPending(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	states := make(chan wire.DeviceState, 16)
	b := mqtttest.StartEmbedded(t, pki, mqtttest.WithOnPublish(func(_, tp string, payload []byte, _ bool) {
		var s wire.DeviceState
		if tp == topic.State("cam-0001") && wire.Decode(payload, &s) == nil {
			states <- s
		}
	}))
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	next := func(what string) wire.DeviceState {
		t.Helper()
		select {
		case s := <-states:
			return s
		case <-time.After(pendingNoticeAfter + 10*time.Second):
			t.Fatalf("no state published: %s; log:\n%s", what, rec.Text())
		}
		return wire.DeviceState{}
	}
	if s := next("the first connection's"); s.Rotation != wire.RotationIdle {
		t.Fatalf("first state %+v", s)
	}
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	a.poke()
	if s := next("the rotation's"); s.Rotation != wire.RotationPending || s.Epoch != 0 {
		t.Fatalf("state while waiting for the signer: %+v, want rotation pending at epoch 0", s)
	}
}

// A device back after several breaches gets their notices one after another: one that comes
// while its rotation is being made, before the request goes out, is taken into that rotation
// rather than making the device rotate again right after.
func TestANewerEpochBeforeTheRequestIsTakenIntoTheRotation(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	testSigner(t, b, pki, "cam-0001", time.Now)
	log, rec := logtest.New()
	var a *Agent
	var once sync.Once
	a = running(t, Config{StateDir: dir, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		AfterStep: func(s string) {
			if s == StepPending {
				once.Do(func() {
					if err := a.save(func(st *state.State) { st.DesiredEpoch = 3 }); err != nil {
						t.Error(err)
					}
				})
			}
		}})
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	a.poke()
	deadline := time.Now().Add(20 * time.Second)
	for a.Epoch() != 3 || a.Rotations() == 0 { // the count is taken after the commit
		if time.Now().After(deadline) {
			t.Fatalf("epoch %d, want 3; log:\n%s", a.Epoch(), rec.Text())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := a.Rotations(); n != 1 {
		t.Errorf("%d rotations to reach epoch 3, want 1; log:\n%s", n, rec.Text())
	}
}
