package sim

import (
	"net/netip"
	"testing"
)

// Source addresses count up from 127.1.0.0 across octets, and device i dials from the
// (i mod SourceAddrs)-th.
func TestSourceAddressesCountUpAndDevicesTakeThemInTurn(t *testing.T) {
	for k, want := range map[int]string{
		0:                  "127.1.0.0",
		1:                  "127.1.0.1",
		255:                "127.1.0.255",
		256:                "127.1.1.0",
		65536:              "127.2.0.0",
		MaxSourceAddrs - 1: "127.16.255.255",
	} {
		if got := SourceAddr(k); got != netip.MustParseAddr(want) {
			t.Errorf("SourceAddr(%d) = %v, want %s", k, got, want)
		}
	}
	cfg := &Config{Devices: 10, StateDir: t.TempDir(), SourceAddrs: 4}
	for i, d := range newDevices(cfg, "cam-", "mqtts://127.0.0.1:8883", "") {
		if want := SourceAddr(i % 4); d.src != want {
			t.Errorf("device %d dials from %v, want %v", i, d.src, want)
		}
	}
	cfg.SourceAddrs = 0
	for i, d := range newDevices(cfg, "cam-", "mqtts://127.0.0.1:8883", "") {
		if d.src.IsValid() {
			t.Errorf("device %d dials from %v without SourceAddrs, want the system's choice", i, d.src)
		}
	}
}
