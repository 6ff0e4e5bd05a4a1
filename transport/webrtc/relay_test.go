package webrtc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	pion "github.com/pion/webrtc/v4"

	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// turnServer is a real pion TURN server on 127.0.0.1 over UDP, with long-term credentials
// (RFC 8489 §9.2), relaying on 127.0.0.1.
type turnServer struct {
	url, user, pass string

	conn        *countingConn
	auths       atomic.Int64 // requests the server authenticated (or tried to)
	allocations atomic.Int64 // allocations made
}

// countingConn counts the bytes a TURN server receives from its clients: every relayed
// packet a client sends passes through it.
type countingConn struct {
	net.PacketConn
	in atomic.Int64
}

func (c *countingConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	c.in.Add(int64(n))
	return n, addr, err
}

func startTURN(t *testing.T) *turnServer {
	t.Helper()
	const realm = "camagent.test"
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &turnServer{
		url:  "turn:" + pc.LocalAddr().String() + "?transport=udp",
		user: "viewer", pass: "s3cret-turn-password",
		conn: &countingConn{PacketConn: pc},
	}
	key := turn.GenerateAuthKey(ts.user, realm, ts.pass)
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:         realm,
		LoggerFactory: lf,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			ts.auths.Add(1)
			if ra.Username != ts.user {
				return "", nil, false
			}
			return ts.user, key, true
		},
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(_, _ net.Addr, _, _, _ string, _ net.Addr, _ int) { ts.allocations.Add(1) },
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            ts.conn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("TURN server close: %v", err)
		}
	})
	return ts
}

// signalServer is the server as an offer's ice_servers carries it.
func (ts *turnServer) signalServer() signal.ICEServer {
	return signal.ICEServer{URLs: []string{ts.url}, Username: ts.user, Credential: ts.pass}
}

// pionServer is the server as the viewer's own PeerConnection uses it.
func (ts *turnServer) pionServer() pion.ICEServer {
	return pion.ICEServer{URLs: []string{ts.url}, Username: ts.user, Credential: ts.pass, CredentialType: pion.ICECredentialTypePassword}
}

// logCapture keeps everything a Streamer logs, at every level.
type logCapture struct{ logtest.Buffer }

func (c *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mustNotContain fails the test if anything logged so far contains secret.
func (c *logCapture) mustNotContain(t *testing.T, secret string) {
	t.Helper()
	if out := c.String(); strings.Contains(out, secret) {
		t.Errorf("the logs carry the TURN credential:\n%s", out)
	}
}

// candidateTypes returns the "typ" of every candidate line of an SDP.
func candidateTypes(sdp string) []string {
	var types []string
	for _, l := range strings.Split(sdp, "\n") {
		if !strings.HasPrefix(l, "a=candidate:") {
			continue
		}
		f := strings.Fields(l)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "typ" {
				types = append(types, f[i+1])
			}
		}
	}
	return types
}

