package webrtc_test

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	pion "github.com/pion/webrtc/v4"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/camera/cameratest"
	"github.com/camagent/camagent/device/h264"
	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

var profileRe = regexp.MustCompile(`profile-level-id=([0-9a-fA-F]{6})`)

func TestViewerReceivesLiveVideoStartingWithAKeyframe(t *testing.T) {
	src := fileSource(t)
	g, e := newGrants(t), newEnds()
	s := startStreamer(t, webrtc.Config{Source: src, OnEnd: e.onEnd})
	v, offer := newTestViewer(t, viewerOptions{})
	answer := v.connect(context.Background(), s, offer, g.valid(t), g.check)

	t.Run("the answer names the source's profile-level-id", func(t *testing.T) {
		got := profileRe.FindAllStringSubmatch(answer.SDP, -1)
		if len(got) == 0 {
			t.Fatalf("answer has no profile-level-id")
		}
		for _, m := range got {
			if m[1] != src.Info().SDPProfileLevelID {
				t.Errorf("answer names profile-level-id %s, the source produces %s", m[1], src.Info().SDPProfileLevelID)
			}
		}
	})

	frames := v.waitFrames(30)
	t.Run("the first frame is a keyframe with its parameter sets", func(t *testing.T) {
		if !frames[0].keyframe() {
			t.Fatalf("first frame has NAL types %v", frames[0].nalTypes)
		}
	})
	t.Run("timestamps advance by one frame interval", func(t *testing.T) {
		for i := 1; i < len(frames); i++ {
			if d := frames[i].ts - frames[i-1].ts; d != 3000 {
				t.Fatalf("frame %d: timestamp step %d, want 3000 (30 fps on the 90 kHz clock)", i, d)
			}
		}
	})
	t.Run("stats count the viewer and its frames", func(t *testing.T) {
		// The camera counts a frame once its last packet is written, which can be just after
		// the viewer has it.
		deadline := time.Now().Add(waitLong)
		for st := s.Stats(); len(st.Sessions) == 1 && st.Sessions[0].FramesSent < 30 && time.Now().Before(deadline); st = s.Stats() {
			time.Sleep(10 * time.Millisecond)
		}
		st := s.Stats()
		if st.Viewers != 1 || st.PeerConnections != 1 || len(st.Sessions) != 1 || !st.Sessions[0].Connected || st.Sessions[0].FramesSent < 30 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("the session ends when the viewer closes its side", func(t *testing.T) {
		v.close()
		if r := e.wait(t, v.session); r != signal.ByeFailed {
			t.Fatalf("ended with %q, want %q", r, signal.ByeFailed)
		}
		if st := s.Stats(); st.Viewers != 0 {
			t.Fatalf("stats after the end: %+v", st)
		}
	})
}

// emitter feeds a cameratest.Source with the clip's access units at 30 fps timestamps.
type emitter struct {
	t   *testing.T
	src *cameratest.Source
	aus []h264.AccessUnit
	n   int
}

func newEmitter(t *testing.T) *emitter {
	src := &cameratest.Source{StreamInfo: camera.StreamInfo{ProfileLevelID: "42c00d", SDPProfileLevelID: "42e00d", Width: 320, Height: 240}}
	return &emitter{t: t, src: src, aus: clipAUs(t)}
}

// emit sends the next frames; change, if not nil, may alter each access unit first.
func (e *emitter) emit(frames int, change func(i int, au h264.AccessUnit) h264.AccessUnit) {
	e.t.Helper()
	for range frames {
		au := e.aus[e.n%len(e.aus)]
		if change != nil {
			au = change(e.n, au)
		}
		f := camera.Frame{AU: au, PTS: time.Duration(e.n) * time.Second / 30, Seq: uint64(e.n), Discontinuity: e.n == 0}
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		err := e.src.Emit(ctx, f)
		cancel()
		if err != nil {
			e.t.Fatalf("emit frame %d: %v", e.n, err)
		}
		e.n++
	}
}

func TestLateViewerStartsAtOnceFromTheCachedKeyframe(t *testing.T) {
	em := newEmitter(t)
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: em.src})
	// Frames 0 (a keyframe) to 9 are sent before the viewer exists; the next keyframe would
	// be frame 30, which is never sent.
	em.emit(10, nil)
	v, offer := newTestViewer(t, viewerOptions{})
	v.connect(context.Background(), s, offer, g.valid(t), g.check)

	frames := v.waitFrames(10)
	if !frames[0].keyframe() {
		t.Fatalf("first frame has NAL types %v, want a keyframe", frames[0].nalTypes)
	}
	em.emit(5, nil)
	frames = v.waitFrames(15)
	if len(frames) != 15 {
		t.Fatalf("got %d frames, want the 10 cached and 5 live", len(frames))
	}
	for i := 1; i < len(frames); i++ {
		if d := frames[i].ts - frames[i-1].ts; d != 3000 {
			t.Fatalf("frame %d: timestamp step %d, want 3000: cached and live frames keep their presentation times", i, d)
		}
	}
}

