package webrtc

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	pion "github.com/pion/webrtc/v4"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// session is one viewer: its PeerConnection, its place in the fan-out, and the goroutine that
// owns both (run).
type session struct {
	s   *Streamer
	id  string
	key string // the offer's signal.Offer.Key: the viewer's later messages must carry it
	v   *viewer

	// Set by negotiate, read-only afterwards.
	pc     *pion.PeerConnection
	sender *pion.RTPSender
	track  *pion.TrackLocalStaticRTP
	grant  Grant

	connected chan struct{} // closed once the PeerConnection is connected
	connOnce  sync.Once

	done     chan struct{} // closed by stop
	stopOnce sync.Once
	reason   signal.ByeReason // written before done is closed

	finished chan struct{} // closed once everything of the session has ended

	candMu      sync.Mutex
	remoteSet   bool                    // the offer is applied; candidates go straight to pion
	pending     []pion.ICECandidateInit // candidates that came before it
	candidates  int                     // candidates taken, at most MaxRemoteCandidates
	candBucket  tokenBucket             // paces them to CandidateRate, bursts of CandidateBurst
	candDropped atomic.Uint64           // candidates dropped over those limits

	keyframeReqs atomic.Uint64
}

func newSession(s *Streamer, id, key string) *session {
	return &session{
		s:          s,
		id:         id,
		key:        key,
		v:          newViewer(s.cfg.QueueLength),
		candBucket: newTokenBucket(CandidateRate, CandidateBurst, s.cfg.Clock.Now()),
		connected:  make(chan struct{}),
		done:       make(chan struct{}),
		finished:   make(chan struct{}),
	}
}

// holds reports whether key is the session's key, in time that does not depend on how much of
// it matches.
func (ss *session) holds(key string) bool {
	return ss.key != "" && subtle.ConstantTimeCompare([]byte(ss.key), []byte(key)) == 1
}

// stop asks the session to end for reason; the first reason wins. It does not wait.
func (ss *session) stop(reason signal.ByeReason) {
	ss.stopOnce.Do(func() {
		ss.reason = reason
		close(ss.done)
	})
}

func (ss *session) isConnected() bool {
	select {
	case <-ss.connected:
		return true
	default:
		return false
	}
}

// isRelayed reports whether the session is connected over a candidate pair whose local
// (camera's) candidate is relayed through a TURN server.
func (ss *session) isRelayed() bool {
	// ss.sender is written before the PeerConnection starts to connect, so once connected
	// it may be read.
	if !ss.isConnected() {
		return false
	}
	pair, err := ss.sender.Transport().ICETransport().GetSelectedCandidatePair()
	return err == nil && pair != nil && pair.Local != nil && pair.Local.Typ == pion.ICECandidateTypeRelay
}

