package webrtc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	pion "github.com/pion/webrtc/v4"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// Streamer serves one camera source to up to Config.MaxViewers WebRTC viewers. Its methods
// are safe for concurrent use.
type Streamer struct {
	cfg      Config
	log      *slog.Logger
	pionLog  pionLogger
	settings pion.SettingEngine
	fan      *fanout
	apis     apiCache
	// keyframes carries keyframe requests to the goroutine that passes them to the source,
	// so the source is never called from its own callback or from pion's goroutines.
	keyframes chan struct{}

	certMu sync.Mutex
	cert   *pion.Certificate

	ran atomic.Bool

	mu       sync.Mutex
	sessions map[string]*session
	closed   bool
	wg       sync.WaitGroup // one per session, from reservation to end

	peerConnections atomic.Uint64
	keyframeReqs    atomic.Uint64
	keyframesAsked  atomic.Uint64
}

// New checks cfg, applies its defaults and makes the DTLS certificate all sessions will
// present. It starts nothing: call Run.
func New(cfg Config) (*Streamer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Streamer{
		cfg:       cfg,
		log:       cfg.Logger,
		pionLog:   pionLogger{cfg.Logger},
		keyframes: make(chan struct{}, 1),
		sessions:  map[string]*session{},
	}
	s.fan = newFanout(cfg.GOPBytes, s.requestKeyframe)
	if s.settings, err = newSettingEngine(cfg, s.pionLog); err != nil {
		return nil, err
	}
	if _, err := s.certificate(); err != nil {
		return nil, err
	}
	if cfg.OwnICEServersOnly && cfg.RelayOnly && turnURLCount(cfg.ICEServers) == 0 {
		return nil, errors.New("webrtc: Config.RelayOnly with OwnICEServersOnly needs a turn: or turns: server in Config.ICEServers")
	}
	if cfg.RelayOnly && turnURLCount(cfg.ICEServers) == 0 {
		s.log.Info("webrtc: relay-only with no TURN server of the camera's own: offers without one are refused")
	}
	return s, nil
}

// Run runs the source and fans its frames out to the viewers until ctx is done or the source
// fails. Before it returns it ends every session (signal.ByeShutdown) and waits for all of
// them; after that, Offer returns ErrClosed. Run may be called once. It returns ctx's error,
// or the source's.
func (s *Streamer) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrRunning
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.forwardKeyframeRequests(runCtx)
	}()

	err := s.cfg.Source.Run(runCtx, s.fan.push)

	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.CloseAll(signal.ByeShutdown)
	s.wg.Wait()
	cancel()
	wg.Wait()

	if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("webrtc: source: %w", err)
	}
	return err
}

// Offer answers a viewer's offer. In order, it
//   - validates the offer (signal.Offer.Validate);
//   - reserves a session, refusing beyond Config.MaxViewers and a session id already live;
//   - calls check with the offer's grant, before any PeerConnection exists;
//   - makes the session's PeerConnection, applies the offer, adds the video track, and waits
//     for ICE gathering (at most Config.GatherTimeout, or until ctx is done);
//   - returns the answer, with the camera's candidates and the source's profile-level-id.
//
// Refusals are *RefusalError values (see its Reason); other errors are failures the viewer
// should see as signal.RefuseBusy. Once Offer has returned an answer the session streams on
// its own goroutine until it ends (Config.OnEnd).
func (s *Streamer) Offer(ctx context.Context, offer signal.Offer, check GrantChecker) (signal.Answer, error) {
	answer, err := s.Accept(offer, check)
	if err != nil {
		return signal.Answer{}, err
	}
	return answer(ctx)
}

