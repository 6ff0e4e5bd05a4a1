// SPDX-License-Identifier: MIT

// camagent patch 10: tests of session expiry, run by camagent's make test
// (go test github.com/mochi-mqtt/server/v2 from camagent's module).

package mqtt

import (
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// storeCalls records what a storage hook is asked to delete.
type storeCalls struct {
	HookBase
	mu           sync.Mutex
	unsubscribed []string // client:filter
	dropped      []string // client:packet id
	expired      []string // client
	disconnects  []string // client, ":expire" when the session ends with it
}

func (h *storeCalls) ID() string { return "store-calls" }
func (h *storeCalls) Provides(b byte) bool {
	return b == OnUnsubscribed || b == OnQosDropped || b == OnClientExpired || b == OnDisconnect
}
func (h *storeCalls) OnDisconnect(cl *Client, _ error, expire bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := cl.ID
	if expire {
		id += ":expire"
	}
	h.disconnects = append(h.disconnects, id)
}
func (h *storeCalls) OnUnsubscribed(cl *Client, pk packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range pk.Filters {
		h.unsubscribed = append(h.unsubscribed, cl.ID+":"+f.Filter)
	}
}
func (h *storeCalls) OnQosDropped(cl *Client, pk packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropped = append(h.dropped, cl.ID+":"+pk.FormatID())
}
func (h *storeCalls) OnClientExpired(cl *Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expired = append(h.expired, cl.ID)
}
func (h *storeCalls) snapshot() (unsubscribed, dropped, expired []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.unsubscribed...), append([]string(nil), h.dropped...), append([]string(nil), h.expired...)
}

