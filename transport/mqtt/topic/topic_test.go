package topic

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestBuilders(t *testing.T) {
	const id = "cam-0042"
	for _, tc := range []struct {
		name string
		got  string
		want string
	}{
		{"DeviceCmd is the device's command topic", DeviceCmd(id), "dev/cam-0042/down/cmd"},
		{"FleetCmd is the fleet-wide command topic of a shard", FleetCmd("2a"), "fleet/down/2a/cmd"},
		{"Reply is the device's reply topic", Reply(id), "dev/cam-0042/up/reply"},
		{"State is the device's state topic", State(id), "dev/cam-0042/up/state"},
		{"DeviceDesired is the device's desired-state topic", DeviceDesired(id), "dev/cam-0042/down/desired"},
		{"FleetDesired is the fleet desired-state topic of a shard", FleetDesired("00"), "fleet/down/00/desired"},
		{"CSR is the device's CSR topic", CSR(id), "dev/cam-0042/up/csr"},
		{"Cert is the device's certificate topic", Cert(id), "dev/cam-0042/down/cert"},
		{"Signal is signaling down to the device", Signal(id), "dev/cam-0042/down/signal"},
		{"SignalUp is signaling up from the device", SignalUp(id), "dev/cam-0042/up/signal"},
		{"Telemetry is under up", Telemetry(id), "dev/cam-0042/up/telemetry"},
		{"BootCSR is under boot/", BootCSR(id), "boot/cam-0042/up/csr"},
		{"BootCert is under boot/", BootCert(id), "boot/cam-0042/down/cert"},
		{"DeviceDownFilter matches everything down to one device", DeviceDownFilter(id), "dev/cam-0042/down/#"},
		{"FleetDownFilter matches everything down to the fleet on a shard", FleetDownFilter("3f"), "fleet/down/3f/#"},
		{"FleetDesiredFilter matches every shard's desired state", FleetDesiredFilter, "fleet/down/+/desired"},
		{"FleetACLFilter matches every fleet-wide topic", FleetACLFilter, "fleet/down/#"},
		{"BootDownFilter matches everything down to a bootstrap identity", BootDownFilter(id), "boot/cam-0042/down/#"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name          string
		topic         string
		id, dir, leaf string
		ok            bool
	}{
		{"a device command parses", "dev/cam-0042/down/cmd", "cam-0042", Down, LeafCmd, true},
		{"a device reply parses", "dev/cam-0042/up/reply", "cam-0042", Up, LeafReply, true},
		{"a device state parses", "dev/abc/up/state", "abc", Up, LeafState, true},
		{"desired state parses", "dev/abc/down/desired", "abc", Down, LeafDesired, true},
		{"a csr parses", "dev/abc/up/csr", "abc", Up, LeafCSR, true},
		{"a cert parses", "dev/abc/down/cert", "abc", Down, LeafCert, true},
		{"signal down parses", "dev/abc/down/signal", "abc", Down, LeafSignal, true},
		{"signal up parses", "dev/abc/up/signal", "abc", Up, LeafSignal, true},
		{"telemetry parses", "dev/abc/up/telemetry", "abc", Up, LeafTelemetry, true},
		{"a fleet command parses with no device id", "fleet/down/00/cmd", "", Down, LeafCmd, true},
		{"fleet desired state parses", "fleet/down/3f/desired", "", Down, LeafDesired, true},

		{"a reply sent down is refused", "dev/abc/down/reply", "", "", "", false},
		{"a command sent up is refused", "dev/abc/up/cmd", "", "", "", false},
		{"an unknown leaf is refused", "dev/abc/up/secrets", "", "", "", false},
		{"an unknown direction is refused", "dev/abc/sideways/cmd", "", "", "", false},
		{"an extra level is refused", "dev/abc/down/cmd/x", "", "", "", false},
		{"a missing leaf is refused", "dev/abc/down", "", "", "", false},
		{"a trailing slash is refused", "dev/abc/down/cmd/", "", "", "", false},
		{"a wildcard device id is refused", "dev/+/down/cmd", "", "", "", false},
		{"a multi-level wildcard is refused", "dev/abc/down/#", "", "", "", false},
		{"an upper-case device id is refused", "dev/ABC/down/cmd", "", "", "", false},
		{"a too-short device id is refused", "dev/ab/down/cmd", "", "", "", false},
		{"an operator identity is not a device id", "dev/operator:alice/down/cmd", "", "", "", false},
		{"an empty device id is refused", "dev//down/cmd", "", "", "", false},
		{"fleet up is refused", "fleet/up/cmd", "", "", "", false},
		{"a fleet topic with a device id is refused", "fleet/abc/down/cmd", "", "", "", false},
		{"fleet signal is refused", "fleet/down/00/signal", "", "", "", false},
		{"a fleet topic without a shard is refused", "fleet/down/cmd", "", "", "", false},
		{"a shard beyond the last is refused", "fleet/down/40/cmd", "", "", "", false},
		{"an upper-case shard is refused", "fleet/down/2A/cmd", "", "", "", false},
		{"a one-digit shard is refused", "fleet/down/2/cmd", "", "", "", false},
		{"a wildcard shard is refused", "fleet/down/+/desired", "", "", "", false},
		{"an extra level under a shard is refused", "fleet/down/00/desired/x", "", "", "", false},
		{"a boot topic is not a device topic", "boot/abc/up/csr", "", "", "", false},
		{"a leading slash is refused", "/dev/abc/down/cmd", "", "", "", false},
		{"the empty topic is refused", "", "", "", "", false},
		{"a $SYS topic is refused", "$SYS/broker/uptime", "", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, dir, leaf, ok := Parse(tc.topic)
			if id != tc.id || dir != tc.dir || leaf != tc.leaf || ok != tc.ok {
				t.Errorf("Parse(%q) = %q, %q, %q, %v; want %q, %q, %q, %v",
					tc.topic, id, dir, leaf, ok, tc.id, tc.dir, tc.leaf, tc.ok)
			}
		})
	}
}

