package webrtc

import (
	"strings"
	"testing"
)

// An IPv6 address with an embedded IPv4 address (RFC 4291 §2.5.5) is masked whole: none of
// its IPv4 octets are left behind.
func TestMaskAddrsMasksEmbeddedIPv4Whole(t *testing.T) {
	for _, in := range []string{
		"candidate ::ffff:192.0.2.77 5000 typ host",
		"write udp [::ffff:198.51.100.7]:61000: refused",
		"from 64:ff9b::203.0.113.9",
	} {
		got := maskAddrs(in)
		for _, octets := range []string{"192.0.2", "0.2.77", "198.51", "51.100.7", "203.0.113", "0.113.9"} {
			if strings.Contains(got, octets) {
				t.Errorf("maskAddrs(%q) = %q, which keeps %q", in, got, octets)
			}
		}
	}
}
