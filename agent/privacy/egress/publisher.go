package egress

import (
	"context"
	"fmt"
)

// Publisher sends one message: the shape of the agent's publish path (agent.Publisher).
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

// Wrap returns a Publisher that checks each message's topic and payload with g and passes it
// to next only if both are clean. A refused message is not sent (fail closed): Publish returns
// an error matching ErrSensitive that names the topic (when the topic itself is clean) and
// the kind of value, and the refusal is counted in g.Refusals. g must not be nil.
func Wrap(next Publisher, g *Guard) Publisher { return &guarded{next: next, g: g} }

type guarded struct {
	next Publisher
	g    *Guard
}

var _ Publisher = (*guarded)(nil)

func (p *guarded) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	if err := p.g.Check([]byte(topic)); err != nil {
		return fmt.Errorf("publish: topic: %w", err)
	}
	if err := p.g.Check(payload); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return p.next.Publish(ctx, topic, qos, retained, payload)
}
