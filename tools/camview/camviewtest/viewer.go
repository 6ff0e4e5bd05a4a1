package camviewtest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	pion "github.com/pion/webrtc/v4"
)

// Viewer is a bare pion receiver with ICE confined to loopback, for tests that carry its
// offer and answer themselves (through a relay or over WHEP): it counts the RTP packets with
// the marker bit, one per frame.
type Viewer struct {
	pc *pion.PeerConnection
	// SDP is the offer, with every candidate gathered.
	SDP string

	mu      sync.Mutex
	frames  int
	changed chan struct{}
}

// NewViewer makes a receiver and its offer: H.264 constrained baseline, receive only. It is
// closed when the test ends.
func NewViewer(t testing.TB) *Viewer {
	t.Helper()
	me := &pion.MediaEngine{}
	if err := me.RegisterCodec(pion.RTPCodecParameters{
		RTPCodecCapability: pion.RTPCodecCapability{MimeType: pion.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
		PayloadType: 102,
	}, pion.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := pion.RegisterDefaultInterceptors(me, reg); err != nil {
		t.Fatal(err)
	}
	var se pion.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
	loopback := func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil }
	se.SetIPFilter(loopback)
	se.SetRemoteIPFilter(loopback)
	pc, err := pion.NewAPI(pion.WithMediaEngine(me), pion.WithInterceptorRegistry(reg), pion.WithSettingEngine(se)).NewPeerConnection(pion.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	v := &Viewer{pc: pc, changed: make(chan struct{})}
	t.Cleanup(func() { pc.Close() })
	pc.OnTrack(func(tr *pion.TrackRemote, _ *pion.RTPReceiver) {
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if pkt.Marker {
				v.mu.Lock()
				v.frames++
				close(v.changed)
				v.changed = make(chan struct{})
				v.mu.Unlock()
			}
		}
	})
	if _, err := pc.AddTransceiverFromKind(pion.RTPCodecTypeVideo, pion.RTPTransceiverInit{Direction: pion.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := pion.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gathered:
	case <-time.After(Timeout):
		t.Fatal("viewer ICE gathering did not complete")
	}
	v.SDP = pc.LocalDescription().SDP
	return v
}

// Accept applies the camera's answer.
func (v *Viewer) Accept(t testing.TB, answerSDP string) {
	t.Helper()
	if err := v.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: answerSDP}); err != nil {
		t.Fatalf("applying the answer: %v", err)
	}
}

// WaitFrames waits until n frames have arrived, or fails the test.
func (v *Viewer) WaitFrames(t testing.TB, n int) {
	t.Helper()
	deadline := time.After(Timeout)
	for {
		v.mu.Lock()
		got, ch := v.frames, v.changed
		v.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("the viewer got %d frames, want %d", got, n)
		}
	}
}