func TestKeyframeWithoutParameterSetsGetsThemFromTheCache(t *testing.T) {
	em := newEmitter(t)
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: em.src})
	// An encoder without --inline: only the first keyframe carries SPS and PPS.
	stripParams := func(i int, au h264.AccessUnit) h264.AccessUnit {
		if i == 0 {
			return au
		}
		var nals [][]byte
		for _, n := range au.NALs {
			if t := h264.TypeOf(n); t != h264.NALSPS && t != h264.NALPPS {
				nals = append(nals, n)
			}
		}
		au.NALs, au.HasParams = nals, false
		return au
	}
	em.emit(33, stripParams) // keyframes at 0 and 30; the viewer joins after frame 32
	v, offer := newTestViewer(t, viewerOptions{})
	v.connect(context.Background(), s, offer, g.valid(t), g.check)
	frames := v.waitFrames(3)
	if !frames[0].keyframe() || len(frames) != 3 {
		t.Fatalf("got %d frames, the first with NAL types %v; want frames 30 to 32, the first with SPS, PPS and IDR", len(frames), frames[0].nalTypes)
	}
}

func TestPictureLossIndicationBecomesAKeyframeRequest(t *testing.T) {
	em := newEmitter(t)
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: em.src})
	em.emit(2, nil)
	v, offer := newTestViewer(t, viewerOptions{})
	v.connect(context.Background(), s, offer, g.valid(t), g.check)
	v.waitFrames(2)
	select {
	case <-em.src.KeyframeRequested():
		t.Fatal("keyframe requested before any loss")
	default:
	}

	v.mu.Lock()
	ssrc := v.ssrc
	v.mu.Unlock()
	if err := v.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-em.src.KeyframeRequested():
	case <-time.After(waitLong):
		t.Fatal("the source was not asked for a keyframe")
	}
	st := s.Stats()
	if st.KeyframeRequests != 1 || st.KeyframesRequested != 1 || st.Sessions[0].KeyframeRequests != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNACKedPacketsAreRetransmitted(t *testing.T) {
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: fileSource(t)})
	v, offer := newTestViewer(t, viewerOptions{acceptReplays: true})
	v.connect(context.Background(), s, offer, g.valid(t), g.check)
	v.waitFrames(1)

	v.mu.Lock()
	ssrc, seq := v.ssrc, v.lastSeq
	v.mu.Unlock()
	// Works only because the Streamer reads each sender's RTCP: pion's NACK responder sees
	// a NACK only when someone reads.
	nack := &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: ssrc, Nacks: []rtcp.NackPair{{PacketID: seq}}}
	if err := v.pc.WriteRTCP([]rtcp.Packet{nack}); err != nil {
		t.Fatal(err)
	}
	v.waitFor("the NACKed packet coming again", func() bool { return v.seqs[seq] >= 2 })
}

