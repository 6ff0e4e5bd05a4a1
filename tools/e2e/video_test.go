package e2e

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	pion "github.com/pion/webrtc/v4"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// viewer is a pion receiver that signals over MQTT as the viewer relay identity.
type viewer struct {
	t     *testing.T
	pc    *pion.PeerConnection
	offer signal.Offer
	// answerKey opens the camera's answer, which is sealed to the offer's answer key.
	answerKey *signal.AnswerKey
	mu        sync.Mutex
	frames    int
	idr       bool
	got       chan struct{} // closed at 30 frames with a keyframe
	once      sync.Once
}

func newViewer(t *testing.T) *viewer {
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
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	pc, err := pion.NewAPI(pion.WithMediaEngine(me), pion.WithInterceptorRegistry(reg), pion.WithSettingEngine(se)).NewPeerConnection(pion.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	v := &viewer{t: t, pc: pc, got: make(chan struct{})}
	t.Cleanup(func() { pc.GracefulClose() })
	pc.OnTrack(func(tr *pion.TrackRemote, _ *pion.RTPReceiver) { v.read(tr) })
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
	case <-time.After(10 * time.Second):
		t.Fatal("viewer ICE gathering did not complete")
	}
	v.answerKey = signal.NewAnswerKey()
	v.offer = signal.Offer{V: signal.Version, Session: signal.NewSession(), Key: signal.NewKey(), AnswerKey: v.answerKey.Public(), SDP: pc.LocalDescription().SDP}
	return v
}

// read depacketizes H.264 and counts whole frames (RTP marker bits) and IDR slices.
func (v *viewer) read(tr *pion.TrackRemote) {
	var depack codecs.H264Packet
	pkt := &rtp.Packet{}
	buf := make([]byte, 1500)
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		annexB, err := depack.Unmarshal(pkt.Payload)
		v.mu.Lock()
		if err == nil {
			for _, nal := range bytes.Split(annexB, []byte{0, 0, 0, 1}) {
				if len(nal) > 0 && nal[0]&0x1f == 5 {
					v.idr = true
				}
			}
		}
		if pkt.Marker {
			v.frames++
		}
		if v.frames >= 30 && v.idr {
			v.once.Do(func() { close(v.got) })
		}
		v.mu.Unlock()
	}
}

// relay is the viewer relay's MQTT session: it sends signaling to a camera and collects what
// cameras send back.
type relay struct {
	c  *mqtt.Client
	in chan signal.Message
}

func dialRelay(t *testing.T, f *fleet.Fleet, url string) *relay {
	t.Helper()
	key, _ := certs.GenerateKey()
	c, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleViewer, Name: "test", PublicKey: key.Public(), Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := certs.TLSCertificate(c, key)
	host, _ := certs.BrokerHost(url)
	r := &relay{in: make(chan signal.Message, 64)}
	r.c, err = mqtt.New(mqtt.Config{
		BrokerURL: url, ClientID: "viewer:test", CleanSession: true,
		TLS:           certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert)),
		Subscriptions: []mqtt.Subscription{{Filter: "dev/+/up/signal", QoS: 0}},
		Handler: func(_ context.Context, m mqtt.Message) {
			if msg, err := signal.Decode(m.Payload); err == nil {
				r.in <- msg
			}
		},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wc := context.WithTimeout(ctx, 20*time.Second)
	defer wc()
	if err := r.c.WaitConnected(wctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *relay) send(t *testing.T, device string, m signal.Message) {
	t.Helper()
	b, err := signal.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// QoS 0 and not retained: signaling is never queued for an offline party (P2b).
	if err := r.c.Publish(ctx, topic.Signal(device), 0, false, b); err != nil {
		t.Fatal(err)
	}
}

// await returns the next message of session, failing after timeout.
func (r *relay) await(t *testing.T, session string) signal.Message {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-r.in:
			var s string
			switch m := m.(type) {
			case signal.SealedAnswer:
				s = m.Session
			case signal.Refusal:
				s = m.Session
			case signal.Bye:
				s = m.Session
			}
			if s == session {
				return m
			}
		case <-deadline:
			t.Fatalf("no signaling message for session %s", session)
			return nil
		}
	}
}

