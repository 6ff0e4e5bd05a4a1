package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestPacketsAreLoggedWithoutTheirPayload(t *testing.T) {
	const secret = "wifi-passphrase-hunter2"
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "dev/cam-a/up/state",
		Payload:     []byte(secret),
	}
	tests := []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"a packet value is reduced", func(l *slog.Logger) { l.Warn("x", "pk", pk) }},
		{"a packet pointer is reduced", func(l *slog.Logger) { l.Debug("x", "packet", &pk) }},
		{"a packet inside a group is reduced", func(l *slog.Logger) { l.Info("x", slog.Group("g", "pk", pk)) }},
		{"a packet given to With is reduced", func(l *slog.Logger) { l.With("pk", pk).Info("x") }},
		{"a packet under WithGroup is reduced", func(l *slog.Logger) { l.WithGroup("g").Info("x", "pk", pk) }},
		{"raw bytes are reduced to their length", func(l *slog.Logger) { l.Info("x", "payload", []byte(secret)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(slog.New(redactHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})}))
			out := buf.String()
			if strings.Contains(out, secret) {
				t.Fatalf("payload in log: %s", out)
			}
			if !strings.Contains(out, "_bytes=") {
				t.Fatalf("no size in log: %s", out)
			}
		})
	}
}