func TestGrantIsCheckedBeforeAnyPeerConnection(t *testing.T) {
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: fileSource(t)})
	_, offer := newTestViewer(t, viewerOptions{})
	tests := []struct {
		name  string
		grant []byte
		check webrtc.GrantChecker
		want  []error
		why   signal.RefusalReason
	}{
		{"an expired grant", g.sign(t, deviceID, 1, -time.Hour), g.check, []error{webrtc.ErrGrant, certs.ErrExpired}, signal.RefuseGrant},
		{"another device's grant", g.sign(t, "cam-0002", 1, time.Hour), g.check, []error{webrtc.ErrGrant, certs.ErrWrongTarget}, signal.RefuseGrant},
		{"a forged grant", []byte("not a grant"), g.check, []error{webrtc.ErrGrant}, signal.RefuseGrant},
		{"a grant whose checker says it has already expired", g.valid(t), func([]byte) (webrtc.Grant, error) {
			return webrtc.Grant{Expiry: time.Now().Add(-time.Second)}, nil
		}, []error{webrtc.ErrGrant}, signal.RefuseGrant},
		{"a checker in privacy mode", g.valid(t), func([]byte) (webrtc.Grant, error) {
			return webrtc.Grant{}, &webrtc.RefusalError{Reason: signal.RefusePrivacy, Err: errors.New("privacy mode")}
		}, nil, signal.RefusePrivacy},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			o := offer
			o.Grant = tt.grant
			_, err := s.Offer(context.Background(), o, tt.check)
			var re *webrtc.RefusalError
			if !errors.As(err, &re) || re.Reason != tt.why {
				t.Fatalf("Offer = %v, want a %q refusal", err, tt.why)
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("Offer = %v, does not match %v", err, w)
				}
			}
			if r := re.Refusal(o.Session); r.Validate() != nil || r.Reason != tt.why {
				t.Errorf("Refusal message %+v", r)
			}
			if st := s.Stats(); st.PeerConnections != 0 || st.Viewers != 0 {
				t.Fatalf("a refused grant left %+v", st)
			}
		})
	}
}

func TestViewerLimit(t *testing.T) {
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: fileSource(t), MaxViewers: 2})
	ctx := context.Background()
	first, o1 := newTestViewer(t, viewerOptions{})
	first.connect(ctx, s, o1, g.valid(t), g.check)
	second, o2 := newTestViewer(t, viewerOptions{})
	second.connect(ctx, s, o2, g.valid(t), g.check)

	_, o3 := newTestViewer(t, viewerOptions{})
	o3.Grant = g.valid(t)
	_, err := s.Offer(ctx, o3, g.check)
	var re *webrtc.RefusalError
	if !errors.As(err, &re) || re.Reason != signal.RefuseLimit || !errors.Is(err, webrtc.ErrLimit) {
		t.Fatalf("third offer: %v, want a limit refusal", err)
	}
	if st := s.Stats(); st.PeerConnections != 2 || st.Viewers != 2 {
		t.Fatalf("stats %+v", st)
	}

	s.Close(o1.Session, signal.ByeHangup)
	if _, err := s.Offer(ctx, o3, g.check); err != nil {
		t.Fatalf("an offer after a viewer left: %v", err)
	}
}

// A session id is no secret: the camera's answer, candidates and byes carry it on
// dev/<id>/up/signal, which every viewer relay reads. Only the holder of the offer's key may
// end the session or trickle candidates into it.
func TestOnlyTheOffersKeyEndsOrFeedsItsSession(t *testing.T) {
	g := newGrants(t)
	e := newEnds()
	s := startStreamer(t, webrtc.Config{Source: fileSource(t), OnEnd: e.onEnd})
	ctx := context.Background()
	v, o := newTestViewer(t, viewerOptions{})
	v.connect(ctx, s, o, g.valid(t), g.check)
	v.waitFrames(1)

	for name, key := range map[string]string{"no key": "", "another key": signal.NewKey(), "the session id": o.Session} {
		if err := s.AddCandidate(o.Session, key, signal.ICECandidate{}); !errors.Is(err, webrtc.ErrUnknownSession) {
			t.Fatalf("AddCandidate with %s = %v, want ErrUnknownSession", name, err)
		}
		if err := s.Hangup(o.Session, key); !errors.Is(err, webrtc.ErrUnknownSession) {
			t.Fatalf("Hangup with %s = %v, want ErrUnknownSession", name, err)
		}
	}
	st := s.Stats()
	if st.Viewers != 1 || st.Sessions[0].CandidatesDropped != 0 || e.count() != 0 {
		t.Fatalf("messages without the session's key touched it: %+v, %d ended", st, e.count())
	}
	n := v.frameCount()
	v.waitFrames(n + 1) // still streaming

	if err := s.AddCandidate(o.Session, o.Key, signal.ICECandidate{}); err != nil {
		t.Fatalf("AddCandidate with the offer's key: %v", err)
	}
	if err := s.Hangup(o.Session, o.Key); err != nil {
		t.Fatalf("Hangup with the offer's key: %v", err)
	}
	if r := e.wait(t, o.Session); r != signal.ByeHangup {
		t.Fatalf("the session ended with %q, want hangup", r)
	}
	if err := s.Hangup(o.Session, o.Key); !errors.Is(err, webrtc.ErrUnknownSession) {
		t.Fatalf("a second Hangup = %v, want ErrUnknownSession", err)
	}
}

