package agent

import (
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// Config.LocalAddr reaches every connection the agent makes: the bootstrap identity's, which a
// device whose key is damaged recovers through, and its own once it has the new generation.
// fleetsim relies on it to make each simulated camera a host of its own.
func TestEveryConnectionOfTheAgentIsMadeFromItsLocalAddress(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has all of 127.0.0.0/8 on the loopback interface")
	}
	const id = "cam-0001"
	local := netip.MustParseAddr("127.0.0.43")
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	tap := mqtttest.StartTap(t, b.URL())
	dir := enrolledWithBootstrap(t, pki, tap.URL(), id, time.Now(), 0)
	if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: state.Cred{Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	writeOver([]byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI"))(t, filepath.Join(dir, KeyFile)) // the enrollment key truncated
	fullSigner(t, b, pki, id)

	log, rec := logtest.New()
	a := startAgent(t, Config{StateDir: dir, LocalAddr: local, Logger: log, SwitchTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	waitRecovered(t, a, rec, 1)
	if !strings.Contains(rec.Text(), "through the bootstrap identity") {
		t.Fatalf("did not go through the bootstrap identity; log:\n%s", rec.Text())
	}
	// At least the bootstrap connection and the device's own with its new certificate.
	sources := tap.Sources()
	if len(sources) < 2 {
		t.Fatalf("%d connections reached the broker, want the bootstrap one and the device's own", len(sources))
	}
	for i, s := range sources {
		if s != local {
			t.Errorf("connection %d of %d came from %v, want %v", i+1, len(sources), s, local)
		}
	}
}

// An address no connection can be made from is refused when the agent is made, naming the
// field.
func TestAnUnspecifiedLocalAddressIsRefused(t *testing.T) {
	dir := enrolled(t, "cam-0001", time.Now(), "mqtts://127.0.0.1:8883").dir
	_, err := New(Config{StateDir: dir, LocalAddr: netip.IPv4Unspecified()})
	if err == nil || !strings.Contains(err.Error(), "LocalAddr") {
		t.Fatalf("New = %v, want an error naming LocalAddr", err)
	}
}
