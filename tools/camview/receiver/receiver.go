package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/stun/v4"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
	pion "github.com/pion/webrtc/v4"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// DefaultGatherTimeout bounds ICE gathering when Options.GatherTimeout is zero.
const DefaultGatherTimeout = 10 * time.Second

// DefaultReceiveBuffer is the SO_RCVBUF asked for the ICE sockets when
// Options.ReceiveBuffer is zero: what libwebrtc, and so every Chromium-based browser, asks
// for its video RTP sockets (kVideoRtpRecvBufferSize), so that the burst of a camera's cached
// group of pictures fits as it does for a browser.
const DefaultReceiveBuffer = 256 << 10

// byeGrace is how long a session whose connection closed or failed waits for the camera's
// Bye, which says why.
const byeGrace = time.Second

// hangupTimeout bounds the Bye sent when a session is closed.
const hangupTimeout = 2 * time.Second

// ICE timeouts, as the camera's: a camera that stops answering consent checks ends the
// session (ErrICEFailed) after iceFailed.
const (
	iceDisconnected = 5 * time.Second
	iceFailed       = 10 * time.Second
	iceKeepalive    = 2 * time.Second
)

// Options configures Watch.
type Options struct {
	// LoopbackOnly confines ICE to 127.0.0.1 over UDP: only loopback candidates are gathered
	// and accepted, mDNS is off, and every ICE server must be on loopback. For tests and
	// demos on machines that may send to loopback only.
	LoopbackOnly bool
	// RelayOnly sets the ICE transport policy to relay: only candidates relayed by a TURN
	// server of ICEServers are used. It needs at least one turn: or turns: server.
	RelayOnly bool
	// ICEServers are the viewer's STUN and TURN servers (at most signal.MaxICEServers). They
	// are also sent to the camera in the offer, so that it can use the same TURN relay. Nil
	// means none: host candidates only.
	ICEServers []signal.ICEServer
	// Out receives the Annex B H.264 of every complete access unit from the first keyframe on,
	// starting with the SPS and PPS. It is written from the session's reader goroutine; a
	// write error ends the session (an *OutputError). Nil discards the video.
	Out io.Writer
	// GatherTimeout bounds ICE gathering; the offer then goes with the candidates found so
	// far. Zero means DefaultGatherTimeout.
	GatherTimeout time.Duration
	// ReceiveBuffer is the SO_RCVBUF of the ICE host sockets, in bytes (Linux doubles it).
	// Zero means DefaultReceiveBuffer; negative keeps the system default.
	ReceiveBuffer int
	// Logger receives session events (session id, device, reason; never SDP, candidates or
	// grants). Nil discards them.
	Logger *slog.Logger
}

// Session is one live video session with a camera. Its methods are safe for concurrent use.
type Session struct {
	relay  *relay.Relay
	device string
	id     string
	pc     *pion.PeerConnection
	out    io.Writer
	log    *slog.Logger

	firstKeyframe chan struct{} // closed at the first complete keyframe
	done          chan struct{} // closed when the session has ended
	failed        chan struct{} // closed when ICE/DTLS failed
	failOnce      sync.Once
	stop          chan struct{} // closed by Close
	stopOnce      sync.Once
	endOnce       sync.Once
	wg            sync.WaitGroup // the watcher and the track reader

	mu          sync.Mutex
	closing     bool // no more goroutines may start
	hasTrack    bool
	started     bool // the first keyframe has been received
	endErr      error
	ended       time.Time
	firstPacket time.Time
	stats       Stats
	seq         seqCounter
	mediaSpan   tsSpan
}