func TestBadOffersAreRefused(t *testing.T) {
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: fileSource(t)})
	ctx := context.Background()
	_, vp8Only := newTestViewer(t, viewerOptions{codecs: []pion.RTPCodecParameters{vp8Codec()}})
	_, highOnly := newTestViewer(t, viewerOptions{codecs: []pion.RTPCodecParameters{h264Codec(100, "640032")}})
	_, good := newTestViewer(t, viewerOptions{})
	notSDP := good
	notSDP.SDP = "v=0\r\nthis is not SDP\r\n"
	farTURN := good
	farTURN.ICEServers = []signal.ICEServer{{URLs: []string{"turn:192.0.2.1:3478"}, Username: "u", Credential: "c"}}
	badSession := good
	badSession.Session = "not-hex"
	_, sendrecv := newTestViewer(t, viewerOptions{direction: pion.RTPTransceiverDirectionSendrecv})
	_, dataChannel := newTestViewer(t, viewerOptions{dataChannel: true})

	for _, tt := range []struct {
		name  string
		offer signal.Offer
	}{
		{"an offer without H.264", vp8Only},
		{"an offer with only another H.264 profile", highOnly},
		{"an offer that is not SDP", notSDP},
		{"a TURN server off loopback in loopback-only mode", farTURN},
		{"a malformed session id", badSession},
		{"an offer to send video too", sendrecv},
		{"an offer with a data channel", dataChannel},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			tt.offer.Grant = g.valid(t)
			_, err := s.Offer(ctx, tt.offer, g.check)
			var re *webrtc.RefusalError
			if !errors.As(err, &re) || re.Reason != signal.RefuseBadOffer || !errors.Is(err, webrtc.ErrBadOffer) {
				t.Fatalf("Offer = %v, want a bad_offer refusal", err)
			}
			if st := s.Stats(); st.Viewers != 0 {
				t.Fatalf("a refused offer left %+v", st)
			}
		})
	}

	t.Run("refuses a session id that is already live", func(t *testing.T) {
		v, o := newTestViewer(t, viewerOptions{})
		v.connect(ctx, s, o, g.valid(t), g.check)
		_, err := s.Offer(ctx, o, g.check)
		if !errors.Is(err, webrtc.ErrBadOffer) {
			t.Fatalf("Offer = %v, want ErrBadOffer", err)
		}
		// The same session id with another key is someone who saw the id: no refusal
		// answers it, so the viewer never reads one for its live session.
		_, other := newTestViewer(t, viewerOptions{})
		other.Session = o.Session
		other.Grant = g.valid(t)
		_, err = s.Offer(ctx, other, g.check)
		var re *webrtc.RefusalError
		if !errors.Is(err, webrtc.ErrForeignSession) || errors.As(err, &re) {
			t.Fatalf("Offer for a live session with another key = %v, want ErrForeignSession and no refusal", err)
		}
		if st := s.Stats(); st.Viewers != 1 || st.Sessions[0].Session != o.Session {
			t.Fatalf("the foreign offer changed the live sessions: %+v", st)
		}
	})
	t.Run("refuses a nil grant checker", func(t *testing.T) {
		o := good
		o.Grant = g.valid(t)
		if _, err := s.Offer(ctx, o, nil); err == nil {
			t.Fatal("Offer accepted a nil GrantChecker")
		}
	})
}