func TestParseBoot(t *testing.T) {
	for _, tc := range []struct {
		name          string
		topic         string
		id, dir, leaf string
		ok            bool
	}{
		{"a bootstrap csr parses", "boot/cam-1/up/csr", "cam-1", Up, LeafCSR, true},
		{"a bootstrap cert parses", "boot/cam-1/down/cert", "cam-1", Down, LeafCert, true},
		{"a bootstrap command is refused", "boot/cam-1/down/cmd", "", "", "", false},
		{"a bootstrap state is refused", "boot/cam-1/up/state", "", "", "", false},
		{"a device topic is not a bootstrap topic", "dev/cam-1/up/csr", "", "", "", false},
		{"a malformed id is refused", "boot/Cam/up/csr", "", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, dir, leaf, ok := ParseBoot(tc.topic)
			if id != tc.id || dir != tc.dir || leaf != tc.leaf || ok != tc.ok {
				t.Errorf("ParseBoot(%q) = %q, %q, %q, %v; want %q, %q, %q, %v",
					tc.topic, id, dir, leaf, ok, tc.id, tc.dir, tc.leaf, tc.ok)
			}
		})
	}
}

// TestBuildersRoundTrip checks that every topic a builder makes is parsed back to its parts.
func TestBuildersRoundTrip(t *testing.T) {
	const id = "cam-7"
	for _, tc := range []struct {
		topic     string
		dir, leaf string
	}{
		{DeviceCmd(id), Down, LeafCmd},
		{DeviceDesired(id), Down, LeafDesired},
		{Cert(id), Down, LeafCert},
		{Signal(id), Down, LeafSignal},
		{Reply(id), Up, LeafReply},
		{State(id), Up, LeafState},
		{CSR(id), Up, LeafCSR},
		{SignalUp(id), Up, LeafSignal},
		{Telemetry(id), Up, LeafTelemetry},
	} {
		t.Run(tc.topic+" parses back", func(t *testing.T) {
			gotID, dir, leaf, ok := Parse(tc.topic)
			if !ok || gotID != id || dir != tc.dir || leaf != tc.leaf {
				t.Errorf("Parse(%q) = %q, %q, %q, %v", tc.topic, gotID, dir, leaf, ok)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts is exactly the topic a
// builder would make from the parts it returned.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"dev/cam-1/down/cmd", "fleet/down/2a/cmd", "boot/cam-1/up/csr", "dev/+/down/#", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if id, dir, leaf, ok := Parse(s); ok {
			var want string
			if id == "" {
				shard, l, fleetOK := ParseFleet(s)
				if !fleetOK || l != leaf || dir != Down {
					t.Fatalf("Parse(%q) took a fleet topic that ParseFleet refuses", s)
				}
				want = "fleet/down/" + shard + "/" + leaf
			} else {
				want = dev(id, dir, leaf)
			}
			if want != s {
				t.Fatalf("Parse(%q) accepted parts that rebuild to %q", s, want)
			}
			if strings.ContainsAny(s, "+#\x00") || !utf8.ValidString(s) {
				t.Fatalf("Parse(%q) accepted a wildcard, NUL or invalid UTF-8", s)
			}
		}
		if id, dir, leaf, ok := ParseBoot(s); ok {
			if want := bootPrefix + id + "/" + dir + "/" + leaf; want != s {
				t.Fatalf("ParseBoot(%q) accepted parts that rebuild to %q", s, want)
			}
		}
	})
}

// TestShards checks that every shard's topics parse back to that shard, that a device's shard
// is one of them and stays the same, and that devices spread over all of them: a shard that
// held most of the fleet would bring back the per-filter cost the shards are there to divide.
func TestShards(t *testing.T) {
	shards := Shards()
	if len(shards) != FleetShards {
		t.Fatalf("Shards() has %d names, want %d", len(shards), FleetShards)
	}
	known := map[string]bool{}
	for _, s := range shards {
		if known[s] {
			t.Fatalf("shard %q named twice", s)
		}
		known[s] = true
		for _, leaf := range []string{LeafCmd, LeafDesired} {
			name := "fleet/down/" + s + "/" + leaf
			if got, l, ok := ParseFleet(name); !ok || got != s || l != leaf {
				t.Errorf("ParseFleet(%q) = %q, %q, %v", name, got, l, ok)
			}
		}
	}
	count := map[string]int{}
	const n = 64 * 200
	for i := range n {
		id := fmt.Sprintf("sim-%05d", i)
		s := FleetShard(id)
		if !known[s] {
			t.Fatalf("FleetShard(%q) = %q, not a shard", id, s)
		}
		if again := FleetShard(id); again != s {
			t.Fatalf("FleetShard(%q) gave %q, then %q", id, s, again)
		}
		count[s]++
	}
	for _, s := range shards {
		// 200 expected per shard; a binomial spread stays well within 100..300.
		if c := count[s]; c < 100 || c > 300 {
			t.Errorf("shard %s holds %d of %d sequential ids, expected about %d", s, c, n, n/FleetShards)
		}
	}
}
