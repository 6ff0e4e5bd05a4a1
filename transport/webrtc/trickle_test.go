package webrtc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

func TestTrickledCandidatesAreRateLimitedAndCappedPerSession(t *testing.T) {
	fake := clocktest.New(time.Now())
	g := newGrants(t)
	g.now = fake.Now
	// The clock moves some 17 minutes below; the sessions' grants last an hour, and neither
	// may time out.
	s := startStreamer(t, webrtc.Config{Source: fileSource(t), Clock: fake, ConnectTimeout: time.Hour})
	ctx := context.Background()
	v, o := newTestViewer(t, viewerOptions{})
	v.connect(ctx, s, o, g.valid(t), g.check)
	v.waitFrames(1)

	// Each candidate is the end-of-candidates mark, which pion takes any number of times.
	taken, dropped := 0, 0
	add := func(offer signal.Offer) error {
		session := offer.Session
		err := s.AddCandidate(session, offer.Key, signal.ICECandidate{})
		var de *webrtc.DroppedCandidateError
		switch {
		case err == nil:
			if session == o.Session {
				taken++
			}
		case errors.As(err, &de):
			dropped++
			if de.Dropped != uint64(dropped) {
				t.Fatalf("drop %d reported as drop %d", dropped, de.Dropped)
			}
		default:
			t.Fatalf("AddCandidate = %v", err)
		}
		return err
	}
	// addN adds n candidates that must all be taken, then one that must be dropped with want.
	addN := func(n int, want error) {
		t.Helper()
		for i := range n {
			if err := add(o); err != nil {
				t.Fatalf("candidate %d of %d: %v", i+1, n, err)
			}
		}
		if err := add(o); !errors.Is(err, want) {
			t.Fatalf("candidate %d = %v, want %v", n+1, err, want)
		}
	}

	t.Run("a burst is taken, then candidates beyond it are dropped", func(t *testing.T) {
		addN(webrtc.CandidateBurst, webrtc.ErrCandidateRate)
		if err := add(o); !errors.Is(err, webrtc.ErrCandidateRate) {
			t.Fatalf("AddCandidate = %v, want ErrCandidateRate", err)
		}
	})
	t.Run("the allowance comes back at CandidateRate per second", func(t *testing.T) {
		fake.Advance(time.Second / webrtc.CandidateRate)
		addN(1, webrtc.ErrCandidateRate)
		fake.Advance(time.Second)
		addN(webrtc.CandidateRate, webrtc.ErrCandidateRate)
	})
	t.Run("a quiet spell earns no more than one burst", func(t *testing.T) {
		fake.Advance(time.Hour / 4)
		addN(webrtc.CandidateBurst, webrtc.ErrCandidateRate)
	})
	t.Run("another session has its own allowance", func(t *testing.T) {
		v2, o2 := newTestViewer(t, viewerOptions{})
		v2.connect(ctx, s, o2, g.valid(t), g.check)
		for range webrtc.CandidateBurst {
			if err := add(o2); err != nil {
				t.Fatalf("the second session's candidate: %v", err)
			}
		}
	})
	t.Run("no more than MaxRemoteCandidates are taken in all", func(t *testing.T) {
		for taken < webrtc.MaxRemoteCandidates {
			fake.Advance(time.Second / webrtc.CandidateRate)
			if err := add(o); err != nil {
				t.Fatalf("candidate %d: %v", taken+1, err)
			}
		}
		fake.Advance(time.Minute)
		if err := add(o); !errors.Is(err, webrtc.ErrTooManyCandidates) {
			t.Fatalf("candidate %d = %v, want ErrTooManyCandidates", taken+1, err)
		}
	})
	t.Run("the session's stats count the drops", func(t *testing.T) {
		for _, ss := range s.Stats().Sessions {
			if ss.Session == o.Session && ss.CandidatesDropped != uint64(dropped) {
				t.Fatalf("CandidatesDropped %d, want %d", ss.CandidatesDropped, dropped)
			}
			if ss.Session != o.Session && ss.CandidatesDropped != 0 {
				t.Fatalf("the other session dropped %d", ss.CandidatesDropped)
			}
		}
	})
	t.Run("the session still streams", func(t *testing.T) {
		n := v.frameCount()
		v.waitFrames(n + 1)
	})
}
