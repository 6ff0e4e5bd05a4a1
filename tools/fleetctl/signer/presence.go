package signer

import (
	"context"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// PresenceTopic is where the signer instance with client id clientID keeps its presence:
// fleet/signers/<session suffix>, one topic per instance.
func PresenceTopic(clientID string) string {
	return topic.SignersPrefix + certs.ClientIDSession(clientID)
}

// presenceLoop keeps the instance's presence retained: "serving" once connected and then every
// Config.PresenceEvery, so that a crashed signer shows as one whose word is getting old, and
// "stopped" when ctx ends, before stop closes the connection. It calls stop when it returns.
func (s *Signer) presenceLoop(ctx context.Context, stop func()) {
	defer stop()
	since := s.clk.Now().Unix()
	say := func(ctx context.Context, state string) {
		now := s.clk.Now().Unix()
		b, err := wire.Encode(&wire.SignerPresence{V: wire.Version, Name: s.cfg.Name, State: state, Since: since, At: max(now, since), Every: int64(s.cfg.PresenceEvery / time.Second)})
		if err != nil {
			s.log.Error("signer: presence", "err", err)
			return
		}
		if err := s.client.Publish(ctx, PresenceTopic(s.cfg.ClientID), 1, true, b); err != nil && ctx.Err() == nil {
			s.log.Warn("signer: could not say it serves; operators may think no signer runs", "err", err)
		}
	}
	if s.client.WaitConnected(ctx) == nil {
		for {
			pctx, cancel := context.WithTimeout(ctx, s.cfg.PresenceEvery)
			say(pctx, wire.SignerServing)
			cancel()
			select {
			case <-ctx.Done():
			case <-s.clk.After(s.cfg.PresenceEvery):
				continue
			}
			break
		}
	}
	// ctx is done: say so on the connection that is still up, briefly.
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.client.Connected() {
		say(sctx, wire.SignerStopped)
	}
}
