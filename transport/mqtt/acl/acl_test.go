package acl

import (
	"strings"
	"testing"

	"github.com/camagent/camagent/certs"
)

func TestAllowed(t *testing.T) {
	const (
		pub = true
		sub = false
	)
	tests := []struct {
		name     string
		identity string
		filter   string
		write    bool
		want     bool
	}{
		// Devices.
		{"a device may publish its reply", "cam-a", "dev/cam-a/up/reply", pub, true},
		{"a device may publish its retained state", "cam-a", "dev/cam-a/up/state", pub, true},
		{"a device may publish its csr", "cam-a", "dev/cam-a/up/csr", pub, true},
		{"a device may publish its signaling", "cam-a", "dev/cam-a/up/signal", pub, true},
		{"a device may publish its telemetry", "cam-a", "dev/cam-a/up/telemetry", pub, true},
		{"a device may publish its claim", "cam-a", "dev/cam-a/up/claim", pub, true},
		{"a device may not publish to a leaf the protocol does not define", "cam-a", "dev/cam-a/up/junk", pub, false},
		{"a device may not publish below one of its leaves", "cam-a", "dev/cam-a/up/state/x", pub, false},
		{"a device may not publish to its up level itself", "cam-a", "dev/cam-a/up", pub, false},
		{"a device may not publish as another device", "cam-a", "dev/cam-b/up/reply", pub, false},
		{"a device may not publish a command to itself", "cam-a", "dev/cam-a/down/cmd", pub, false},
		{"a device may not publish a fleet command", "cam-a", "fleet/down/cmd", pub, false},
		{"a device may not publish with a wildcard", "cam-a", "dev/cam-a/up/+", pub, false},
		{"a device may not publish to a hash filter", "cam-a", "dev/cam-a/up/#", pub, false},
		{"a device may not publish to $SYS", "cam-a", "$SYS/broker/version", pub, false},
		{"a device may not publish to a topic that only shares its id as a prefix", "cam-a", "dev/cam-ab/up/reply", pub, false},
		{"a device may subscribe to its own commands", "cam-a", "dev/cam-a/down/cmd", sub, true},
		{"a device may subscribe to all its own down topics", "cam-a", "dev/cam-a/down/#", sub, true},
		{"a device may subscribe to a single level under its down topics", "cam-a", "dev/cam-a/down/+", sub, true},
		{"a device may subscribe to fleet commands", "cam-a", "fleet/down/cmd", sub, true},
		{"a device may subscribe to all fleet down topics", "cam-a", "fleet/down/#", sub, true},
		{"a device may share-subscribe to its own commands", "cam-a", "$share/g/dev/cam-a/down/cmd", sub, true},
		{"a device may not subscribe to another device's commands", "cam-a", "dev/cam-b/down/#", sub, false},
		{"a device may not subscribe to every device's commands", "cam-a", "dev/+/down/cmd", sub, false},
		{"a device may not subscribe to everything", "cam-a", "#", sub, false},
		{"a device may not subscribe to every first level", "cam-a", "+/down/cmd", sub, false},
		{"a device may not subscribe to its own up topics", "cam-a", "dev/cam-a/up/reply", sub, false},
		{"a device may not subscribe to its whole namespace", "cam-a", "dev/cam-a/#", sub, false},
		{"a device may not subscribe to all fleet topics", "cam-a", "fleet/#", sub, false},
		{"a device may not subscribe to $SYS", "cam-a", "$SYS/#", sub, false},
		{"a device may not share-subscribe to every device's commands", "cam-a", "$share/g/dev/+/down/cmd", sub, false},
		{"a device may not share-subscribe without a group", "cam-a", "$share//dev/cam-a/down/cmd", sub, false},
		{"a device may not share-subscribe with a wildcard group", "cam-a", "$share/+/dev/cam-a/down/cmd", sub, false},
		{"a device may not share-subscribe without a filter", "cam-a", "$share/g", sub, false},
		{"a malformed filter is refused", "cam-a", "dev/cam-a/down/#/x", sub, false},
		{"a partial-level wildcard is refused", "cam-a", "dev/cam-a/down/c+", sub, false},
		{"an empty filter is refused", "cam-a", "", sub, false},
		{"a filter holding NUL is refused", "cam-a", "dev/cam-a/down/\x00", sub, false},
		{"a filter of invalid UTF-8 is refused", "cam-a", "dev/cam-a/down/\xff", sub, false},

		// Operators.
		{"an operator may command a device", "operator:alice", "dev/cam-a/down/cmd", pub, true},
		{"an operator may command the fleet", "operator:alice", "fleet/down/cmd", pub, true},
		{"an operator may subscribe to every device's replies", "operator:alice", "dev/+/up/reply", sub, true},
		{"an operator may subscribe to all device topics", "operator:alice", "dev/#", sub, true},
		{"an operator may not subscribe to everything", "operator:alice", "#", sub, false},
		{"an operator may not subscribe to bootstrap topics", "operator:alice", "boot/#", sub, false},
		{"an operator may not publish to $SYS", "operator:alice", "$SYS/x", pub, false},
		{"an operator may not subscribe to $SYS", "operator:alice", "$SYS/#", sub, false},

		// Signers.
		{"a signer may read device CSRs", "signer:s1", "dev/+/up/csr", sub, true},
		{"a signer may read bootstrap CSRs", "signer:s1", "boot/+/up/csr", sub, true},
		{"a signer may issue device certificates", "signer:s1", "dev/cam-a/down/cert", pub, true},
		{"a signer may issue bootstrap certificates", "signer:s1", "boot/cam-a/down/cert", pub, true},
		{"a signer may not send commands", "signer:s1", "dev/cam-a/down/cmd", pub, false},
		{"a signer may not read device replies", "signer:s1", "dev/+/up/#", sub, false},
		{"a signer may not read fleet commands", "signer:s1", "fleet/down/#", sub, false},
		{"a signer may say it serves", "signer:s1", "fleet/signers/0a1b2c3d", pub, true},
		{"a signer may not write under fleet/down", "signer:s1", "fleet/down/desired", pub, false},
		{"a signer may not read other signers' presence", "signer:s1", "fleet/signers/+", sub, false},
		{"an operator may read signers' presence", "operator:admin", "fleet/signers/+", sub, true},
		{"a device may not read signers' presence", "cam-a", "fleet/signers/+", sub, false},
		{"a device may not pose as a signer", "cam-a", "fleet/signers/0a1b2c3d", pub, false},
		{"a viewer may not pose as a signer", "viewer:web", "fleet/signers/0a1b2c3d", pub, false},

		// Viewer relays.
		{"a viewer relay may send signaling to a device", "viewer:relay", "dev/cam-a/down/signal", pub, true},
		{"a viewer relay may read every device's signaling", "viewer:relay", "dev/+/up/signal", sub, true},
		{"a viewer relay may not send commands", "viewer:relay", "dev/cam-a/down/cmd", pub, false},
		{"a viewer relay may not read device state", "viewer:relay", "dev/+/up/state", sub, false},

		// Bootstrap identities.
		{"a bootstrap identity may ask for a certificate", "bootstrap:cam-a", "boot/cam-a/up/csr", pub, true},
		{"a bootstrap identity may read its answer", "bootstrap:cam-a", "boot/cam-a/down/#", sub, true},
		{"a bootstrap identity may not ask for another device", "bootstrap:cam-a", "boot/cam-b/up/csr", pub, false},
		{"a bootstrap identity may not read another device's answer", "bootstrap:cam-a", "boot/+/down/cert", sub, false},
		{"a bootstrap identity may not use the device's topics", "bootstrap:cam-a", "dev/cam-a/up/reply", pub, false},
		{"a bootstrap identity may not read fleet commands", "bootstrap:cam-a", "fleet/down/cmd", sub, false},

		// Identities that do not parse.
		{"an empty identity is refused", "", "dev/cam-a/up/reply", pub, false},
		{"an unknown role is refused", "admin:root", "dev/cam-a/down/cmd", pub, false},
		{"a server identity is refused", "server:broker", "dev/#", sub, false},
		{"a device id with a wildcard is refused", "cam-+", "dev/cam-+/up/x", pub, false},
		{"an upper-case device id is refused", "CAM-A", "dev/CAM-A/up/x", pub, false},
		{"an operator without a name is refused", "operator:", "dev/#", sub, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Allowed(tt.identity, tt.filter, tt.write); got != tt.want {
				t.Errorf("Allowed(%q, %q, write=%v) = %v, want %v", tt.identity, tt.filter, tt.write, got, tt.want)
			}
		})
	}
}

