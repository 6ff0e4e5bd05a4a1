package webrtc_test

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// The agent's side of live video: offers arrive from MQTT, the grant is checked against the
// device's key set and epoch, and answers, refusals and byes go back over MQTT.
func Example() {
	var (
		log      = slog.Default()
		verifier *certs.Verifier // the grant keys of the device's key set
		epoch    uint64          // the device's grant epoch
		// publish sends a message on dev/<id>/up/signal, never retained.
		publish = func(m signal.Message) {
			if _, err := signal.Encode(m); err != nil {
				log.Error("unencodable signaling message", "err", err)
			}
		}
	)
	src, err := camera.NewFileSource(camera.FileConfig{Path: "clip.h264"})
	if err != nil {
		log.Error("no source", "err", err)
		return
	}
	s, err := webrtc.New(webrtc.Config{
		Source: src,
		Logger: log,
		OnEnd: func(session string, reason signal.ByeReason) {
			publish(signal.Bye{V: signal.Version, Session: session, Reason: reason})
		},
	})
	if err != nil {
		log.Error("no streamer", "err", err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	defer func() { stop(); <-ran }()

	checkGrant := func(b []byte) (webrtc.Grant, error) {
		g, err := certs.OpenGrant(verifier, b)
		if err != nil {
			return webrtc.Grant{}, err
		}
		if err := certs.CheckGrant(g, "cam-0001", epoch, certs.ScopeView, time.Now()); err != nil {
			return webrtc.Grant{}, err
		}
		return webrtc.GrantFromCerts(g), nil
	}

	// The handler of dev/<id>/down/signal.
	onSignal := func(payload []byte) {
		m, err := signal.Decode(payload)
		if err != nil {
			log.Warn("bad signaling message", "err", err) // never the payload
			return
		}
		switch m := m.(type) {
		case signal.Offer:
			answer, err := s.Offer(ctx, m, checkGrant)
			var refusal *webrtc.RefusalError
			switch {
			case errors.Is(err, webrtc.ErrForeignSession):
				// Not the session's viewer: nothing answers it.
			case errors.As(err, &refusal):
				publish(refusal.Refusal(m.Session))
			case err != nil:
				log.Warn("offer failed", "session", m.Session, "err", err)
				publish(signal.Refusal{V: signal.Version, Session: m.Session, Reason: signal.RefuseBusy})
			default:
				// Sealed to the viewer's answer key: other viewers and the broker see the
				// session id only, not the camera's addresses.
				sealed, err := signal.Seal(answer, m.AnswerKey)
				if err != nil {
					s.Close(m.Session, signal.ByeFailed)
					return
				}
				publish(sealed)
			}
		case signal.Candidate:
			// A viewer's candidates and its bye carry its offer's key: nobody else's end or
			// feed its session.
			if err := s.AddCandidate(m.Session, m.Key, m.Candidate); err != nil {
				log.Debug("candidate refused", "session", m.Session, "err", err)
			}
		case signal.Bye:
			_ = s.Hangup(m.Session, m.Key)
		}
	}
	_ = onSignal

	// When a rotation raises the grant epoch (agent.OnEpoch):
	s.CloseAll(signal.ByeRevoked)
}