// negotiate checks the grant and, if it holds, makes the PeerConnection and the answer.
func (ss *session) negotiate(ctx context.Context, offer signal.Offer, check GrantChecker) (signal.Answer, error) {
	s := ss.s
	g, err := check(offer.Grant)
	if err != nil {
		if re := (*RefusalError)(nil); errors.As(err, &re) {
			return signal.Answer{}, err
		}
		return signal.Answer{}, refuse(signal.RefuseGrant, fmt.Errorf("%w: %w", ErrGrant, err))
	}
	if now := s.cfg.Clock.Now(); g.Expiry.IsZero() || !g.Expiry.After(now) {
		return signal.Answer{}, refuse(signal.RefuseGrant, fmt.Errorf("%w: grant expired", ErrGrant))
	}
	ss.grant = g
	if err := ss.ended(); err != nil {
		return signal.Answer{}, err
	}

	if hasApplicationSection(offer.SDP) {
		// A data channel would start SCTP and its goroutines for nothing the camera serves.
		return signal.Answer{}, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: data channels are not served", ErrBadOffer))
	}
	profile := s.cfg.Source.Info().SDPProfileLevelID
	if !profileRe.MatchString(profile) {
		return signal.Answer{}, refuse(signal.RefuseBusy, fmt.Errorf("%w: profile-level-id %q", ErrNotReady, profile))
	}
	api, err := s.apiFor(profile)
	if err != nil {
		return signal.Answer{}, err
	}
	cert, err := s.certificate()
	if err != nil {
		return signal.Answer{}, err
	}
	servers, turnURLs, err := s.iceServers(offer.ICEServers)
	if err != nil {
		return signal.Answer{}, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: %w", ErrBadOffer, err))
	}
	policy := pion.ICETransportPolicyAll
	if s.cfg.RelayOnly {
		if turnURLs == 0 {
			// Gathering would find nothing and the viewer would wait for a connection that
			// cannot come.
			return signal.Answer{}, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: %w: neither the offer's ice_servers nor Config.ICEServers has a turn: or turns: URL", ErrBadOffer, ErrNoTURNServer))
		}
		policy = pion.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(pion.Configuration{
		ICEServers:         servers,
		ICETransportPolicy: policy,
		Certificates:       []pion.Certificate{cert},
		BundlePolicy:       pion.BundlePolicyMaxBundle,
	})
	if err != nil {
		// The only input is the ICE server list.
		return signal.Answer{}, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: %w", ErrBadOffer, err))
	}
	s.peerConnections.Add(1)
	ss.pc = pc
	pc.OnConnectionStateChange(ss.onConnectionState)

	if err := pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeOffer, SDP: offer.SDP}); err != nil {
		return signal.Answer{}, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: %w", ErrBadOffer, masked(err)))
	}
	if err := ss.flushCandidates(); err != nil {
		return signal.Answer{}, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: %w", ErrBadOffer, err))
	}
	track, err := pion.NewTrackLocalStaticRTP(h264Capability(profile), "video", "camagent")
	if err != nil {
		return signal.Answer{}, fmt.Errorf("webrtc: track: %w", err)
	}
	// Added after the offer is applied, the track takes the offer's video section.
	sender, err := pc.AddTrack(track)
	if err != nil {
		return signal.Answer{}, fmt.Errorf("webrtc: add track: %w", err)
	}
	ss.sender, ss.track = sender, track
	if err := ss.checkNegotiated(profile); err != nil {
		return signal.Answer{}, err
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return signal.Answer{}, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: %w", ErrBadOffer, err))
	}
	gathered := pion.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return signal.Answer{}, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: %w", ErrBadOffer, err))
	}
	select {
	case <-gathered:
	case <-s.cfg.Clock.After(s.cfg.GatherTimeout):
		s.log.Info("webrtc: ICE gathering timed out; answering with the candidates found", "session", ss.id)
	case <-ctx.Done():
		return signal.Answer{}, fmt.Errorf("webrtc: offer: %w", ctx.Err())
	case <-ss.done:
	}
	if err := ss.ended(); err != nil {
		return signal.Answer{}, err
	}
	sdp := pc.LocalDescription().SDP
	if s.cfg.RelayOnly {
		if !hasRelayCandidate(sdp) {
			return signal.Answer{}, refuse(signal.RefuseBusy, fmt.Errorf("%w: %d TURN URLs tried", ErrNoRelay, turnURLs))
		}
		sdp = zeroRelatedAddresses(sdp)
	}
	a := signal.Answer{V: signal.Version, Session: ss.id, SDP: setProfileLevelID(sdp, profile)}
	if err := a.Validate(); err != nil {
		return signal.Answer{}, fmt.Errorf("webrtc: answer: %w", err)
	}
	return a, nil
}

// ended returns a refusal if the session was stopped while its offer was being answered.
func (ss *session) ended() error {
	select {
	case <-ss.done:
		return refuse(refusalFor(ss.reason), fmt.Errorf("%w (%s)", ErrEnded, ss.reason))
	default:
		return nil
	}
}

// hasApplicationSection reports whether an SDP has an application (data channel) section.
func hasApplicationSection(sdp string) bool {
	for _, l := range strings.Split(sdp, "\n") {
		if strings.HasPrefix(l, "m=application ") {
			return true
		}
	}
	return false
}

// hasRelayCandidate reports whether an SDP has a relayed candidate (RFC 8839 §5.1: "typ
// relay").
func hasRelayCandidate(sdp string) bool {
	for _, l := range strings.Split(sdp, "\n") {
		if strings.HasPrefix(l, "a=candidate:") && strings.Contains(l, " typ relay") {
			return true
		}
	}
	return false
}

// profileRe is the shape of a profile-level-id: three bytes in hex (RFC 6184 §8.1).
var profileRe = regexp.MustCompile(`^[0-9A-Fa-f]{6}$`)

