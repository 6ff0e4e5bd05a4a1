package webrtc_test

import (
	"testing"

	"github.com/pion/stun/v4"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// FuzzICEServerURLsPionCanParse: every ICE server URL the signaling layer accepts from an offer
// reaches pion's URI parser, which must return for it (pion/stun v4.0.1 loops forever on some
// URLs signal now refuses, such as "stun:[::1]&3478"). A hang fails the fuzzer.
func FuzzICEServerURLsPionCanParse(f *testing.F) {
	for _, u := range []string{"stun:127.0.0.1:3478", "turn:[::1]:3478?transport=udp", "turns:turn.example.net", "stun:[::1]&3478"} {
		f.Add(u)
	}
	f.Fuzz(func(t *testing.T, u string) {
		s := signal.ICEServer{URLs: []string{u}, Username: "u", Credential: "c"}
		if s.Validate() != nil {
			return
		}
		if _, err := stun.ParseURI(u); err != nil {
			t.Fatalf("signal accepts %q, pion refuses it: %v", u, err)
		}
	})
}