func TestRelayOnlyVideoFlowsThroughTheTURNServer(t *testing.T) {
	for _, tt := range []struct {
		name string
		// inOffer puts the TURN server in the offer's ice_servers, as a viewer would send
		// it; otherwise it is in the camera's Config.ICEServers.
		inOffer bool
	}{
		{"when the offer names the TURN server", true},
		{"when the camera's config names the TURN server", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startTURN(t)
			g := newGrants(t)
			logs := &logCapture{}
			cfg := webrtc.Config{Source: fileSource(t), RelayOnly: true, Logger: logs.logger()}
			if !tt.inOffer {
				cfg.ICEServers = []signal.ICEServer{ts.signalServer()}
			}
			s := startStreamer(t, cfg) // loopback-only as well
			v, offer := newTestViewer(t, viewerOptions{iceServers: []pion.ICEServer{ts.pionServer()}, relayOnly: true})
			if tt.inOffer {
				offer.ICEServers = []signal.ICEServer{ts.signalServer()}
			}
			answer := v.connect(context.Background(), s, offer, g.valid(t), g.check)

			t.Run("the answer offers relayed candidates only, without related addresses", func(t *testing.T) {
				types := candidateTypes(answer.SDP)
				if len(types) == 0 {
					t.Fatal("the answer has no candidates")
				}
				for _, typ := range types {
					if typ != "relay" {
						t.Fatalf("the answer has candidate types %v, want relay only", types)
					}
				}
				for _, l := range strings.Split(answer.SDP, "\n") {
					if strings.HasPrefix(l, "a=candidate:") && !strings.Contains(l, " raddr 0.0.0.0 rport 0") {
						t.Errorf("candidate line with a related address: %q", l)
					}
				}
			})

			frames := v.waitFrames(30)
			t.Run("video flows, starting with a keyframe", func(t *testing.T) {
				if !frames[0].keyframe() {
					t.Fatalf("first frame has NAL types %v", frames[0].nalTypes)
				}
			})
			t.Run("the viewer's selected candidate pair is relayed at both ends", func(t *testing.T) {
				pair, err := v.pc.GetReceivers()[0].Transport().ICETransport().GetSelectedCandidatePair()
				if err != nil || pair == nil {
					t.Fatalf("selected pair %v, %v", pair, err)
				}
				if pair.Local.Typ != pion.ICECandidateTypeRelay || pair.Remote.Typ != pion.ICECandidateTypeRelay {
					t.Fatalf("selected pair %s", pair)
				}
				if pair.Remote.Address != "127.0.0.1" {
					t.Fatalf("the camera's relayed candidate is on %s, want the TURN server's relay address 127.0.0.1", pair.Remote.Address)
				}
			})
			t.Run("the camera reports the session relayed", func(t *testing.T) {
				st := s.Stats()
				if len(st.Sessions) != 1 || !st.Sessions[0].Connected || !st.Sessions[0].Relayed {
					t.Fatalf("stats %+v", st)
				}
			})
			t.Run("the TURN server allocated for both peers and carried the video", func(t *testing.T) {
				if n := ts.allocations.Load(); n < 2 {
					t.Errorf("%d allocations, want one for the camera and one for the viewer at least", n)
				}
				if ts.auths.Load() == 0 {
					t.Error("the TURN server authenticated no request")
				}
				v.mu.Lock()
				received := v.bytes
				v.mu.Unlock()
				if relayed := ts.conn.in.Load(); relayed < int64(received) {
					t.Errorf("the TURN server received %d bytes from its clients; the viewer alone received %d bytes of RTP", relayed, received)
				}
			})
			t.Run("no log line carries the TURN credential", func(t *testing.T) {
				s.Close(offer.Session, signal.ByeHangup)
				logs.mustNotContain(t, ts.pass)
			})
		})
	}
}

