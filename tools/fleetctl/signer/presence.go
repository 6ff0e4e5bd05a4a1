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

// presence is the instance's presence document in state, said at now.
func (s *Signer) presence(state string, now int64) ([]byte, error) {
	return wire.Encode(&wire.SignerPresence{V: wire.Version, Name: s.cfg.Name, State: state, Since: s.since, At: max(now, s.since), Every: int64(s.cfg.PresenceEvery / time.Second)})
}

// presenceLoop keeps the instance's presence retained: "serving" on every connection and then
// every Config.PresenceEvery, and "stopped" when ctx ends, before stop closes the connection.
// A connection that ends otherwise (a crash, a kill, a network cut) makes the broker publish
// the instance's will, "lost" (New); the next connection says "serving" over it at once. It
// calls stop when it returns.
func (s *Signer) presenceLoop(ctx context.Context, stop func()) {
	defer stop()
	say := func(ctx context.Context, state string) {
		b, err := s.presence(state, s.clk.Now().Unix())
		if err != nil {
			s.log.Error("signer: presence", "err", err)
			return
		}
		if err := s.client.Publish(ctx, PresenceTopic(s.cfg.ClientID), 1, true, b); err != nil && ctx.Err() == nil {
			s.log.Warn("signer: could not say it serves; operators may think no signer runs", "err", err)
		}
	}
	// The first word waits for the first connection's OnConnect, not for the client to be
	// up: OnConnect signals every connection, the first too, and said once more after the
	// client was up, it sent "serving" twice on one connection, the second of which could
	// land after the will of that connection cut meanwhile.
	select {
	case <-ctx.Done():
	case <-s.connected:
		for {
			select {
			case <-s.connected: // the connection this says it on
			default:
			}
			pctx, cancel := context.WithTimeout(ctx, s.cfg.PresenceEvery)
			say(pctx, wire.SignerServing)
			cancel()
			select {
			case <-ctx.Done():
			case <-s.clk.After(s.cfg.PresenceEvery):
				continue
			case <-s.connected:
				continue // a new connection, after the broker published the will of the last
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