// Watch asks device, through r, for its live video with the signed grant (the raw bytes of
// certs.SignGrant, as fleetctl grant prints them in base64url): it makes a PeerConnection,
// waits for ICE gathering, sends the offer, and applies the camera's answer. It returns once
// the answer is applied; media may not have arrived yet (see FirstKeyframe). A refusal comes
// back as a *relay.RefusedError. ctx bounds the setup only; the session then lasts until it
// ends (Done) or is closed. Close the session when done with it.
func Watch(ctx context.Context, r *relay.Relay, device string, grant []byte, o Options) (*Session, error) {
	if r == nil {
		return nil, errors.New("receiver: nil relay")
	}
	if err := certs.ValidDeviceID(device); err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	if len(grant) == 0 {
		return nil, errors.New("receiver: no grant")
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	api, err := newAPI(o)
	if err != nil {
		return nil, err
	}
	cfg := pion.Configuration{ICEServers: pionServers(o.ICEServers)}
	if o.RelayOnly {
		cfg.ICETransportPolicy = pion.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(cfg)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	s := &Session{
		relay:         r,
		device:        device,
		id:            signal.NewSession(),
		pc:            pc,
		out:           o.Out,
		log:           o.Logger,
		firstKeyframe: make(chan struct{}),
		done:          make(chan struct{}),
		failed:        make(chan struct{}),
		stop:          make(chan struct{}),
	}
	pc.OnTrack(s.onTrack)
	pc.OnConnectionStateChange(func(st pion.PeerConnectionState) {
		s.log.Debug("receiver: connection state", "session", s.id, "device", device, "state", st.String())
		if st == pion.PeerConnectionStateFailed || st == pion.PeerConnectionStateClosed {
			s.failOnce.Do(func() { close(s.failed) })
		}
	})
	answer, err := s.offer(ctx, grant, o)
	if err != nil {
		s.closePC()
		return nil, err
	}
	if err := pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: answer.SDP}); err != nil {
		s.shutdown(fmt.Errorf("receiver: the camera's answer: %w", err), true)
		return nil, s.Err()
	}
	ended, cands := r.Ended(s.id), r.Candidates(s.id)
	s.wg.Add(1)
	go s.watch(ended, cands)
	s.log.Info("receiver: answered", "session", s.id, "device", device)
	return s, nil
}

// offer makes the offer, waits for gathering and sends it.
func (s *Session) offer(ctx context.Context, grant []byte, o Options) (signal.Answer, error) {
	if _, err := s.pc.AddTransceiverFromKind(pion.RTPCodecTypeVideo, pion.RTPTransceiverInit{Direction: pion.RTPTransceiverDirectionRecvonly}); err != nil {
		return signal.Answer{}, fmt.Errorf("receiver: %w", err)
	}
	offer, err := s.pc.CreateOffer(nil)
	if err != nil {
		return signal.Answer{}, fmt.Errorf("receiver: %w", err)
	}
	gathered := pion.GatheringCompletePromise(s.pc)
	if err := s.pc.SetLocalDescription(offer); err != nil {
		return signal.Answer{}, fmt.Errorf("receiver: %w", err)
	}
	timeout := o.GatherTimeout
	if timeout == 0 {
		timeout = DefaultGatherTimeout
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-gathered:
	case <-t.C:
		s.log.Warn("receiver: ICE gathering incomplete; offering the candidates found so far", "session", s.id, "after", timeout)
	case <-ctx.Done():
		return signal.Answer{}, fmt.Errorf("receiver: ICE gathering: %w", ctx.Err())
	}
	answerKey := signal.NewAnswerKey()
	so := signal.Offer{V: signal.Version, Session: s.id, Key: signal.NewKey(), AnswerKey: answerKey.Public(), SDP: s.pc.LocalDescription().SDP, Grant: grant, ICEServers: o.ICEServers}
	s.mu.Lock()
	s.stats.OfferSent = time.Now()
	s.mu.Unlock()
	answer, err := s.relay.Offer(ctx, s.device, so, answerKey)
	if err != nil {
		return signal.Answer{}, fmt.Errorf("receiver: %w", err)
	}
	return answer, nil
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// Device returns the camera's device id.
func (s *Session) Device() string { return s.device }

// FirstKeyframe returns a channel closed when the first complete keyframe (with its SPS and
// PPS) has been received.
func (s *Session) FirstKeyframe() <-chan struct{} { return s.firstKeyframe }

// Done returns a channel closed when the session has ended: the camera said Bye, the
// connection failed, the output failed, or Close was called. Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session is live, and then why it ended: a *ByeError, ErrICEFailed,
// an *OutputError, or ErrClosed.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endErr
}

// Stats returns the session's statistics so far.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Lost = s.seq.lost()
	st.MediaDuration = s.mediaSpan.duration()
	if !s.firstPacket.IsZero() {
		end := time.Now()
		if !s.ended.IsZero() {
			end = s.ended
		}
		st.Elapsed = end.Sub(s.firstPacket)
	}
	return st
}