func TestRelayOnlyRefusesAnOfferItCannotRelay(t *testing.T) {
	g := newGrants(t)
	ctx := context.Background()
	refusal := func(t *testing.T, s *webrtc.Streamer, o signal.Offer, want signal.RefusalReason, sentinels ...error) error {
		t.Helper()
		o.Grant = g.valid(t)
		_, err := s.Offer(ctx, o, g.check)
		var re *webrtc.RefusalError
		if !errors.As(err, &re) || re.Reason != want {
			t.Fatalf("Offer = %v, want a %q refusal", err, want)
		}
		for _, w := range sentinels {
			if !errors.Is(err, w) {
				t.Errorf("Offer = %v, does not match %v", err, w)
			}
		}
		if st := s.Stats(); st.Viewers != 0 {
			t.Fatalf("a refused offer left %+v", st)
		}
		return err
	}

	t.Run("refuses an offer without a TURN server when the camera has none", func(t *testing.T) {
		s := startStreamer(t, webrtc.Config{Source: fileSource(t), RelayOnly: true})
		_, o := newTestViewer(t, viewerOptions{})
		err := refusal(t, s, o, signal.RefuseBadOffer, webrtc.ErrBadOffer, webrtc.ErrNoTURNServer)
		if !strings.Contains(err.Error(), "TURN") {
			t.Errorf("the error does not name the problem: %v", err)
		}
		if st := s.Stats(); st.PeerConnections != 0 {
			t.Fatalf("the refusal made a PeerConnection: %+v", st)
		}
	})
	t.Run("refuses an offer with only a STUN server", func(t *testing.T) {
		s := startStreamer(t, webrtc.Config{Source: fileSource(t), RelayOnly: true})
		_, o := newTestViewer(t, viewerOptions{})
		o.ICEServers = []signal.ICEServer{{URLs: []string{"stun:127.0.0.1:3478"}}}
		refusal(t, s, o, signal.RefuseBadOffer, webrtc.ErrBadOffer, webrtc.ErrNoTURNServer)
	})
	t.Run("refuses an offer whose TURN server refuses the credentials", func(t *testing.T) {
		ts := startTURN(t)
		logs := &logCapture{}
		s := startStreamer(t, webrtc.Config{Source: fileSource(t), RelayOnly: true, Logger: logs.logger()})
		_, o := newTestViewer(t, viewerOptions{})
		bad := ts.signalServer()
		bad.Credential = "wrong-password"
		o.ICEServers = []signal.ICEServer{bad}
		err := refusal(t, s, o, signal.RefuseBusy, webrtc.ErrNoRelay)
		if strings.Contains(err.Error(), bad.Credential) {
			t.Errorf("the error carries the credential: %v", err)
		}
		logs.mustNotContain(t, bad.Credential)
		if ts.auths.Load() == 0 || ts.allocations.Load() != 0 {
			t.Errorf("the TURN server was asked to authenticate %d times and made %d allocations; want it asked, and none made", ts.auths.Load(), ts.allocations.Load())
		}
	})
	t.Run("accepts a TURN-less offer when the camera has a TURN server of its own", func(t *testing.T) {
		ts := startTURN(t)
		s := startStreamer(t, webrtc.Config{Source: fileSource(t), RelayOnly: true, ICEServers: []signal.ICEServer{ts.signalServer()}})
		v, o := newTestViewer(t, viewerOptions{})
		v.connect(ctx, s, o, g.valid(t), g.check)
		v.waitFrames(1)
	})
}

// Every TURN server the camera allocates on sees its address. With OwnICEServersOnly the
// servers an offer names are not used, so in relay-only mode no party but the operator's own
// TURN server learns it.
func TestOwnICEServersOnlyIgnoresTheOffersServers(t *testing.T) {
	for _, own := range []bool{false, true} {
		t.Run(fmt.Sprintf("OwnICEServersOnly %v", own), func(t *testing.T) {
			camTURN, viewerTURN := startTURN(t), startTURN(t)
			g := newGrants(t)
			s := startStreamer(t, webrtc.Config{Source: fileSource(t), RelayOnly: true, OwnICEServersOnly: own,
				ICEServers: []signal.ICEServer{camTURN.signalServer()}})
			// The viewer relays through the camera's TURN server, and names another in its offer.
			v, offer := newTestViewer(t, viewerOptions{iceServers: []pion.ICEServer{camTURN.pionServer()}, relayOnly: true})
			offer.ICEServers = []signal.ICEServer{viewerTURN.signalServer()}
			v.connect(context.Background(), s, offer, g.valid(t), g.check)
			v.waitFrames(1)
			used := viewerTURN.allocations.Load() > 0
			if own && used {
				t.Errorf("the camera allocated on the TURN server the offer named (%d allocations)", viewerTURN.allocations.Load())
			}
			if !own && !used {
				t.Error("without OwnICEServersOnly the camera did not use the offer's TURN server: this test shows nothing")
			}
		})
	}
}

func TestOwnICEServersOnlyWithRelayOnlyNeedsATURNServer(t *testing.T) {
	_, err := webrtc.New(webrtc.Config{Source: fileSource(t), RelayOnly: true, OwnICEServersOnly: true})
	if err == nil || !strings.Contains(err.Error(), "OwnICEServersOnly") {
		t.Fatalf("New = %v, want an error naming OwnICEServersOnly", err)
	}
}