// expiryServer returns a server whose sessions expire maxExpiry seconds after their connection
// ended, with every client allowed and a storeCalls hook.
func expiryServer(t *testing.T, maxExpiry uint32) (*Server, *storeCalls) {
	t.Helper()
	caps := NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = maxExpiry
	s := New(&Options{Capabilities: caps, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	calls := new(storeCalls)
	for _, h := range []Hook{new(allowAll), calls} {
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	return s, calls
}

// waitClient polls until s.Clients holds a client for id that ok accepts, and returns it.
func waitClient(t *testing.T, s *Server, id string, what string, ok func(*Client) bool) *Client {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if cl, found := s.Clients.Get(id); found && ok(cl) {
			return cl
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: s.Clients never got there", what)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// disconnectedSession connects id with a persistent session, closes the connection and gives
// the session a subscription and a queued QoS 1 message, as a device that went away leaves
// them.
func disconnectedSession(t *testing.T, s *Server, id string) *Client {
	t.Helper()
	conn := connect(t, s, id)
	waitClient(t, s, id, "connected", func(cl *Client) bool { return cl.State.live.Load() })
	conn.Close()
	cl := waitClient(t, s, id, "disconnected", func(cl *Client) bool { return cl.StopTime() != 0 })
	sub := packets.Subscription{Filter: "dev/" + id + "/down/#", Qos: 1}
	s.Topics.Subscribe(id, sub)
	cl.State.Subscriptions.Add(sub.Filter, sub)
	cl.State.Inflight.Set(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "dev/" + id + "/down/desired",
		PacketID:    7,
	})
	return cl
}

// An expired session goes with its subscriptions and queued messages, in memory and (through
// the storage hooks) in the store: v2.7.9 only deleted the client, so publishes kept matching
// its subscriptions and its queued messages stayed in the store, read at every start.
func TestAnExpiredSessionTakesItsSubscriptionsAndQueuedMessagesWithIt(t *testing.T) {
	s, calls := expiryServer(t, 60)
	cl := disconnectedSession(t, s, "cam")

	s.clearExpiredClients(cl.StopTime() + 30)
	if _, ok := s.Clients.Get("cam"); !ok {
		t.Fatal("a session disconnected for half its expiry interval was expired")
	}

	s.clearExpiredClients(cl.StopTime() + 61)
	if _, ok := s.Clients.Get("cam"); ok {
		t.Fatal("the session outlived its expiry interval")
	}
	if subs := s.Topics.Subscribers("dev/cam/down/desired"); len(subs.Subscriptions) != 0 {
		t.Fatalf("the expired session still subscribes: %v", subs.Subscriptions)
	}
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("the expired session still holds %d queued messages", n)
	}
	unsubscribed, dropped, expired := calls.snapshot()
	if len(unsubscribed) != 1 || unsubscribed[0] != "cam:dev/cam/down/#" {
		t.Errorf("the store was asked to delete subscriptions %v, want [cam:dev/cam/down/#]", unsubscribed)
	}
	if len(dropped) != 1 || dropped[0] != "cam:7" {
		t.Errorf("the store was asked to delete queued messages %v, want [cam:7]", dropped)
	}
	if len(expired) != 1 || expired[0] != "cam" {
		t.Errorf("the store was asked to delete clients %v, want [cam]", expired)
	}
}

// A client that connected again after the sweep took its snapshot has taken the session over;
// expiring the old client must leave the new one in s.Clients (v2.7.9 deleted by id).
func TestASessionTakenOverSinceTheSweepsSnapshotIsNotExpired(t *testing.T) {
	s, calls := expiryServer(t, 60)
	old := disconnectedSession(t, s, "cam")

	connect(t, s, "cam")
	live := waitClient(t, s, "cam", "reconnected", func(cl *Client) bool { return cl != old && cl.State.live.Load() })

	s.expireClient("cam", old) // as a sweep that saw old before the reconnection would
	if cl, ok := s.Clients.Get("cam"); !ok || cl != live {
		t.Fatalf("s.Clients holds %p, want the live connection %p", cl, live)
	}
	if subs := s.Topics.Subscribers("dev/cam/down/desired"); len(subs.Subscriptions) != 1 {
		t.Fatalf("the live session lost its subscription: %v", subs.Subscriptions)
	}
	if _, _, expired := calls.snapshot(); len(expired) != 0 {
		t.Fatalf("the store was asked to delete clients %v", expired)
	}
}

// A session's expiry counts from when its connection ended, as recorded in the store, not from
// the broker's start: v2.7.9 restarted every session's clock at every start, so a broker
// restarted more often than the expiry interval never expired a session.
func TestASessionsExpiryCountsFromItsDisconnectionAcrossARestart(t *testing.T) {
	s, calls := expiryServer(t, 3600)
	now := time.Now().Unix()
	s.loadClients([]storage.Client{
		{ID: "gone", ProtocolVersion: 4, Disconnected: now - 7200},
		{ID: "recent", ProtocolVersion: 4, Disconnected: now - 60},
		{ID: "was-connected", ProtocolVersion: 4},
		{ID: "future", ProtocolVersion: 4, Disconnected: now + 86400},
		{ID: "clean", ProtocolVersion: 4, Clean: true},
	})
	// The store is told about the session whose end it does not know (so that it records
	// this start's time) and the clean one (which it deletes), and about no other: a start
	// rewrites no session it already knows the end of.
	calls.mu.Lock()
	told := append([]string(nil), calls.disconnects...)
	calls.mu.Unlock()
	slices.Sort(told)
	if !slices.Equal(told, []string{"clean:expire", "was-connected"}) {
		t.Errorf("OnDisconnect at the start for %v, want [clean:expire was-connected]", told)
	}
	s.clearExpiredClients(now + 1)
	if _, ok := s.Clients.Get("gone"); ok {
		t.Error("a session disconnected two hours before the start outlived its one-hour expiry")
	}
	for _, id := range []string{"recent", "was-connected", "future"} {
		if _, ok := s.Clients.Get(id); !ok {
			t.Errorf("session %s expired at the start", id)
		}
	}
	s.clearExpiredClients(now + 3602)
	for _, id := range []string{"recent", "was-connected", "future"} {
		if _, ok := s.Clients.Get(id); ok {
			t.Errorf("session %s outlived its expiry counted from the start", id)
		}
	}
}

// Stored subscriptions and queued messages of a session the store no longer holds are deleted
// at the start, not loaded as a subscription of nobody.
func TestOrphanedStoredSubscriptionsAndMessagesAreDeletedAtTheStart(t *testing.T) {
	s, calls := expiryServer(t, 3600)
	s.loadClients([]storage.Client{{ID: "cam", ProtocolVersion: 4}})
	s.loadSubscriptions([]storage.Subscription{
		{Client: "cam", Filter: "dev/cam/down/#", Qos: 1},
		{Client: "ghost", Filter: "dev/ghost/down/#", Qos: 1},
	})
	s.loadInflight([]storage.Message{
		{Client: "cam", PacketID: 3, FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "dev/cam/down/desired"},
		{Client: "ghost", PacketID: 4, FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "dev/ghost/down/desired"},
	})
	if subs := s.Topics.Subscribers("dev/ghost/down/desired"); len(subs.Subscriptions) != 0 {
		t.Errorf("a subscription of no session was loaded: %v", subs.Subscriptions)
	}
	if subs := s.Topics.Subscribers("dev/cam/down/desired"); len(subs.Subscriptions) != 1 {
		t.Errorf("the session's own subscription was not loaded: %v", subs.Subscriptions)
	}
	if cl, _ := s.Clients.Get("cam"); cl.State.Inflight.Len() != 1 {
		t.Errorf("the session's queued message was not loaded")
	}
	unsubscribed, dropped, _ := calls.snapshot()
	if len(unsubscribed) != 1 || unsubscribed[0] != "ghost:dev/ghost/down/#" {
		t.Errorf("the store was asked to delete subscriptions %v, want [ghost:dev/ghost/down/#]", unsubscribed)
	}
	if len(dropped) != 1 || dropped[0] != "ghost:4" {
		t.Errorf("the store was asked to delete queued messages %v, want [ghost:4]", dropped)
	}
}