// Close ends the session: unless the camera ended it, it sends the camera a Bye (hangup),
// then closes the PeerConnection and waits for the session's goroutines. It returns nil, or
// an error when the Bye could not be sent (the camera then ends the session by itself when
// ICE consent fails). It is idempotent.
func (s *Session) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	err := s.shutdown(ErrClosed, true)
	s.wg.Wait()
	return err
}

// shutdown ends the session once, with reason; hangup says whether to send the camera a Bye.
// Every caller returns after the session has ended. It returns the Bye's error, for the first
// caller only.
func (s *Session) shutdown(reason error, hangup bool) error {
	var err error
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.endErr = reason
		s.ended = time.Now()
		s.mu.Unlock()
		if hangup {
			ctx, cancel := context.WithTimeout(context.Background(), hangupTimeout)
			err = s.relay.Hangup(ctx, s.device, s.id)
			cancel()
		} else {
			s.relay.Forget(s.id)
		}
		s.closePC()
		st := s.Stats()
		s.log.Info("receiver: session ended", "session", s.id, "device", s.device, "reason", reason,
			"frames", st.Frames, "packets", st.Packets, "lost", st.Lost)
		close(s.done)
	})
	return err
}

// closePC closes the PeerConnection and lets no new goroutine start.
func (s *Session) closePC() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	if err := s.pc.Close(); err != nil {
		s.log.Debug("receiver: close", "session", s.id, "err", err)
	}
}

// watch ends the session when the camera says Bye or the connection fails, and adds the
// camera's trickled candidates.
func (s *Session) watch(ended <-chan signal.Bye, cands <-chan signal.ICECandidate) {
	defer s.wg.Done()
	for {
		select {
		case c := <-cands:
			if err := s.pc.AddICECandidate(pion.ICECandidateInit{
				Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex, UsernameFragment: c.UsernameFragment,
			}); err != nil {
				s.log.Debug("receiver: camera candidate refused", "session", s.id, "err", err)
			}
		case b := <-ended:
			s.shutdown(&ByeError{Reason: b.Reason}, false)
			return
		case <-s.failed:
			// A camera that ends a session closes its side first and then says why: give its
			// Bye a moment to arrive over MQTT before calling this a failure.
			t := time.NewTimer(byeGrace)
			select {
			case b := <-ended:
				t.Stop()
				s.shutdown(&ByeError{Reason: b.Reason}, false)
			case <-t.C:
				// The camera notices the failure too; the Bye makes its end immediate.
				s.shutdown(ErrICEFailed, true)
			case <-s.stop:
				t.Stop()
			}
			return
		case <-s.stop:
			return
		}
	}
}

// onTrack reads the camera's video track. pion calls it on a goroutine of its own.
func (s *Session) onTrack(tr *pion.TrackRemote, _ *pion.RTPReceiver) {
	s.mu.Lock()
	if s.closing || s.hasTrack || tr.Kind() != pion.RTPCodecTypeVideo {
		s.mu.Unlock()
		return
	}
	s.hasTrack = true
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.log.Debug("receiver: video track", "session", s.id, "codec", tr.Codec().MimeType)
	newTrack(s, uint32(tr.SSRC())).run(tr)
}

// check validates the options; errors name the field, never a credential.
func (o Options) check() error {
	if len(o.ICEServers) > signal.MaxICEServers {
		return fmt.Errorf("receiver: Options.ICEServers: %d servers, at most %d", len(o.ICEServers), signal.MaxICEServers)
	}
	turn := false
	for i, srv := range o.ICEServers {
		if err := srv.Validate(); err != nil {
			return fmt.Errorf("receiver: Options.ICEServers[%d]: %w", i, err)
		}
		for _, u := range srv.URLs {
			uri, err := stun.ParseURI(u)
			if err != nil {
				return fmt.Errorf("receiver: Options.ICEServers[%d]: %w", i, err)
			}
			turn = turn || uri.Scheme == stun.SchemeTypeTURN || uri.Scheme == stun.SchemeTypeTURNS
			if ip := net.ParseIP(uri.Host); o.LoopbackOnly && uri.Host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return fmt.Errorf("receiver: Options.ICEServers[%d]: %s is not on loopback (Options.LoopbackOnly)", i, uri.Host)
			}
		}
	}
	if o.RelayOnly && !turn {
		return errors.New("receiver: Options.RelayOnly needs a TURN server in Options.ICEServers")
	}
	if o.GatherTimeout < 0 {
		return fmt.Errorf("receiver: Options.GatherTimeout %v is negative", o.GatherTimeout)
	}
	return nil
}

