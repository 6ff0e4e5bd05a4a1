package webrtc_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	pion "github.com/pion/webrtc/v4"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/h264"
	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// clipPath is the committed test clip: 320x240, 30 fps, constrained baseline 42c00d, a
// keyframe with SPS and PPS every 30 frames, 90 frames.
const clipPath = "../../device/camera/testdata/clip.h264"

const (
	deviceID = "cam-0001"
	// waitLong bounds every wait on the network; on two loaded cores a loopback connection
	// takes well under a second.
	waitLong = 20 * time.Second
)

// grants signs and checks real viewer grants (certs), as the agent does.
type grants struct {
	key   *certs.SigningKey
	epoch atomic.Uint64
	now   func() time.Time
}

func newGrants(t *testing.T) *grants {
	t.Helper()
	k, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	g := &grants{key: k, now: time.Now}
	g.epoch.Store(1)
	return g
}

// sign returns a grant for device, valid for ttl from now.
func (g *grants) sign(t *testing.T, device string, epoch uint64, ttl time.Duration) []byte {
	t.Helper()
	now := g.now()
	b, err := certs.SignGrant(g.key, certs.Grant{
		Device: device, Epoch: epoch, Scope: certs.ScopeView, Subject: "viewer-1",
		IssuedAt: now.Add(-2 * time.Hour).Unix(), ExpiresAt: now.Add(ttl).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// valid returns a grant for this device at the current epoch, valid for an hour.
func (g *grants) valid(t *testing.T) []byte { return g.sign(t, deviceID, g.epoch.Load(), time.Hour) }

// check is the GrantChecker the agent would pass.
func (g *grants) check(b []byte) (webrtc.Grant, error) {
	cg, err := certs.OpenGrant(certs.NewVerifier(g.key.Public()), b)
	if err != nil {
		return webrtc.Grant{}, err
	}
	if err := certs.CheckGrant(cg, deviceID, g.epoch.Load(), certs.ScopeView, g.now()); err != nil {
		return webrtc.Grant{}, err
	}
	return webrtc.GrantFromCerts(cg), nil
}

// ends records Config.OnEnd calls.
type ends struct {
	mu      sync.Mutex
	reasons map[string]signal.ByeReason
	changed chan struct{}
}

func newEnds() *ends {
	return &ends{reasons: map[string]signal.ByeReason{}, changed: make(chan struct{})}
}

func (e *ends) onEnd(session string, reason signal.ByeReason) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.reasons[session]; dup {
		panic("OnEnd called twice for " + session)
	}
	e.reasons[session] = reason
	close(e.changed)
	e.changed = make(chan struct{})
}

// wait waits until session has ended and returns its reason.
func (e *ends) wait(t *testing.T, session string) signal.ByeReason {
	t.Helper()
	deadline := time.After(waitLong)
	for {
		e.mu.Lock()
		r, ok := e.reasons[session]
		ch := e.changed
		e.mu.Unlock()
		if ok {
			return r
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("session %s did not end", session)
		}
	}
}

func (e *ends) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.reasons)
}

// fileSource is a FileSource playing the committed clip in real time.
func fileSource(t *testing.T) *camera.FileSource {
	t.Helper()
	src, err := camera.NewFileSource(camera.FileConfig{Path: clipPath})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// clipAUs returns the clip's access units that carry a picture.
func clipAUs(t testing.TB) []h264.AccessUnit {
	t.Helper()
	var aus []h264.AccessUnit
	for _, au := range webrtc.ClipAUs(t) {
		if au.HasPicture() {
			aus = append(aus, au)
		}
	}
	return aus
}

// startStreamer makes a loopback-only Streamer with cfg's other fields, runs it, and stops it
// (checking that Run ended cleanly) when the test ends.
func startStreamer(t *testing.T, cfg webrtc.Config) *webrtc.Streamer {
	t.Helper()
	cfg.LoopbackOnly = true
	s, err := webrtc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
		case <-time.After(waitLong):
			t.Error("Run did not return")
		}
	})
	return s
}

// loopbackSettings confines a viewer's ICE to 127.0.0.1, as the Streamer's LoopbackOnly does.
func loopbackSettings() pion.SettingEngine {
	var se pion.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetInterfaceFilter(func(name string) bool {
		iface, err := net.InterfaceByName(name)
		return err == nil && iface.Flags&net.FlagLoopback != 0
	})
	return se
}

// receivedFrame is one access unit a viewer reassembled.
type receivedFrame struct {
	ts       uint32
	nalTypes []h264.NALType
}

func (f receivedFrame) has(t h264.NALType) bool {
	for _, x := range f.nalTypes {
		if x == t {
			return true
		}
	}
	return false
}