// Live video over WebRTC, signalled over the agent's MQTT session, only with a valid grant; a
// rotation ends the session and voids the grant (S7, S9).
func TestLiveVideoWithGrantOverMQTTSignaling(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		dir := enroll(t, e.f, "cam-0001")
		src, err := camera.NewFileSource(camera.FileConfig{Path: filepath.Join("..", "..", "device", "camera", "testdata", "clip.h264")})
		if err != nil {
			t.Fatal(err)
		}
		a := startAgent(t, dir, e.url, func(c *agent.Config) {
			fastRotation(c)
			c.Video, c.VideoLoopbackOnly = src, true
		})
		a.waitConnected(t)
		r := dialRelay(t, e.f, e.url)

		// Another device's grant, and a forged one, are refused before anything is made.
		for name, grant := range map[string][]byte{
			"another device's": signGrant(t, e.f, "cam-0002", 0),
			"garbage":          []byte("not a grant"),
		} {
			v := newViewer(t)
			v.offer.Grant = grant
			r.send(t, "cam-0001", v.offer)
			if ref, ok := r.await(t, v.offer.Session).(signal.Refusal); !ok || ref.Reason != signal.RefuseGrant {
				t.Fatalf("%s grant: got %#v, want a grant refusal", name, ref)
			}
		}

		// A valid grant: the viewer gets live video starting with a keyframe.
		grant := signGrant(t, e.f, "cam-0001", 0)
		v, _ := watchLive(t, r, "cam-0001", grant)

		// A breach rotation raises the epoch: the live session ends with "revoked", and the
		// same grant is refused from now on.
		fleetctl(t, "rotate", "--dir", e.f.Dir, "--broker", e.url, "--device", "cam-0001")
		if bye, ok := r.await(t, v.offer.Session).(signal.Bye); !ok || bye.Reason != signal.ByeRevoked {
			t.Fatalf("after the rotation: %#v, want bye revoked", bye)
		}
		v2 := newViewer(t)
		v2.offer.Grant = grant
		r.send(t, "cam-0001", v2.offer)
		if ref, ok := r.await(t, v2.offer.Session).(signal.Refusal); !ok || ref.Reason != signal.RefuseGrant {
			t.Fatalf("old-epoch grant after the rotation: %#v, want a grant refusal", ref)
		}
	}, "cam-0001")
}

// watchLive offers a viewer with grant to device through r and waits for live video (30 frames
// with a keyframe); it returns the viewer and the camera's answer.
func watchLive(t *testing.T, r *relay, device string, grant []byte) (*viewer, signal.Answer) {
	t.Helper()
	v := newViewer(t)
	v.offer.Grant = grant
	r.send(t, device, v.offer)
	sealed, ok := r.await(t, v.offer.Session).(signal.SealedAnswer)
	if !ok {
		t.Fatalf("no answer: %#v", sealed)
	}
	ans, err := v.answerKey.Open(sealed)
	if err != nil {
		t.Fatalf("the camera's answer does not open with the offer's answer key: %v", err)
	}
	if err := v.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: ans.SDP}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.got:
	case <-time.After(30 * time.Second):
		v.mu.Lock()
		defer v.mu.Unlock()
		t.Fatalf("viewer got %d frames (keyframe %v)", v.frames, v.idr)
	}
	return v, ans
}

// A camera that stops (SIGTERM, a restart) tells its viewers so before it leaves the broker:
// each live session ends with "shutdown", which camview shows, rather than a connection that
// goes quiet and fails seconds later.
func TestAStoppingCameraTellsItsViewersItIsShuttingDown(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		dir := enroll(t, e.f, "cam-0001")
		src, err := camera.NewFileSource(camera.FileConfig{Path: filepath.Join("..", "..", "device", "camera", "testdata", "clip.h264")})
		if err != nil {
			t.Fatal(err)
		}
		a := startAgent(t, dir, e.url, func(c *agent.Config) { c.Video, c.VideoLoopbackOnly = src, true })
		a.waitConnected(t)
		r := dialRelay(t, e.f, e.url)
		v, _ := watchLive(t, r, "cam-0001", signGrant(t, e.f, "cam-0001", 0))
		a.stop(t)
		if bye, ok := r.await(t, v.offer.Session).(signal.Bye); !ok || bye.Reason != signal.ByeShutdown {
			t.Fatalf("after the camera stopped: %#v, want bye shutdown", bye)
		}
	})
}