func TestEveryRuleGrantsWhatItSays(t *testing.T) {
	names := map[certs.Role]string{
		certs.RoleDevice:    "cam-a",
		certs.RoleOperator:  "alice",
		certs.RoleSigner:    "s1",
		certs.RoleViewer:    "relay",
		certs.RoleBootstrap: "cam-a",
	}
	for _, r := range Rules() {
		name := names[r.Role]
		identity, err := certs.IdentityFor(r.Role, name)
		if err != nil {
			t.Fatal(err)
		}
		pattern := r.Expand(name)
		if r.Access&Read != 0 && !Allowed(identity, pattern, false) {
			t.Errorf("%s may not subscribe to %q though a rule grants read", identity, pattern)
		}
		if r.Access&Read == 0 && Allowed(identity, pattern, false) {
			t.Errorf("%s may subscribe to %q though no rule grants read", identity, pattern)
		}
		topic := strings.NewReplacer("+", "x", "#", "y").Replace(pattern)
		if got := Allowed(identity, topic, true); got != (r.Access&Write != 0) {
			t.Errorf("Allowed(%q, %q, write) = %v, want %v", identity, topic, got, r.Access&Write != 0)
		}
	}
}

func TestSubscriptionsNeedTheUnionOfGrantsToBeCovered(t *testing.T) {
	g := func(fs ...string) [][]string {
		var out [][]string
		for _, f := range fs {
			out = append(out, strings.Split(f, "/"))
		}
		return out
	}
	tests := []struct {
		name   string
		filter string
		grants [][]string
		want   bool
	}{
		{"a filter equal to a grant is covered", "a/b", g("a/b"), true},
		{"a wildcard is covered by literals only together with a wildcard grant", "a/+", g("a/b", "a/+"), true},
		{"a wildcard is not covered by literals alone", "a/+", g("a/b", "a/c"), false},
		{"a hash covers its parent level", "a", g("a/#"), true},
		{"a hash filter needs its parent level covered", "a/#", g("a/+/#"), false},
		{"a hash filter is covered by its parent and every child together", "a/#", g("a", "a/+/#"), true},
		{"a first-level wildcard does not need $ topics covered", "+/x", g("+/x"), true},
		{"a $ topic is not covered by a first-level wildcard", "$SYS/x", g("+/x"), false},
		{"a $ topic is not covered by a hash", "$SYS/x", g("#"), false},
		{"a first-level hash is covered by a hash", "#", g("#"), true},
		{"nothing is covered by no grant", "a", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := covered(strings.Split(tt.filter, "/"), tt.grants, 0); got != tt.want {
				t.Errorf("covered(%q, %q) = %v, want %v", tt.filter, tt.grants, got, tt.want)
			}
		})
	}
}
