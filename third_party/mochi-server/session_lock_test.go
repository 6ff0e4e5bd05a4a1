// SPDX-License-Identifier: MIT

// camagent patch: test of lockSession, run by camagent's make test
// (go test github.com/mochi-mqtt/server/v2 from camagent's module).

package mqtt

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// allowAll lets every client connect, publish and subscribe.
type allowAll struct{ HookBase }

func (h *allowAll) ID() string { return "allow-all" }
func (h *allowAll) Provides(b byte) bool {
	return b == OnConnectAuthenticate || b == OnACLCheck
}
func (h *allowAll) OnConnectAuthenticate(*Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*Client, string, bool) bool              { return true }

// connect opens a connection to s over a pipe, sends a persistent-session CONNECT for id and
// drains whatever the server writes. It returns the client's end.
func connect(t *testing.T, s *Server, id string) net.Conn {
	t.Helper()
	srv, cli := net.Pipe()
	go s.EstablishConnection("test", srv)
	go io.Copy(io.Discard, cli)
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 30},
	}
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	go cli.Write(b.Bytes())
	t.Cleanup(func() { cli.Close() })
	return cli
}

// A second connection with the same client id that takes the session over while the first is
// between taking it over itself and entering s.Clients must end up the client s.Clients
// knows, with the first one taken over: v2.7.9 let the first put itself in s.Clients after
// the second, and every delivery then went to the first, closed connection.
func TestATakeOverCannotSlipBetweenInheritingAndEnteringTheClients(t *testing.T) {
	s := New(&Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}) // slog.DiscardHandler is go1.24; this module says go 1.21
	if err := s.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []*Client
	firstIn, release := make(chan struct{}), make(chan struct{})
	secondIn := make(chan struct{})
	afterInherit = func(cl *Client) {
		mu.Lock()
		seen = append(seen, cl)
		n := len(seen)
		mu.Unlock()
		switch n {
		case 1:
			close(firstIn)
			<-release
		case 2:
			close(secondIn)
		}
	}
	t.Cleanup(func() { afterInherit = nil })

	connect(t, s, "cam")
	<-firstIn
	connect(t, s, "cam")
	// The second connection must wait for the first to be done; give it the chance to slip in.
	select {
	case <-secondIn:
	case <-time.After(300 * time.Millisecond):
	}
	close(release)

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 2 {
			if cl, ok := s.Clients.Get("cam"); ok && cl == seen[1] {
				break
			}
		}
		if time.Now().After(deadline) {
			cl, _ := s.Clients.Get("cam")
			t.Fatalf("s.Clients knows %p; the connections were %v (the second must win)", cl, seen)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	if !seen[0].IsTakenOver() {
		t.Fatal("the first connection was not taken over by the second")
	}
	if seen[1].IsTakenOver() || seen[1].Closed() {
		t.Fatal("the second connection is not the live one")
	}
}
