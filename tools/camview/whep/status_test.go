package whep

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

func TestEveryOfferErrorMapsToAStatus(t *testing.T) {
	refused := func(r signal.RefusalReason) error {
		return fmt.Errorf("receiver: %w", &relay.RefusedError{Refusal: signal.Refusal{V: signal.Version, Reason: r}})
	}
	for _, tc := range []struct {
		name   string
		err    error
		status int
	}{
		{"a grant refusal is forbidden", refused(signal.RefuseGrant), http.StatusForbidden},
		{"privacy mode is forbidden", refused(signal.RefusePrivacy), http.StatusForbidden},
		{"the viewer limit is unavailable", refused(signal.RefuseLimit), http.StatusServiceUnavailable},
		{"a busy camera is unavailable", refused(signal.RefuseBusy), http.StatusServiceUnavailable},
		{"a bad offer is a bad request", refused(signal.RefuseBadOffer), http.StatusBadRequest},
		{"no answer in time is a gateway timeout", fmt.Errorf("relay: no answer: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{"a broker that is away is unavailable", fmt.Errorf("relay: %w", mqtt.ErrNotConnected), http.StatusServiceUnavailable},
		{"a connection lost meanwhile is unavailable", mqtt.ErrConnectionLost, http.StatusServiceUnavailable},
		{"a closed relay is unavailable", relay.ErrClosed, http.StatusServiceUnavailable},
		{"a camera ending the session first is unavailable", relay.ErrEnded, http.StatusServiceUnavailable},
		{"anything else is a bad gateway", errors.New("boom"), http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, msg := statusFor(tc.err); got != tc.status || msg == "" {
				t.Errorf("statusFor = %d %q, want %d", got, msg, tc.status)
			}
		})
	}
}

// The handler remembers why at most MaxSessions sessions ended, forgetting the oldest first,
// and none longer than EndedMemory: a stream of ended sessions cannot grow its memory.
func TestEndedSessionsAreRememberedBoundedly(t *testing.T) {
	h := &Handler{cfg: Config{MaxSessions: 2}, ended: map[string]ending{}}
	t0 := time.Unix(1_800_000_000, 0)
	h.remember("a", ending{device: "cam-0001", reason: signal.ByePrivacy, at: t0})
	h.remember("b", ending{device: "cam-0001", reason: signal.ByePrivacy, at: t0.Add(time.Second)})
	h.remember("c", ending{device: "cam-0001", reason: signal.ByePrivacy, at: t0.Add(2 * time.Second)})
	if _, ok := h.ended["a"]; ok || len(h.ended) != 2 {
		t.Errorf("after three endings with MaxSessions 2: %v, want b and c", h.ended)
	}
	h.remember("d", ending{device: "cam-0001", reason: signal.ByePrivacy, at: t0.Add(time.Second + EndedMemory)})
	if _, ok := h.ended["b"]; ok || len(h.ended) != 2 {
		t.Errorf("an ending older than EndedMemory is kept: %v", h.ended)
	}
}