// keyframe reports whether the frame can start decoding: SPS, PPS and an IDR slice.
func (f receivedFrame) keyframe() bool {
	return f.has(h264.NALSPS) && f.has(h264.NALPPS) && f.has(h264.NALIDR)
}

// testViewer is a pion receiver, as camview record or a browser would be.
type testViewer struct {
	t       *testing.T
	pc      *pion.PeerConnection
	session string
	key     string // the offer's signal.Offer.Key
	// answerKey is the offer's answer key: the agent seals answers to it, the Streamer
	// returns them in the clear.
	answerKey *signal.AnswerKey

	blocked chan struct{} // while open, the reader does not read
	release sync.Once

	mu      sync.Mutex
	frames  []receivedFrame
	seqs    map[uint16]int // packets received per sequence number
	lastSeq uint16
	bytes   int // RTP bytes received
	ssrc    uint32
	ended   bool // the track ended or the connection closed or failed
	changed chan struct{}
}

type viewerOptions struct {
	codecs  []pion.RTPCodecParameters // nil: H.264 42e01f and VP8, as a browser offers
	blocked bool                      // start with reading stopped
	// trickle, if not nil, makes the offer without candidates and receives them as they are
	// gathered, then nil.
	trickle func(*pion.ICECandidate)
	// direction of the viewer's video transceiver; zero means recvonly.
	direction pion.RTPTransceiverDirection
	// dataChannel adds a data channel to the offer.
	dataChannel bool
	// acceptReplays turns SRTP replay protection off, so retransmitted packets get through.
	acceptReplays bool
	// iceServers are the viewer's STUN and TURN servers; relayOnly sets its ICE transport
	// policy to relay, so it gathers relayed candidates only.
	iceServers []pion.ICEServer
	relayOnly  bool
	// closeByCaller leaves closing the viewer to the caller instead of the test's cleanup,
	// so a test making a thousand viewers does not keep them all until it ends.
	closeByCaller bool
}

func h264Codec(pt pion.PayloadType, profile string) pion.RTPCodecParameters {
	return pion.RTPCodecParameters{
		RTPCodecCapability: pion.RTPCodecCapability{
			MimeType: pion.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profile,
			RTCPFeedback: []pion.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}},
		},
		PayloadType: pt,
	}
}