// h264Codecs are the H.264 formats offered, as a browser offers them: constrained baseline,
// baseline and main, packetization mode 1 (RFC 6184 §8.1), with NACK, PLI and FIR feedback.
func h264Codecs() []pion.RTPCodecParameters {
	feedback := []pion.RTCPFeedback{
		{Type: pion.TypeRTCPFBNACK},
		{Type: pion.TypeRTCPFBNACK, Parameter: "pli"},
		{Type: pion.TypeRTCPFBCCM, Parameter: "fir"},
	}
	codec := func(pt pion.PayloadType, profileLevelID string) pion.RTPCodecParameters {
		return pion.RTPCodecParameters{
			RTPCodecCapability: pion.RTPCodecCapability{
				MimeType: pion.MimeTypeH264, ClockRate: clockRate, RTCPFeedback: feedback,
				SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profileLevelID,
			},
			PayloadType: pt,
		}
	}
	return []pion.RTPCodecParameters{codec(102, "42e01f"), codec(104, "42001f"), codec(106, "4d001f")}
}

// newAPI makes the pion API of one session: the H.264 formats, pion's default interceptors
// (NACK generator and responder, receiver reports, TWCC) and the ICE settings.
func newAPI(o Options) (*pion.API, error) {
	me := &pion.MediaEngine{}
	for _, c := range h264Codecs() {
		if err := me.RegisterCodec(c, pion.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("receiver: register H.264: %w", err)
		}
	}
	reg := &interceptor.Registry{}
	if err := pion.RegisterDefaultInterceptors(me, reg); err != nil {
		return nil, fmt.Errorf("receiver: interceptors: %w", err)
	}
	var se pion.SettingEngine
	// mDNS would bind UDP port 5353, and the camera resolves no .local candidates anyway.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(iceDisconnected, iceFailed, iceKeepalive)
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4, pion.NetworkTypeUDP6})
	if o.LoopbackOnly {
		se.SetIncludeLoopbackCandidate(true)
		se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
		se.SetInterfaceFilter(func(name string) bool {
			iface, err := net.InterfaceByName(name)
			return err == nil && iface.Flags&net.FlagLoopback != 0
		})
		se.SetIPFilter(isLoopback4)
		se.SetRemoteIPFilter(isLoopback4)
	}
	if rcvbuf := o.ReceiveBuffer; rcvbuf >= 0 {
		if rcvbuf == 0 {
			rcvbuf = DefaultReceiveBuffer
		}
		n, err := stdnet.NewNet()
		if err != nil {
			return nil, fmt.Errorf("receiver: %w", err)
		}
		se.SetNet(rcvbufNet{n, rcvbuf})
	}
	return pion.NewAPI(pion.WithMediaEngine(me), pion.WithInterceptorRegistry(reg), pion.WithSettingEngine(se)), nil
}

// rcvbufNet is the host's network with a receive buffer size set on every UDP socket ICE
// opens for its host candidates.
type rcvbufNet struct {
	*stdnet.Net
	rcvbuf int
}

func (n rcvbufNet) ListenUDP(network string, addr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, addr)
	if err != nil {
		return nil, err
	}
	if err := c.SetReadBuffer(n.rcvbuf); err != nil {
		c.Close()
		return nil, fmt.Errorf("receiver: SO_RCVBUF: %w", err)
	}
	return c, nil
}

func isLoopback4(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil }

// pionServers converts ICE servers to pion's form.
func pionServers(servers []signal.ICEServer) []pion.ICEServer {
	var out []pion.ICEServer
	for _, s := range servers {
		out = append(out, pion.ICEServer{
			URLs: append([]string(nil), s.URLs...), Username: s.Username, Credential: s.Credential,
			CredentialType: pion.ICECredentialTypePassword,
		})
	}
	return out
}