func TestEverySessionPresentsTheSameDTLSCertificate(t *testing.T) {
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: fileSource(t)})
	fingerprint := regexp.MustCompile(`a=fingerprint:\S+ \S+`)
	var seen []string
	for range 3 {
		v, o := newTestViewer(t, viewerOptions{})
		a := v.connect(context.Background(), s, o, g.valid(t), g.check)
		seen = append(seen, fingerprint.FindString(a.SDP))
	}
	if seen[0] == "" || seen[0] != seen[1] || seen[1] != seen[2] {
		t.Fatalf("fingerprints %q", seen)
	}
}

// trickleViewer makes a viewer whose offer carries no candidates; gathered returns them,
// the end-of-candidates mark last.
func trickleViewer(t *testing.T) (v *testViewer, offer signal.Offer, gathered func() []signal.ICECandidate) {
	t.Helper()
	cands := make(chan signal.ICECandidate, 16)
	v, offer = newTestViewer(t, viewerOptions{trickle: func(c *pion.ICECandidate) {
		if c == nil {
			cands <- signal.ICECandidate{}
			return
		}
		j := c.ToJSON()
		cands <- signal.ICECandidate{Candidate: j.Candidate, SDPMid: j.SDPMid, SDPMLineIndex: j.SDPMLineIndex, UsernameFragment: j.UsernameFragment}
	}})
	if strings.Contains(offer.SDP, "a=candidate") {
		t.Fatal("the offer carries candidates")
	}
	return v, offer, func() []signal.ICECandidate {
		var all []signal.ICECandidate
		for {
			select {
			case c := <-cands:
				all = append(all, c)
				if c.Candidate == "" {
					return all
				}
			case <-time.After(waitLong):
				t.Fatal("viewer gathering did not end")
			}
		}
	}
}

func TestTrickledCandidatesConnect(t *testing.T) {
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: fileSource(t)})
	ctx := context.Background()

	t.Run("when they come after the answer", func(t *testing.T) {
		v, offer, gathered := trickleViewer(t)
		if err := s.AddCandidate(offer.Session, offer.Key, signal.ICECandidate{}); !errors.Is(err, webrtc.ErrUnknownSession) {
			t.Fatalf("AddCandidate before the offer = %v, want ErrUnknownSession", err)
		}
		v.connect(ctx, s, offer, g.valid(t), g.check)
		for _, c := range gathered() {
			if err := s.AddCandidate(offer.Session, offer.Key, c); err != nil {
				t.Fatal(err)
			}
		}
		if f := v.waitFrames(1); !f[0].keyframe() {
			t.Fatalf("first frame %v", f[0].nalTypes)
		}
		var err error
		for range 100 {
			if err = s.AddCandidate(offer.Session, offer.Key, signal.ICECandidate{}); err != nil {
				break
			}
		}
		var dropped *webrtc.DroppedCandidateError
		if !errors.As(err, &dropped) || !errors.Is(err, webrtc.ErrCandidateRate) || dropped.Dropped != 1 {
			t.Fatalf("AddCandidate = %v after many at once, want the first ErrCandidateRate drop", err)
		}
	})
	t.Run("when they come while the offer is being answered", func(t *testing.T) {
		v, offer, gathered := trickleViewer(t)
		cands := gathered()
		// The grant check runs after the session is reserved and before the offer is applied:
		// candidates added then wait for it.
		check := func(b []byte) (webrtc.Grant, error) {
			for _, c := range cands {
				if err := s.AddCandidate(offer.Session, offer.Key, c); err != nil {
					return webrtc.Grant{}, err
				}
			}
			return g.check(b)
		}
		v.connect(ctx, s, offer, g.valid(t), check)
		if f := v.waitFrames(1); !f[0].keyframe() {
			t.Fatalf("first frame %v", f[0].nalTypes)
		}
	})
	t.Run("when they come between Accept and the answer", func(t *testing.T) {
		v, offer, gathered := trickleViewer(t)
		offer.Grant = g.valid(t)
		answer, err := s.Accept(offer, g.check)
		if err != nil {
			t.Fatal(err)
		}
		// The offer's SDP has no candidate: the viewer is reached only through these.
		for _, c := range gathered() {
			if err := s.AddCandidate(offer.Session, offer.Key, c); err != nil {
				t.Fatalf("AddCandidate after Accept: %v", err)
			}
		}
		a, err := answer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v.accept(a)
		if f := v.waitFrames(1); !f[0].keyframe() {
			t.Fatalf("first frame %v", f[0].nalTypes)
		}
	})
	t.Run("and a bad one among them refuses the offer once it is applied", func(t *testing.T) {
		_, offer, _ := trickleViewer(t)
		check := func(b []byte) (webrtc.Grant, error) {
			bad := signal.ICECandidate{Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 notaport typ host"}
			if err := s.AddCandidate(offer.Session, offer.Key, bad); err != nil {
				return webrtc.Grant{}, err
			}
			return g.check(b)
		}
		offer.Grant = g.valid(t)
		if _, err := s.Offer(ctx, offer, check); !errors.Is(err, webrtc.ErrBadOffer) {
			t.Fatalf("Offer = %v, want ErrBadOffer", err)
		}
	})
}

