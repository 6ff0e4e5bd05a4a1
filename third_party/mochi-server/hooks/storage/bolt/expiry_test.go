// SPDX-License-Identifier: MIT

// camagent patch 10: the store records when a kept session's connection ended, run by
// camagent's make test (go test github.com/mochi-mqtt/server/v2/hooks/storage/bolt).

package bolt

import (
	"path/filepath"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// storedDisconnected returns the Disconnected time the store holds for id, and whether it
// holds the client at all.
func storedDisconnected(t *testing.T, h *Hook, id string) (int64, bool) {
	t.Helper()
	clients, err := h.StoredClients()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if c.ID == id {
			return c.Disconnected, true
		}
	}
	return 0, false
}

func TestTheEndOfAKeptSessionsConnectionIsStored(t *testing.T) {
	h := openHook(t, filepath.Join(t.TempDir(), "broker.db"))
	defer h.Stop()
	s := mqtt.New(nil)

	cam := s.NewClient(nil, "l", "cam", false)
	h.OnSessionEstablished(cam, packets.Packet{})
	if at, ok := storedDisconnected(t, h, "cam"); !ok || at != 0 {
		t.Fatalf("a connected session is stored with Disconnected %d (stored: %v), want 0", at, ok)
	}
	cam.Stop(nil)
	h.OnDisconnect(cam, nil, false)
	if at, ok := storedDisconnected(t, h, "cam"); !ok || at != cam.StopTime() || at == 0 {
		t.Fatalf("a kept session's end is stored as %d (stored: %v), want %d", at, ok, cam.StopTime())
	}

	// A connection whose session another took over writes nothing: the new connection's
	// record is the session's.
	next := s.NewClient(nil, "l", "cam", false)
	h.OnSessionEstablished(next, packets.Packet{})
	old := s.NewClient(nil, "l", "cam", false)
	old.Stop(packets.ErrSessionTakenOver)
	h.OnDisconnect(old, packets.ErrSessionTakenOver, false)
	if at, ok := storedDisconnected(t, h, "cam"); !ok || at != 0 {
		t.Fatalf("a taken-over connection stored Disconnected %d over the live session's record (stored: %v)", at, ok)
	}

	// A clean session's record goes when its connection ends.
	op := s.NewClient(nil, "l", "operator", false)
	h.OnSessionEstablished(op, packets.Packet{})
	op.Stop(nil)
	h.OnDisconnect(op, nil, true)
	if _, ok := storedDisconnected(t, h, "operator"); ok {
		t.Fatal("a clean session's record outlived its connection")
	}
}