func vp8Codec() pion.RTPCodecParameters {
	return pion.RTPCodecParameters{RTPCodecCapability: pion.RTPCodecCapability{MimeType: pion.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}
}

// newTestViewer makes a viewer and its offer (with a fresh session id and no grant yet).
func newTestViewer(t *testing.T, opts viewerOptions) (*testViewer, signal.Offer) {
	t.Helper()
	codecList := opts.codecs
	if codecList == nil {
		codecList = []pion.RTPCodecParameters{vp8Codec(), h264Codec(102, "42e01f"), h264Codec(106, "4d001f")}
	}
	me := &pion.MediaEngine{}
	for _, c := range codecList {
		if err := me.RegisterCodec(c, pion.RTPCodecTypeVideo); err != nil {
			t.Fatal(err)
		}
	}
	reg := &interceptor.Registry{}
	if err := pion.RegisterDefaultInterceptors(me, reg); err != nil {
		t.Fatal(err)
	}
	se := loopbackSettings()
	se.DisableSRTPReplayProtection(opts.acceptReplays)
	api := pion.NewAPI(pion.WithMediaEngine(me), pion.WithInterceptorRegistry(reg), pion.WithSettingEngine(se))
	conf := pion.Configuration{ICEServers: opts.iceServers}
	if opts.relayOnly {
		conf.ICETransportPolicy = pion.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(conf)
	if err != nil {
		t.Fatal(err)
	}
	v := &testViewer{t: t, pc: pc, session: signal.NewSession(), key: signal.NewKey(), answerKey: signal.NewAnswerKey(), blocked: make(chan struct{}), changed: make(chan struct{}), seqs: map[uint16]int{}}
	if !opts.blocked {
		v.unblock()
	}
	if !opts.closeByCaller {
		t.Cleanup(v.close)
	}
	pc.OnConnectionStateChange(func(st pion.PeerConnectionState) {
		if st == pion.PeerConnectionStateClosed || st == pion.PeerConnectionStateFailed {
			v.update(func() { v.ended = true })
		}
	})
	pc.OnTrack(func(tr *pion.TrackRemote, _ *pion.RTPReceiver) { v.read(tr) })
	if opts.trickle != nil {
		pc.OnICECandidate(opts.trickle)
	}
	dir := opts.direction
	if dir == pion.RTPTransceiverDirectionUnknown {
		dir = pion.RTPTransceiverDirectionRecvonly
	}
	if _, err := pc.AddTransceiverFromKind(pion.RTPCodecTypeVideo, pion.RTPTransceiverInit{Direction: dir}); err != nil {
		t.Fatal(err)
	}
	if opts.dataChannel {
		if _, err := pc.CreateDataChannel("chat", nil); err != nil {
			t.Fatal(err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := pion.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	if opts.trickle != nil {
		return v, signal.Offer{V: signal.Version, Session: v.session, Key: v.key, AnswerKey: v.answerKey.Public(), SDP: offer.SDP}
	}
	select {
	case <-gathered:
	case <-time.After(waitLong):
		t.Fatal("viewer ICE gathering did not complete")
	}
	return v, signal.Offer{V: signal.Version, Session: v.session, Key: v.key, AnswerKey: v.answerKey.Public(), SDP: pc.LocalDescription().SDP}
}

// accept applies the camera's answer.
func (v *testViewer) accept(a signal.Answer) {
	v.t.Helper()
	if err := v.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: a.SDP}); err != nil {
		v.t.Fatal(err)
	}
}

// connect sends the viewer's offer with grant and applies the answer.
func (v *testViewer) connect(ctx context.Context, s *webrtc.Streamer, offer signal.Offer, grant []byte, check webrtc.GrantChecker) signal.Answer {
	v.t.Helper()
	offer.Grant = grant
	a, err := s.Offer(ctx, offer, check)
	if err != nil {
		v.t.Fatalf("Offer: %v", err)
	}
	v.accept(a)
	return a
}

func (v *testViewer) unblock() { v.release.Do(func() { close(v.blocked) }) }

func (v *testViewer) close() {
	v.unblock()
	if err := v.pc.GracefulClose(); err != nil {
		v.t.Errorf("viewer close: %v", err)
	}
}

func (v *testViewer) update(f func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f()
	close(v.changed)
	v.changed = make(chan struct{})
}

// read depacketizes the track (RFC 6184) into frames until it ends.
func (v *testViewer) read(tr *pion.TrackRemote) {
	v.update(func() { v.ssrc = uint32(tr.SSRC()) })
	defer v.update(func() { v.ended = true })
	var (
		depack  codecs.H264Packet
		cur     receivedFrame
		started bool
		pkt     = &rtp.Packet{}
		buf     = make([]byte, 1500)
	)
	for {
		<-v.blocked
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			v.t.Errorf("viewer: bad RTP packet: %v", err)
			return
		}
		v.update(func() {
			v.seqs[pkt.SequenceNumber]++
			v.lastSeq = pkt.SequenceNumber
			v.bytes += n
		})
		if v.seqs[pkt.SequenceNumber] > 1 {
			continue // a retransmission
		}
		if started && pkt.Timestamp != cur.ts {
			// A new access unit began without the previous one's marker: keep what came.
			v.addFrame(cur)
			started = false
		}
		if !started {
			cur, started = receivedFrame{ts: pkt.Timestamp}, true
		}
		annexB, err := depack.Unmarshal(pkt.Payload)
		if err != nil {
			v.t.Errorf("viewer: bad H.264 payload: %v", err)
			return
		}
		cur.nalTypes = append(cur.nalTypes, annexBTypes(annexB)...)
		if pkt.Marker {
			v.addFrame(cur)
			started = false
		}
	}
}

func (v *testViewer) addFrame(f receivedFrame) {
	v.update(func() { v.frames = append(v.frames, f) })
}

// annexBTypes returns the NAL unit types of an Annex B byte string.
func annexBTypes(b []byte) []h264.NALType {
	var types []h264.NALType
	for i := 0; i+3 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			types = append(types, h264.TypeOf(b[i+3:]))
			i += 2
		}
	}
	return types
}

// waitFor waits until cond holds for the viewer's state, or fails the test.
func (v *testViewer) waitFor(what string, cond func() bool) {
	v.t.Helper()
	deadline := time.After(waitLong)
	for {
		v.mu.Lock()
		ok, ch := cond(), v.changed
		v.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			v.t.Fatalf("viewer %s: %s did not happen", v.session, what)
		}
	}
}

// waitFrames waits for at least n frames and returns a copy of them.
func (v *testViewer) waitFrames(n int) []receivedFrame {
	v.t.Helper()
	v.waitFor("receiving frames", func() bool { return len(v.frames) >= n })
	return v.snapshot()
}

func (v *testViewer) snapshot() []receivedFrame {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]receivedFrame(nil), v.frames...)
}

func (v *testViewer) frameCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.frames)
}