// Accept does Offer's first two steps at once, validating the offer and reserving its
// session, and returns the rest of Offer (the grant check, the PeerConnection, ICE gathering
// and the answer) as a function, to run on a goroutine of the caller's, since it waits for ICE
// gathering. From Accept's return on, candidates the viewer trickles for the session are kept
// (AddCandidate), however long the answer takes to start: a caller that answers offers on
// goroutines of their own calls Accept where it takes the offer, before the candidates that
// follow it. The returned function must be called exactly once; until then the session holds
// a place among Config.MaxViewers. It returns what Offer returns.
func (s *Streamer) Accept(offer signal.Offer, check GrantChecker) (answer func(context.Context) (signal.Answer, error), err error) {
	if check == nil {
		return nil, errors.New("webrtc: Offer: nil GrantChecker")
	}
	if err := offer.Validate(); err != nil {
		return nil, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: %w", ErrBadOffer, err))
	}
	ss, err := s.reserve(offer.Session, offer.Key)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (signal.Answer, error) {
		answer, err := ss.negotiate(ctx, offer, check)
		if err != nil {
			ss.abort()
			return signal.Answer{}, err
		}
		s.log.Info("webrtc: session started", "session", ss.id, "viewers", s.viewerCount())
		go ss.run()
		return answer, nil
	}, nil
}

// reserve registers a new session for id and key, counted against MaxViewers. An offer for a
// live session id with another key is not the viewer's: it gets ErrForeignSession, which is
// no refusal, so that nothing answers it.
func (s *Streamer) reserve(id, key string) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch live := s.sessions[id]; {
	case s.closed:
		return nil, ErrClosed
	case live != nil && !live.holds(key):
		return nil, fmt.Errorf("%w: an offer for session %s", ErrForeignSession, id)
	case live != nil:
		return nil, refuse(signal.RefuseBadOffer, fmt.Errorf("%w: session %s is already live", ErrBadOffer, id))
	case len(s.sessions) >= s.cfg.MaxViewers:
		return nil, refuse(signal.RefuseLimit, fmt.Errorf("%w: %d viewers", ErrLimit, s.cfg.MaxViewers))
	}
	ss := newSession(s, id, key)
	s.sessions[id] = ss
	s.wg.Add(1)
	return ss, nil
}

// remove forgets ss; its slot is free again.
func (s *Streamer) remove(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
}

func (s *Streamer) viewerCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// sessionFor returns the live session id whose key is key, or nil.
func (s *Streamer) sessionFor(id, key string) *session {
	s.mu.Lock()
	ss := s.sessions[id]
	s.mu.Unlock()
	if ss == nil || !ss.holds(key) {
		return nil
	}
	return ss
}

// AddCandidate adds a candidate the viewer trickled for session, whose offer's key
// (signal.Offer.Key) it must carry. Candidates that arrive
// while the offer is still being applied are kept and added after it. The empty candidate
// marks the end of the viewer's candidates.
//
// Each session takes at most MaxRemoteCandidates candidates, at CandidateRate per second
// after a burst of CandidateBurst. A candidate over those limits is dropped, counted in
// SessionStats.CandidatesDropped, and reported as a *DroppedCandidateError (unwrapping to
// ErrTooManyCandidates or ErrCandidateRate) whose Dropped field lets the caller log once per
// session. A session that does not exist (yet, or any more), or whose key is another, gives
// ErrUnknownSession: to anyone but its viewer, a session is not there.
func (s *Streamer) AddCandidate(session, key string, c signal.ICECandidate) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("webrtc: candidate: %w", err)
	}
	ss := s.sessionFor(session, key)
	if ss == nil {
		return ErrUnknownSession
	}
	return ss.addCandidate(pion.ICECandidateInit{
		Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex, UsernameFragment: c.UsernameFragment,
	})
}

// Hangup ends session for its viewer's Bye (signal.ByeHangup), which must carry the offer's
// key, and returns once it has ended, as Close does. A session that is not live, or whose key
// is another, gives ErrUnknownSession and is left alone: a session id is no secret (the
// camera's messages carry it where every viewer relay reads them), its key is.
func (s *Streamer) Hangup(session, key string) error {
	ss := s.sessionFor(session, key)
	if ss == nil {
		return ErrUnknownSession
	}
	ss.stop(signal.ByeHangup)
	<-ss.finished
	return nil
}

// Close ends session for reason and returns once its goroutines have ended and Config.OnEnd
// has returned. Closing an unknown or already ended session does nothing. Close is the
// camera's own; a viewer's Bye goes through Hangup.
func (s *Streamer) Close(session string, reason signal.ByeReason) {
	s.mu.Lock()
	ss := s.sessions[session]
	s.mu.Unlock()
	if ss != nil {
		ss.stop(reason)
		<-ss.finished
	}
}

