package receiver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/h264"
	"github.com/camagent/camagent/tools/camview/camviewtest"
	"github.com/camagent/camagent/tools/camview/receiver"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// waitStats waits until cond holds for the session's stats, or fails.
func waitStats(t *testing.T, s *receiver.Session, what string, cond func(receiver.Stats) bool) receiver.Stats {
	t.Helper()
	deadline := time.Now().Add(camviewtest.Timeout)
	for {
		st := s.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen: %+v (ended: %v)", what, st, s.Err())
		}
		select {
		case <-s.Done():
			t.Fatalf("session ended before %s: %v; %+v", what, s.Err(), s.Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func watch(t *testing.T, cam *camviewtest.Camera, r *relay.Relay, grant []byte, out io.Writer) *receiver.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), camviewtest.Timeout)
	defer cancel()
	s, err := receiver.Watch(ctx, r, cam.ID, grant, receiver.Options{LoopbackOnly: true, Out: out})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestWatchRecordsTheCamerasVideoFromAKeyframe(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	var out bytes.Buffer
	s := watch(t, cam, r, cam.Grant(t, nil), &out)

	select {
	case <-s.FirstKeyframe():
	case <-time.After(camviewtest.Timeout):
		t.Fatalf("no keyframe: %+v", s.Stats())
	}
	st := waitStats(t, s, "60 frames", func(st receiver.Stats) bool { return st.Frames >= 60 })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !errors.Is(s.Err(), receiver.ErrClosed) {
		t.Errorf("Err after Close = %v, want ErrClosed", s.Err())
	}
	if r.Sessions() != 0 {
		t.Errorf("the relay still knows %d sessions after Close", r.Sessions())
	}
	st = s.Stats()
	if st.Width != camviewtest.ClipWidth || st.Height != camviewtest.ClipHeight {
		t.Errorf("picture %dx%d, want %dx%d", st.Width, st.Height, camviewtest.ClipWidth, camviewtest.ClipHeight)
	}
	if st.Lost != 0 || st.Packets < st.Frames || st.Bytes == 0 || st.Keyframes < 1 {
		t.Errorf("implausible stats on loopback: %+v", st)
	}
	if st.TimeToFirstFrame <= 0 || st.TimeToFirstFrame > camviewtest.Timeout || st.OfferSent.IsZero() {
		t.Errorf("time to first frame %v (offer sent %v)", st.TimeToFirstFrame, st.OfferSent)
	}
	if st.MediaDuration < time.Second || st.Elapsed <= 0 {
		t.Errorf("media duration %v, elapsed %v for %d frames", st.MediaDuration, st.Elapsed, st.Frames)
	}

	// The output is Annex B that starts at a keyframe with its parameter sets and holds
	// every frame counted from there.
	sp := h264.NewSplitter(bytes.NewReader(out.Bytes()), 0)
	var aus []h264.AccessUnit
	for {
		au, err := sp.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("output does not split: %v", err)
		}
		aus = append(aus, au)
	}
	if len(aus) == 0 || !aus[0].Keyframe || !aus[0].HasParams {
		t.Fatalf("output does not start with a keyframe and its parameter sets (%d access units)", len(aus))
	}
	if len(aus) < 60 || len(aus) > st.Frames {
		t.Errorf("output holds %d access units; %d frames were received", len(aus), st.Frames)
	}
}

func TestWatchEndsWhenTheCameraSaysBye(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	s := watch(t, cam, r, cam.Grant(t, nil), nil)
	waitStats(t, s, "the first frame", func(st receiver.Stats) bool { return st.Frames > 0 })

	// A rotation raises the camera's epoch: it ends every live session with "revoked".
	cam.Rotate(t)
	select {
	case <-s.Done():
	case <-time.After(camviewtest.Timeout):
		t.Fatal("the session did not end with the rotation")
	}
	var bye *receiver.ByeError
	if !errors.As(s.Err(), &bye) || bye.Reason != signal.ByeRevoked {
		t.Fatalf("Err = %v, want the camera's bye revoked", s.Err())
	}
	if r.Sessions() != 0 {
		t.Errorf("the relay still knows %d sessions", r.Sessions())
	}
}

func TestWatchIsRefusedWithTheCamerasReason(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	for _, tc := range []struct {
		name  string
		grant []byte
	}{
		{"an expired grant", cam.ExpiredGrant(t)},
		{"another camera's grant", cam.Grant(t, func(g *certs.Grant) { g.Device = "cam-0002" })},
		{"a grant that is not signed", []byte("not a grant")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), camviewtest.Timeout)
			defer cancel()
			s, err := receiver.Watch(ctx, r, cam.ID, tc.grant, receiver.Options{LoopbackOnly: true})
			var refused *relay.RefusedError
			if !errors.As(err, &refused) || refused.Refusal.Reason != signal.RefuseGrant {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Watch = %v, want a grant refusal", err)
			}
			if r.Sessions() != 0 {
				t.Errorf("the relay keeps %d sessions after a refusal", r.Sessions())
			}
		})
	}
}

func TestOptionsAreChecked(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	for _, tc := range []struct {
		name string
		o    receiver.Options
	}{
		{"relay only without a TURN server", receiver.Options{RelayOnly: true, ICEServers: []signal.ICEServer{{URLs: []string{"stun:127.0.0.1:3478"}}}}},
		{"loopback only with a STUN server elsewhere", receiver.Options{LoopbackOnly: true, ICEServers: []signal.ICEServer{{URLs: []string{"stun:192.0.2.1:3478"}}}}},
		{"a TURN server without credentials", receiver.Options{ICEServers: []signal.ICEServer{{URLs: []string{"turn:127.0.0.1:3478"}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := receiver.Watch(context.Background(), r, cam.ID, cam.Grant(t, nil), tc.o)
			if err == nil {
				s.Close()
				t.Fatal("Watch accepted the options")
			}
		})
	}
}

// failingWriter refuses every write, as a full disk would.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestAnOutputThatFailsEndsTheSession(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	s := watch(t, cam, r, cam.Grant(t, nil), failingWriter{})
	select {
	case <-s.Done():
	case <-time.After(camviewtest.Timeout):
		t.Fatal("the session went on with an output that fails")
	}
	var oe *receiver.OutputError
	if !errors.As(s.Err(), &oe) || oe.Err.Error() != "disk full" {
		t.Fatalf("Err = %v, want the output's error", s.Err())
	}
	if r.Sessions() != 0 {
		t.Error("the camera was not told: the relay still knows the session")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after the end: %v", err)
	}
}
