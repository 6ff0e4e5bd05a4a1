package seal

import (
	"encoding/hex"
	"testing"
)

func TestNetworkTagIsStableForOneDevice(t *testing.T) {
	s := testSecret(t, 5)
	a := NetworkTag(s, "HomeNet", "aa:bb:cc:dd:ee:ff")
	if b := NetworkTag(s, "HomeNet", "aa:bb:cc:dd:ee:ff"); a != b {
		t.Fatalf("tag changed: %s then %s", a, b)
	}
	if b := NetworkTag(s, "HomeNet", "AA-BB-CC-DD-EE-FF"); a != b {
		t.Fatalf("the BSSID's spelling changed the tag: %s then %s", a, b)
	}
	if raw, err := hex.DecodeString(a); err != nil || len(raw) != NetworkTagSize {
		t.Fatalf("tag %q is not %d bytes of hex", a, NetworkTagSize)
	}
}

func TestNetworkTagDiffersBetweenDevicesOnTheSameNetwork(t *testing.T) {
	a := NetworkTag(testSecret(t, 5), "HomeNet", "aa:bb:cc:dd:ee:ff")
	b := NetworkTag(testSecret(t, 6), "HomeNet", "aa:bb:cc:dd:ee:ff")
	if a == b {
		t.Fatal("two devices on one network share a tag")
	}
}

func TestNetworkTagChangesWithTheNetwork(t *testing.T) {
	s := testSecret(t, 5)
	seen := map[string]string{}
	for _, n := range []struct{ ssid, bssid string }{
		{"HomeNet", "aa:bb:cc:dd:ee:ff"},
		{"HomeNet", "aa:bb:cc:dd:ee:00"},
		{"HomeNet", ""},
		{"HomeNet2", ""},
		{"homenet", ""},
		// Length prefixes keep these two apart.
		{"ab", "c"},
		{"a", "bc"},
	} {
		tag := NetworkTag(s, n.ssid, n.bssid)
		if prev, ok := seen[tag]; ok {
			t.Fatalf("%q/%q has the same tag as %s", n.ssid, n.bssid, prev)
		}
		seen[tag] = n.ssid + "/" + n.bssid
	}
}

func TestNetworkTagKeyIsNotTheSealingKey(t *testing.T) {
	s := testSecret(t, 5)
	if string(s.derive("camagent/v1/network-tag", 32)) == string(s.derive("camagent/v1/seal/network-tag", 32)) {
		t.Fatal("the network-tag key equals the sealing key of purpose network-tag")
	}
}