// checkNegotiated refuses an offer in which the track found no video section that receives
// H.264 with the source's profile: the answer would carry no media, or (pion falls back to
// any H.264 format when none matches the profile) a format the viewer did not offer.
func (ss *session) checkNegotiated(profileLevelID string) error {
	for _, tr := range ss.pc.GetTransceivers() {
		if tr.Sender() != ss.sender {
			continue
		}
		// The camera only sends: a viewer that offers to send (sendrecv) is refused rather
		// than left with an unread stream.
		if tr.Mid() == "" || tr.Direction() != pion.RTPTransceiverDirectionSendonly {
			break
		}
		for _, c := range ss.sender.GetParameters().Codecs {
			if strings.EqualFold(c.MimeType, pion.MimeTypeH264) && sameProfile(c.SDPFmtpLine, profileLevelID) {
				return nil
			}
		}
	}
	return refuse(signal.RefuseBadOffer, fmt.Errorf("%w: no recvonly video section takes H.264 profile %s with packetization-mode=1", ErrBadOffer, profileLevelID[:4]))
}

// sameProfile reports whether an H.264 fmtp line names the profile (profile_idc and the
// constraint byte) of profileLevelID, in packetization mode 1 (RFC 6184 §8.1).
func sameProfile(fmtp, profileLevelID string) bool {
	var plid, mode string
	for _, p := range strings.Split(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(k) {
		case "profile-level-id":
			plid = v
		case "packetization-mode":
			mode = v
		}
	}
	return mode == "1" && len(plid) == 6 && strings.EqualFold(plid[:4], profileLevelID[:4])
}

// abort undoes a session whose offer failed. It does not call OnEnd: Offer's error reports it.
func (ss *session) abort() {
	ss.stop(signal.ByeFailed)
	if ss.pc != nil {
		if err := ss.pc.GracefulClose(); err != nil {
			ss.s.log.Debug("webrtc: close PeerConnection", "session", ss.id, "err", err)
		}
	}
	ss.s.remove(ss)
	close(ss.finished)
	ss.s.wg.Done()
}

// onConnectionState runs on a goroutine of pion's for every connection state change.
func (ss *session) onConnectionState(st pion.PeerConnectionState) {
	switch st {
	case pion.PeerConnectionStateConnected:
		ss.connOnce.Do(func() { close(ss.connected) })
	case pion.PeerConnectionStateFailed, pion.PeerConnectionStateClosed:
		// Closed without our stop means the viewer closed DTLS (pion then closes the
		// PeerConnection itself).
		ss.stop(signal.ByeFailed)
	}
}

// run owns an answered session: it streams, then tears everything down.
func (ss *session) run() {
	s := ss.s
	defer s.wg.Done()
	rtcpDone := make(chan struct{})
	go func() {
		defer close(rtcpDone)
		ss.readRTCP()
	}()

	ss.stop(ss.stream())

	s.fan.leave(ss.v)
	// GracefulClose waits for pion's own goroutines of this PeerConnection.
	if err := ss.pc.GracefulClose(); err != nil {
		s.log.Debug("webrtc: close PeerConnection", "session", ss.id, "err", err)
	}
	<-rtcpDone
	s.remove(ss)
	s.log.Info("webrtc: session ended", "session", ss.id, "reason", ss.reason,
		"frames_sent", ss.v.sent.Load(), "frames_dropped", ss.v.dropped.Load())
	if s.cfg.OnEnd != nil {
		s.cfg.OnEnd(ss.id, ss.reason)
	}
	close(ss.finished)
}

