package webrtc_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// A candidate pion cannot parse is quoted whole in pion's error, network addresses and all.
// The errors AddCandidate and Offer return reach the agent's logs, which never carry a
// candidate's address (P2b, P4): the addresses must be masked.
func TestErrorsNeverCarryACandidatesAddresses(t *testing.T) {
	const (
		hostAddr    = "192.0.2.77"
		relatedAddr = "10.1.2.3"
		v6Addr      = "2001:db8::77"
	)
	bad := []signal.ICECandidate{
		{Candidate: "candidate:1 1 udp 2130706431 " + hostAddr + " 99999999 typ host"},
		{Candidate: "candidate:1 1 udp 2130706431 " + hostAddr + " 5000 typ srflx raddr " + relatedAddr},
		{Candidate: "candidate:1 1 udp 2130706431 " + v6Addr + " 99999999 typ host"},
	}
	noAddress := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("a malformed candidate was taken")
		}
		for _, a := range []string{hostAddr, relatedAddr, v6Addr} {
			if strings.Contains(err.Error(), a) {
				t.Errorf("the error carries the address %s: %v", a, err)
			}
		}
	}
	g := newGrants(t)
	ctx := context.Background()
	s := startStreamer(t, webrtc.Config{Source: fileSource(t)})

	t.Run("a trickled candidate's error masks its addresses", func(t *testing.T) {
		v, o := newTestViewer(t, viewerOptions{})
		v.connect(ctx, s, o, g.valid(t), g.check)
		for _, c := range bad {
			noAddress(t, s.AddCandidate(o.Session, o.Key, c))
		}
	})
	t.Run("a refusal for a candidate trickled before the offer was applied masks its addresses", func(t *testing.T) {
		_, o := newTestViewer(t, viewerOptions{})
		o.Grant = g.valid(t)
		_, err := s.Offer(ctx, o, func(b []byte) (webrtc.Grant, error) {
			// The session is reserved and its offer not yet applied: the candidate waits.
			if err := s.AddCandidate(o.Session, o.Key, bad[1]); err != nil {
				t.Errorf("AddCandidate before the offer was applied: %v", err)
			}
			return g.check(b)
		})
		var re *webrtc.RefusalError
		if !errors.As(err, &re) || re.Reason != signal.RefuseBadOffer {
			t.Fatalf("Offer = %v, want a bad_offer refusal", err)
		}
		noAddress(t, err)
	})
	t.Run("a refusal for an offer whose only candidate is malformed masks its addresses", func(t *testing.T) {
		_, o := newTestViewer(t, viewerOptions{})
		var lines []string
		for _, l := range strings.SplitAfter(o.SDP, "\n") {
			if strings.HasPrefix(l, "a=candidate:") {
				l = "a=" + bad[0].Candidate + "\r\n"
			}
			lines = append(lines, l)
		}
		o.SDP = strings.Join(lines, "")
		o.Grant = g.valid(t)
		_, err := s.Offer(ctx, o, g.check)
		var re *webrtc.RefusalError
		if !errors.As(err, &re) || re.Reason != signal.RefuseBadOffer {
			t.Fatalf("Offer = %v, want a bad_offer refusal", err)
		}
		noAddress(t, err)
	})
}