// CloseAll ends every session for reason (signal.ByeRevoked when a rotation raised the grant
// epoch, signal.ByePrivacy when privacy mode starts), including offers still being answered,
// and returns once they have all ended. Offers that arrive afterwards are served: the caller
// refuses them itself (in its GrantChecker) while it wants none.
func (s *Streamer) CloseAll(reason signal.ByeReason) {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	for _, ss := range all {
		ss.stop(reason)
	}
	for _, ss := range all {
		<-ss.finished
	}
}

// Stats is a snapshot of a Streamer's counters.
type Stats struct {
	// Viewers is the number of live sessions, including offers being answered.
	Viewers int
	// PeerConnections counts the PeerConnections made since New: one per offer that passed
	// its grant check and the viewer limit.
	PeerConnections uint64
	// FramesIn counts the frames received from the source.
	FramesIn uint64
	// KeyframeRequests counts picture loss indications and full intra requests received from
	// viewers (RFC 4585 §6.3.1, RFC 5104 §4.3.1).
	KeyframeRequests uint64
	// KeyframesRequested counts keyframe requests the source accepted (requests are paced by
	// Config.KeyframeInterval; sources that cannot make keyframes accept none).
	KeyframesRequested uint64
	// Sessions describes each live session, by session id.
	Sessions []SessionStats
}

// SessionStats describes one session.
type SessionStats struct {
	Session string
	// Connected reports that ICE and DTLS have connected and media flows.
	Connected bool
	// FramesSent counts frames sent whole; FramesDropped counts frames the viewer's queue
	// had no room for, and the frames after them up to the next keyframe.
	FramesSent, FramesDropped uint64
	// KeyframeRequests counts this viewer's picture loss indications and full intra
	// requests.
	KeyframeRequests uint64
	// CandidatesDropped counts the candidates the viewer trickled over the session's limits
	// (see AddCandidate).
	CandidatesDropped uint64
	// Relayed reports that the session is connected through the camera's relayed candidate
	// (a TURN allocation), as it always is with Config.RelayOnly.
	Relayed bool
}

// Stats returns the Streamer's counters.
func (s *Streamer) Stats() Stats {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	st := Stats{
		Viewers:            len(all),
		PeerConnections:    s.peerConnections.Load(),
		FramesIn:           s.fan.framesIn.Load(),
		KeyframeRequests:   s.keyframeReqs.Load(),
		KeyframesRequested: s.keyframesAsked.Load(),
		Sessions:           make([]SessionStats, 0, len(all)),
	}
	for _, ss := range all {
		st.Sessions = append(st.Sessions, SessionStats{
			Session:           ss.id,
			Connected:         ss.isConnected(),
			FramesSent:        ss.v.sent.Load(),
			FramesDropped:     ss.v.dropped.Load(),
			KeyframeRequests:  ss.keyframeReqs.Load(),
			CandidatesDropped: ss.candDropped.Load(),
			Relayed:           ss.isRelayed(),
		})
	}
	slices.SortFunc(st.Sessions, func(a, b SessionStats) int { return cmp.Compare(a.Session, b.Session) })
	return st
}

// requestKeyframe asks for a keyframe without blocking; requests made while one is pending
// merge into it.
func (s *Streamer) requestKeyframe() {
	select {
	case s.keyframes <- struct{}{}:
	default:
	}
}

// forwardKeyframeRequests passes keyframe requests to the source, at most one per
// Config.KeyframeInterval, until ctx is done.
func (s *Streamer) forwardKeyframeRequests(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.keyframes:
		}
		switch err := s.cfg.Source.RequestKeyframe(); {
		case err == nil:
			s.keyframesAsked.Add(1)
		case errors.Is(err, errors.ErrUnsupported):
			// The source makes keyframes on its own schedule; viewers wait for the next.
		default:
			s.log.Warn("webrtc: keyframe request failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Clock.After(s.cfg.KeyframeInterval):
		}
	}
}