func TestFanOutOneStalledViewerDoesNotSlowTheOthers(t *testing.T) {
	const viewers = 10 // the fan-out: 10 viewers at once, one of them stalled
	g := newGrants(t)
	s := startStreamer(t, webrtc.Config{Source: fileSource(t)})
	ctx := context.Background()
	var healthy []*testViewer
	stalled, o := newTestViewer(t, viewerOptions{blocked: true})
	stalled.connect(ctx, s, o, g.valid(t), g.check)
	for range viewers - 1 {
		v, o := newTestViewer(t, viewerOptions{})
		v.connect(ctx, s, o, g.valid(t), g.check)
		healthy = append(healthy, v)
	}
	for _, v := range healthy {
		v.waitFrames(1)
	}

	// The window: the next 90 frames the source produces (three seconds). Each healthy viewer
	// must receive at least 90% as many in the same window; the margin covers frames in
	// flight at its ends.
	start := s.Stats().FramesIn
	counts := make([]int, len(healthy))
	for i, v := range healthy {
		counts[i] = v.frameCount()
	}
	healthy[0].waitFor("the source producing 90 frames", func() bool { return s.Stats().FramesIn >= start+90 })
	produced := int(s.Stats().FramesIn - start)
	for i, v := range healthy {
		if got := v.frameCount() - counts[i]; got < produced*9/10 {
			t.Errorf("healthy viewer %d received %d frames while the source produced %d", i, got, produced)
		}
	}
	if n := stalled.frameCount(); n > 1 {
		t.Logf("the stalled viewer read %d frames before it stopped", n)
	}
	st := s.Stats()
	if st.Viewers != viewers {
		t.Fatalf("stats %+v", st)
	}
	for _, ss := range st.Sessions {
		if ss.Session != stalled.session && ss.FramesDropped != 0 {
			t.Errorf("healthy session %s dropped %d frames", ss.Session, ss.FramesDropped)
		}
	}
}

