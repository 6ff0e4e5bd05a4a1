package webrtc_test

import (
	"strings"
	"testing"

	"github.com/camagent/camagent/device/camera/cameratest"
	"github.com/camagent/camagent/transport/webrtc"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

func TestNewRefusesBadConfigNamingTheField(t *testing.T) {
	src := &cameratest.Source{}
	for _, tt := range []struct {
		name  string
		cfg   webrtc.Config
		field string
	}{
		{"no source", webrtc.Config{}, "Source"},
		{"a negative viewer limit", webrtc.Config{Source: src, MaxViewers: -1}, "MaxViewers"},
		{"a viewer limit over the bound", webrtc.Config{Source: src, MaxViewers: webrtc.MaxMaxViewers + 1}, "MaxViewers"},
		{"a queue over the bound", webrtc.Config{Source: src, QueueLength: webrtc.MaxQueueLength + 1}, "QueueLength"},
		{"a NACK buffer that is no power of two", webrtc.Config{Source: src, NACKBuffer: 100}, "NACKBuffer"},
		{"a negative timeout", webrtc.Config{Source: src, GatherTimeout: -1}, "GatherTimeout"},
		{"half a port range", webrtc.Config{Source: src, UDPPortMin: 50000}, "UDPPortMin"},
		{"a reversed port range", webrtc.Config{Source: src, UDPPortMin: 50010, UDPPortMax: 50000}, "UDPPortMin"},
		{"a bad ICE server", webrtc.Config{Source: src, ICEServers: []signal.ICEServer{{URLs: []string{"http://x"}}}}, "ICEServers"},
		{"an ICE server off loopback in loopback-only mode", webrtc.Config{Source: src, LoopbackOnly: true, ICEServers: []signal.ICEServer{{URLs: []string{"stun:192.0.2.1"}}}}, "ICEServers"},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			_, err := webrtc.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), "Config."+tt.field) || !strings.HasPrefix(err.Error(), "webrtc: ") {
				t.Fatalf("New = %v, want an error naming Config.%s", err, tt.field)
			}
		})
	}
	t.Run("accepts relay-only mode without a TURN server of its own, since offers may bring one", func(t *testing.T) {
		if _, err := webrtc.New(webrtc.Config{Source: src, RelayOnly: true}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("refuses a TURN server off loopback in relay-only, loopback-only mode", func(t *testing.T) {
		_, err := webrtc.New(webrtc.Config{Source: src, RelayOnly: true, LoopbackOnly: true, ICEServers: []signal.ICEServer{{URLs: []string{"turn:192.0.2.1:3478"}, Username: "u", Credential: "c"}}})
		if err == nil || !strings.Contains(err.Error(), "Config.ICEServers") {
			t.Fatalf("New = %v, want an error naming Config.ICEServers", err)
		}
	})
	t.Run("accepts a loopback STUN server in loopback-only mode", func(t *testing.T) {
		if _, err := webrtc.New(webrtc.Config{Source: src, LoopbackOnly: true, ICEServers: []signal.ICEServer{{URLs: []string{"stun:127.0.0.1:3478"}}}}); err != nil {
			t.Fatal(err)
		}
	})
}
