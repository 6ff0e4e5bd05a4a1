package broker

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// redactHandler passes records on to h with every MQTT packet reduced to its type, topic,
// QoS and payload size. mochi logs whole packets (payload included) when processing one
// fails, and payloads must never reach a log (P4).
type redactHandler struct{ h slog.Handler }

var _ slog.Handler = redactHandler{}

func (r redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, rec.Message, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactHandler{r.h.WithAttrs(red)}
}

func (r redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{r.h.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		as := v.Group()
		red := make([]any, len(as))
		for i, g := range as {
			red[i] = redactAttr(g)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch p := v.Any().(type) {
		case packets.Packet:
			return packetAttr(a.Key, &p)
		case *packets.Packet:
			if p != nil {
				return packetAttr(a.Key, p)
			}
		case []byte:
			return slog.Int(a.Key+"_bytes", len(p))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func packetAttr(key string, p *packets.Packet) slog.Attr {
	return slog.Group(key,
		"type", packets.PacketNames[p.FixedHeader.Type],
		"topic", clip(p.TopicName),
		"qos", p.FixedHeader.Qos,
		"payload_bytes", len(p.Payload),
	)
}