func TestCloseAllEndsEverySession(t *testing.T) {
	g, e := newGrants(t), newEnds()
	s := startStreamer(t, webrtc.Config{Source: fileSource(t), OnEnd: e.onEnd})
	ctx := context.Background()
	var vs []*testViewer
	for range 3 {
		v, o := newTestViewer(t, viewerOptions{})
		v.connect(ctx, s, o, g.valid(t), g.check)
		vs = append(vs, v)
	}
	for _, v := range vs {
		v.waitFrames(1)
	}
	// A rotation raises the grant epoch: the agent closes every live session.
	g.epoch.Add(1)
	s.CloseAll(signal.ByeRevoked)

	if st := s.Stats(); st.Viewers != 0 || len(st.Sessions) != 0 {
		t.Fatalf("stats after CloseAll: %+v", st)
	}
	for _, v := range vs {
		if r := e.wait(t, v.session); r != signal.ByeRevoked {
			t.Errorf("session %s ended with %q, want %q", v.session, r, signal.ByeRevoked)
		}
		v.waitFor("the viewer seeing its track or connection end", func() bool { return v.ended })
	}
	t.Run("the old grants are refused afterwards", func(t *testing.T) {
		_, o := newTestViewer(t, viewerOptions{})
		o.Grant = g.sign(t, deviceID, 1, time.Hour)
		if _, err := s.Offer(ctx, o, g.check); !errors.Is(err, certs.ErrOldEpoch) {
			t.Fatalf("Offer with a grant of the old epoch = %v, want ErrOldEpoch", err)
		}
	})
	t.Run("Close after the end does nothing", func(t *testing.T) {
		s.Close(vs[0].session, signal.ByeHangup)
		s.Close(signal.NewSession(), signal.ByeHangup)
		if e.count() != 3 {
			t.Fatalf("OnEnd called %d times, want 3", e.count())
		}
	})
}

func TestSessionEndsWhenItsGrantExpires(t *testing.T) {
	fake := clocktest.New(time.Now())
	g, e := newGrants(t), newEnds()
	g.now = fake.Now
	s := startStreamer(t, webrtc.Config{Source: fileSource(t), OnEnd: e.onEnd, Clock: fake})
	v, o := newTestViewer(t, viewerOptions{})
	v.connect(context.Background(), s, o, g.sign(t, deviceID, 1, time.Minute), g.check)
	v.waitFrames(5)

	fake.Advance(time.Minute - time.Second) // not yet: the grant and the clock skew remain
	if st := s.Stats(); st.Viewers != 1 {
		t.Fatalf("the session ended early: %+v", st)
	}
	fake.Advance(time.Second + certs.ClockSkew + time.Second)
	if r := e.wait(t, v.session); r != signal.ByeExpired {
		t.Fatalf("ended with %q, want %q", r, signal.ByeExpired)
	}
	v.waitFor("the viewer seeing its connection end", func() bool { return v.ended })
}

