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
		Source:       v.gate,
		MaxViewers:   a.cfg.MaxViewers,
		LoopbackOnly: a.cfg.VideoLoopbackOnly,
		ICEServers:   a.cfg.VideoICEServers,
		RelayOnly:    a.cfg.VideoRelayOnly,
		OnEnd:        v.ended,
		Logger:       a.log,
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
		// Answering waits for ICE gathering; it must not hold up the MQTT worker.
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			v.offer(ctx, m)
		}()
	case signal.Candidate:
		err := v.s.AddCandidate(m.Session, m.Candidate)
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
		v.s.Close(m.Session, signal.ByeHangup)
	default:
		v.a.log.Warn("signaling message refused", "reason", "a camera only takes offers, candidates and byes", "type", m.MessageType())
	}
}

func (v *video) offer(ctx context.Context, o signal.Offer) {
	answer, err := v.s.Offer(ctx, o, func(grant []byte) (webrtc.Grant, error) {
		if v.a.Privacy() {
			return webrtc.Grant{}, &webrtc.RefusalError{Reason: signal.RefusePrivacy, Err: errPrivacy}
		}
		g, err := v.a.CheckGrant(grant, certs.ScopeView)
		if err != nil {
			return webrtc.Grant{}, err
		}
		return webrtc.GrantFromCerts(g), nil
	})
	if err != nil {
		var re *webrtc.RefusalError
		if !errors.As(err, &re) {
			re = &webrtc.RefusalError{Reason: signal.RefuseBusy, Err: err}
		}
		v.a.log.Info("viewer refused", "session", o.Session, "reason", re.Reason, "err", re.Err)
		v.send(ctx, re.Refusal(o.Session))
		return
	}
	if v.a.Privacy() {
		// Privacy mode came on while this offer was being answered, after its check and
		// after SetPrivacy's CloseAll: end the session now, unanswered (the camera is
		// already stopped); its end sends the viewer a bye "privacy".
		v.s.Close(o.Session, signal.ByePrivacy)
		return
	}
	v.send(ctx, answer)
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
