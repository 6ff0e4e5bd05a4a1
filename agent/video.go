package agent

import (
	"context"
	"errors"
	"sync"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/transport/mqtt/topic"
	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// video serves live viewers through transport/webrtc, signalled over the agent's MQTT
// session: offers arrive on dev/<id>/down/signal, answers, refusals and byes leave on
// dev/<id>/up/signal, at QoS 0 and never retained, so no broker queues them for a party that is
// offline (P2b). Every offer's grant is checked before anything is made for it (S9).
type video struct {
	a    *Agent
	s    *webrtc.Streamer
	gate *camera.Gate   // closed in privacy mode: the camera stops
	wg   sync.WaitGroup // offers being answered
}

func (a *Agent) startVideo(ctx context.Context) (*video, error) {
	v := &video{a: a, gate: camera.NewGate(a.cfg.Video, !a.Privacy())}
	s, err := webrtc.New(webrtc.Config{
		Source:            v.gate,
		MaxViewers:        a.cfg.MaxViewers,
		LoopbackOnly:      a.cfg.VideoLoopbackOnly,
		ICEServers:        a.cfg.VideoICEServers,
		RelayOnly:         a.cfg.VideoRelayOnly,
		OwnICEServersOnly: a.cfg.VideoOwnICEServersOnly,
		OnEnd:             v.ended,
		Logger:            a.log,
	})
	if err != nil {
		return nil, err
	}
	v.s = s
	a.OnEpoch(func(uint64) { s.CloseAll(signal.ByeRevoked) })
	return v, nil
}

var errPrivacy = errors.New("agent: privacy mode is on")

// handle takes one signaling message from a viewer.
func (v *video) handle(ctx context.Context, payload []byte) {
	m, err := signal.Decode(payload)
	if err != nil {
		v.a.log.Warn("signaling message refused", "reason", err)
		return
	}
	switch m := m.(type) {
	case signal.Offer:
		// The session is reserved here, before the next message: candidates the viewer
		// trickles right after its offer find it. Answering waits for ICE gathering, so it
		// runs on a goroutine of its own and does not hold up the MQTT worker.
		answer, err := v.s.Accept(m, v.check)
		if errors.Is(err, webrtc.ErrForeignSession) {
			// Someone who saw a live session's id, not its viewer: a refusal would reach
			// the viewer as the answer to its own offer.
			v.a.log.Debug("offer for a live session without its key ignored", "session", m.Session)
			return
		}
		if err != nil {
			v.refuse(ctx, m.Session, err)
			return
		}
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			v.answer(ctx, m, answer)
		}()
	case signal.Candidate:
		err := v.s.AddCandidate(m.Session, m.Key, m.Candidate)
		var dropped *webrtc.DroppedCandidateError
		switch {
		case err == nil:
		case errors.As(err, &dropped):
			// A viewer over its trickle limits may send many more: say so once a session.
			if dropped.Dropped == 1 {
				v.a.log.Debug("viewer's candidates over the session's trickle limits are dropped; later drops are not logged", "session", m.Session, "reason", dropped.Err)
			}
		default:
			v.a.log.Debug("candidate refused", "session", m.Session, "reason", err)
		}
	case signal.Bye:
		// Only with the offer's key: every viewer relay reads the session ids.
		if err := v.s.Hangup(m.Session, m.Key); err != nil {
			v.a.log.Debug("bye ignored", "session", m.Session, "reason", err)
		}
	default:
		v.a.log.Warn("signaling message refused", "reason", "a camera only takes offers, candidates and byes", "type", m.MessageType())
	}
}

// check is the GrantChecker of every offer: privacy mode refuses, otherwise the grant must
// hold for this device's current epoch, for scope view.
func (v *video) check(grant []byte) (webrtc.Grant, error) {
	if v.a.Privacy() {
		return webrtc.Grant{}, &webrtc.RefusalError{Reason: signal.RefusePrivacy, Err: errPrivacy}
	}
	g, err := v.a.CheckGrant(grant, certs.ScopeView)
	if err != nil {
		return webrtc.Grant{}, err
	}
	return webrtc.GrantFromCerts(g), nil
}

// answer runs the rest of an accepted offer and sends the viewer the answer, sealed to the
// offer's answer key (it carries the camera's addresses and ICE credentials, which only that
// viewer may read), or the refusal.
func (v *video) answer(ctx context.Context, offer signal.Offer, answer func(context.Context) (signal.Answer, error)) {
	session := offer.Session
	a, err := answer(ctx)
	if err != nil {
		v.refuse(ctx, session, err)
		return
	}
	if v.a.Privacy() {
		// Privacy mode came on while this offer was being answered, after its check and
		// after SetPrivacy's CloseAll: end the session now, unanswered (the camera is
		// already stopped); its end sends the viewer a bye "privacy".
		v.s.Close(session, signal.ByePrivacy)
		return
	}
	// The answer leaves sealed, where the egress guard on the MQTT client cannot see into it:
	// the guard checks it in the clear first (P2).
	if err := v.a.guard.Check([]byte(a.SDP)); err != nil {
		v.a.log.Error("the answer would carry a protected value; not sent", "session", session, "err", err)
		v.s.Close(session, signal.ByeFailed)
		return
	}
	sealed, err := signal.Seal(a, offer.AnswerKey)
	if err != nil {
		// The offer's key was checked when it was accepted; this is not the viewer's fault.
		v.a.log.Error("could not seal the answer", "session", session, "err", err)
		v.s.Close(session, signal.ByeFailed)
		return
	}
	v.send(ctx, sealed)
}

// refuse tells the viewer why its offer for session was refused.
func (v *video) refuse(ctx context.Context, session string, err error) {
	var re *webrtc.RefusalError
	if !errors.As(err, &re) {
		re = &webrtc.RefusalError{Reason: signal.RefuseBusy, Err: err}
	}
	v.a.log.Info("viewer refused", "session", session, "reason", re.Reason, "err", re.Err)
	v.send(ctx, re.Refusal(session))
}

// ended tells the viewer a session the camera ended.
func (v *video) ended(session string, reason signal.ByeReason) {
	if reason == signal.ByeHangup {
		return // the viewer hung up: it knows
	}
	v.send(context.Background(), signal.Bye{V: signal.Version, Session: session, Reason: reason})
}

func (v *video) send(ctx context.Context, m signal.Message) {
	b, err := signal.Encode(m)
	if err != nil {
		v.a.log.Error("could not encode signaling message", "type", m.MessageType(), "err", err)
		return
	}
	if err := v.a.publishRaw(ctx, topic.SignalUp(v.a.DeviceID()), 0, b); err != nil {
		v.a.log.Warn("could not send signaling message", "type", m.MessageType(), "err", err)
	}
}