func TestSessionEndsWhenTheViewerNeverConnects(t *testing.T) {
	fake := clocktest.New(time.Now())
	g, e := newGrants(t), newEnds()
	g.now = fake.Now
	s := startStreamer(t, webrtc.Config{Source: fileSource(t), OnEnd: e.onEnd, Clock: fake, ConnectTimeout: time.Minute})
	_, o := newTestViewer(t, viewerOptions{})
	o.Grant = g.valid(t)
	for len(fake.Waiting()) > 0 {
		<-fake.Waiting()
	}
	if _, err := s.Offer(context.Background(), o, g.check); err != nil { // the answer is never applied
		t.Fatal(err)
	}
	// Three timers: the offer's gathering deadline, then the session's grant expiry and
	// connect deadline.
	for range 3 {
		select {
		case <-fake.Waiting():
		case <-time.After(waitLong):
			t.Fatal("the session set no timers")
		}
	}
	fake.Advance(time.Minute)
	if r := e.wait(t, o.Session); r != signal.ByeFailed {
		t.Fatalf("ended with %q, want %q", r, signal.ByeFailed)
	}
	if st := s.Stats(); st.Viewers != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRunEndsEverySessionWhenTheSourceFails(t *testing.T) {
	src := &failingSource{Source: fileSource(t), fail: make(chan struct{})}
	g, e := newGrants(t), newEnds()
	s, err := webrtc.New(webrtc.Config{Source: src, OnEnd: e.onEnd, LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	v, o := newTestViewer(t, viewerOptions{})
	v.connect(context.Background(), s, o, g.valid(t), g.check)
	v.waitFrames(1)

	close(src.fail)
	select {
	case err := <-done:
		if !errors.Is(err, errBroken) || !strings.HasPrefix(err.Error(), "webrtc: ") {
			t.Fatalf("Run = %v, want the source's error", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Run did not return")
	}
	if r := e.wait(t, v.session); r != signal.ByeShutdown {
		t.Fatalf("ended with %q, want %q", r, signal.ByeShutdown)
	}
	o2 := o
	o2.Session = signal.NewSession()
	o2.Grant = g.valid(t)
	if _, err := s.Offer(context.Background(), o2, g.check); !errors.Is(err, webrtc.ErrClosed) {
		t.Fatalf("Offer after Run = %v, want ErrClosed", err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, webrtc.ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
}

var errBroken = errors.New("camera broke")

// failingSource plays its Source until fail is closed, then fails.
type failingSource struct {
	camera.Source
	fail chan struct{}
}

func (f *failingSource) Run(ctx context.Context, out func(camera.Frame)) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, below
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = f.Source.Run(ctx, out)
	}()
	select {
	case <-f.fail:
		return errBroken
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestNoGoroutineOrHeapGrowthOverConnectDisconnectCycles(t *testing.T) {
	// A thousand cycles take about 30 s under -race on two cores, 8 s without; -short runs
	// fifty.
	cycles := 1000
	if testing.Short() {
		cycles = 50
	}
	// warmUp cycles start pion's and the runtime's long-lived goroutines and fill their pools
	// before the baseline is taken.
	const warmUp = 20
	// heapSlack is the live heap the cycles may add: 4 KiB a cycle, at least 1 MiB. The
	// cycles add about 0.1 MiB in all; a leaked session keeps its PeerConnection, queue and
	// buffers, some 65 KiB.
	heapSlack := max(uint64(cycles)<<12, 1<<20)
	g, e := newGrants(t), newEnds()
	s := startStreamer(t, webrtc.Config{Source: fileSource(t), OnEnd: e.onEnd})
	ctx := context.Background()
	cycle := func(i int) {
		// The viewer is closed here, not kept for the test's cleanup, so the heap measures
		// the Streamer.
		v, o := newTestViewer(t, viewerOptions{closeByCaller: true})
		v.connect(ctx, s, o, g.valid(t), g.check)
		v.waitFrames(1)
		if i%2 == 0 {
			s.Close(o.Session, signal.ByeHangup) // the camera ends it
		}
		v.close() // or the viewer does
		e.wait(t, o.Session)
	}
	for i := range warmUp {
		cycle(i)
	}
	baseline, baseHeap := settledGoroutines(), liveHeap()

	start := time.Now()
	var midHeap uint64
	for i := range cycles {
		cycle(i)
		if i+1 == cycles/2 {
			midHeap = liveHeap()
		}
	}
	elapsed := time.Since(start)
	deadline := time.Now().Add(waitLong)
	n := settledGoroutines()
	for n > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after %d cycles, %d before:\n%s", n, cycles, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond) // polling a count nothing signals
		n = settledGoroutines()
	}
	endHeap := liveHeap()
	t.Logf("%d cycles in %v (%v each); goroutines %d after the warm-up, %d at the end; live heap %.2f MiB after the warm-up, %.2f MiB halfway, %.2f MiB at the end",
		cycles, elapsed.Round(time.Millisecond), (elapsed / time.Duration(cycles)).Round(time.Microsecond), baseline, n,
		mib(baseHeap), mib(midHeap), mib(endHeap))
	if endHeap > baseHeap+heapSlack {
		t.Errorf("live heap grew from %.2f MiB to %.2f MiB over %d cycles, more than %.2f MiB", mib(baseHeap), mib(endHeap), cycles, mib(heapSlack))
	}
	if st := s.Stats(); st.Viewers != 0 || st.PeerConnections != uint64(warmUp+cycles) {
		t.Fatalf("stats %+v", st)
	}
}

// liveHeap returns the bytes of heap objects marked live by a full collection.
func liveHeap() uint64 {
	runtime.GC()
	m := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(m)
	return m[0].Value.Uint64()
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// settledGoroutines counts goroutines after letting finished ones exit.
func settledGoroutines() int {
	runtime.GC()
	return runtime.NumGoroutine()
}