// stream waits for the connection, then sends the cached group of pictures and the live
// frames until the session ends. It returns why it ended.
func (ss *session) stream() signal.ByeReason {
	s := ss.s
	expired := s.cfg.Clock.After(ss.grant.Expiry.Sub(s.cfg.Clock.Now()))
	select {
	case <-ss.connected:
	case <-ss.done:
		return ss.reason
	case <-expired:
		return signal.ByeExpired
	case <-s.cfg.Clock.After(s.cfg.ConnectTimeout):
		s.log.Info("webrtc: viewer did not connect in time", "session", ss.id, "timeout", s.cfg.ConnectTimeout)
		return signal.ByeFailed
	}
	// pion reports "connected" from a goroutine it starts while the DTLS transport still
	// holds its lock, just before it starts SRTP; until SRTP runs, writes are dropped without
	// an error. Reading the DTLS state takes that lock, so once it returns SRTP is up and the
	// keyframe below cannot be lost.
	_ = ss.sender.Transport().State()

	out := newRTPStream(ss.track, random16(), random32())
	snap := s.fan.join(ss.v)
	if snap == nil {
		s.requestKeyframe()
	}
	// The keyframe leaves at once; the rest of the group is paced (catchUpSchedule). Pacing
	// is a transmission rate, so it runs on real time, not on the configured clock.
	due := catchUpSchedule(snap)
	start := time.Now()
	var pace *time.Timer
	defer func() {
		if pace != nil {
			pace.Stop()
		}
	}()
	for i, fr := range snap {
		var wait <-chan time.Time
		if d := due[i] - time.Since(start); d > 0 {
			if pace == nil {
				pace = time.NewTimer(d)
			} else {
				pace.Reset(d)
			}
			wait = pace.C
		}
		if wait != nil {
			select {
			case <-ss.done:
				return ss.reason
			case <-expired:
				return signal.ByeExpired
			case <-wait:
			}
		} else {
			select {
			case <-ss.done:
				return ss.reason
			case <-expired:
				return signal.ByeExpired
			default:
			}
		}
		if done, reason := ss.send(out, fr); done {
			return reason
		}
	}
	for {
		select {
		case <-ss.done:
			return ss.reason
		case <-expired:
			return signal.ByeExpired
		case fr := <-ss.v.queue:
			if done, reason := ss.send(out, fr); done {
				return reason
			}
		}
	}
}

// send writes one frame and counts it. A closed transport ends the session; other write
// errors lose the frame (the viewer recovers through NACK or a keyframe request).
func (ss *session) send(out *rtpStream, fr *frame) (done bool, reason signal.ByeReason) {
	if err := out.send(fr); err != nil {
		ss.v.dropped.Add(1)
		if errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.EOF) {
			return true, signal.ByeFailed
		}
		ss.s.log.Debug("webrtc: write failed", "session", ss.id, "err", err)
		return false, ""
	}
	ss.v.sent.Add(1)
	return false, ""
}

// readRTCP reads the viewer's RTCP until the PeerConnection closes. Reading is what runs
// pion's RTCP interceptors (the NACK responder, sender reports): a sender whose RTCP is not
// read never retransmits. Picture loss indications and full intra requests become keyframe
// requests.
func (ss *session) readRTCP() {
	for {
		pkts, _, err := ss.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				ss.keyframeReqs.Add(1)
				ss.s.keyframeReqs.Add(1)
				ss.s.requestKeyframe()
			}
		}
	}
}

// addCandidate adds a remote candidate now, or after the offer is applied; or drops it if the
// viewer went over its limits (MaxRemoteCandidates, CandidateRate and CandidateBurst).
func (ss *session) addCandidate(c pion.ICECandidateInit) error {
	ss.candMu.Lock()
	defer ss.candMu.Unlock()
	switch {
	case ss.candidates >= MaxRemoteCandidates:
		return &DroppedCandidateError{Err: ErrTooManyCandidates, Dropped: ss.candDropped.Add(1)}
	case !ss.candBucket.take(ss.s.cfg.Clock.Now()):
		return &DroppedCandidateError{Err: ErrCandidateRate, Dropped: ss.candDropped.Add(1)}
	}
	ss.candidates++
	if !ss.remoteSet {
		ss.pending = append(ss.pending, c)
		return nil
	}
	if err := ss.pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("webrtc: candidate: %w", masked(err))
	}
	return nil
}

// flushCandidates adds the candidates that came before the offer was applied.
func (ss *session) flushCandidates() error {
	ss.candMu.Lock()
	defer ss.candMu.Unlock()
	ss.remoteSet = true
	pending := ss.pending
	ss.pending = nil
	for _, c := range pending {
		if err := ss.pc.AddICECandidate(c); err != nil {
			return fmt.Errorf("candidate: %w", masked(err))
		}
	}
	return nil
}

func random16() uint16 {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint16(b[:])
}

func random32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}
