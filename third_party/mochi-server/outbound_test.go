// SPDX-License-Identifier: MIT

// camagent patch: tests of the outbound queue, run by camagent's make test
// (go test github.com/mochi-mqtt/server/v2 from camagent's module).

package mqtt

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// newQueueTestServer returns a server that lets every client publish and subscribe, with at
// most pending packets queued per client (the default if zero).
func newQueueTestServer(t *testing.T, pending int32) *Server {
	t.Helper()
	caps := NewDefaultServerCapabilities()
	if pending > 0 {
		caps.MaximumClientWritesPending = pending
	}
	s := New(&Options{Capabilities: caps, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// pipeClient returns a client of s on one end of a pipe and, on the other end, a client of s
// used only to read what the first writes. The pipe is closed when the test ends.
func pipeClient(t *testing.T, s *Server) (cl, reader *Client) {
	t.Helper()
	srv, cli := net.Pipe()
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return s.NewClient(srv, "test", "cam", false), s.NewClient(cli, "test", "reader", false)
}

// startWriteLoop runs cl's write loop and returns a channel closed when it returns.
func startWriteLoop(cl *Client) <-chan struct{} {
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		cl.WriteLoop()
	}()
	return exited
}

// waitClosed fails the test unless ch is closed within a few seconds.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not within 5s", what)
	}
}

// numbered is a QoS 0 PUBLISH whose payload is n.
func numbered(n uint32) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   "cmd",
		Payload:     binary.BigEndian.AppendUint32(nil, n),
	}
}

// readNumber reads the next PUBLISH from reader and returns its payload's number.
func readNumber(t *testing.T, reader *Client) uint32 {
	t.Helper()
	var fh packets.FixedHeader
	if err := reader.ReadFixedHeader(&fh); err != nil {
		t.Fatalf("read fixed header: %v", err)
	}
	pk, err := reader.ReadPacket(&fh)
	if err != nil {
		t.Fatalf("read packet: %v", err)
	}
	if pk.FixedHeader.Type != packets.Publish || len(pk.Payload) != 4 {
		t.Fatalf("read %v with payload %x, want a numbered PUBLISH", pk.FixedHeader.Type, pk.Payload)
	}
	return binary.BigEndian.Uint32(pk.Payload)
}

// sub is the subscription the test clients receive numbered packets by.
func sub() packets.Subscription { return packets.Subscription{Filter: "cmd"} }

// A new client holds no room for its outbound packets: v2.7.9 allocated a channel of
// MaximumClientWritesPending pointers (64 KiB by default) for every connection.
func TestANewClientHoldsNoOutboundBuffer(t *testing.T) {
	s := newQueueTestServer(t, 0)
	const n = 100
	clients := make([]*Client, n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range clients {
		clients[i] = s.NewClient(nil, "test", "cam", false)
	}
	runtime.ReadMemStats(&after)

	perClient := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per client", perClient)
	// Everything else a client allocates is a few KiB; the v2.7.9 channel alone was 64 KiB.
	if limit := uint64(s.Options.Capabilities.MaximumClientWritesPending) * 8 / 4; perClient > limit {
		t.Errorf("a new client allocates %d bytes, want at most %d", perClient, limit)
	}
	for _, cl := range clients {
		if c := cap(cl.State.outbound.pending); c != 0 {
			t.Fatalf("a new client's queue has room for %d packets, want none", c)
		}
	}
}

// The queue keeps the limit and the drop of v2.7.9's channel: with MaximumClientWritesPending
// packets queued the next publish is dropped; once the write loop has begun writing them,
// there is room again.
func TestAFullOutboundQueueDropsAPublishUntilTheWriteLoopTakesOne(t *testing.T) {
	const limit = 4
	s := newQueueTestServer(t, limit)
	cl, reader := pipeClient(t, s)

	for i := uint32(0); i < limit; i++ {
		if _, err := s.publishToClient(cl, sub(), numbered(i)); err != nil {
			t.Fatalf("publish %d of %d: %v", i+1, limit, err)
		}
	}
	if _, err := s.publishToClient(cl, sub(), numbered(limit)); !errors.Is(err, packets.ErrPendingClientWritesExceeded) {
		t.Fatalf("publish %d with %d pending: err %v, want %v", limit+1, limit, err, packets.ErrPendingClientWritesExceeded)
	}
	if got := s.Info.MessagesDropped; got != 1 {
		t.Fatalf("MessagesDropped = %d, want 1", got)
	}

	exited := startWriteLoop(cl)
	for i := uint32(0); i < limit; i++ {
		if got := readNumber(t, reader); got != i {
			t.Fatalf("packet %d on the wire is %d", i, got)
		}
	}
	// The last packet read was handed to WritePacket, so none is queued.
	if _, err := s.publishToClient(cl, sub(), numbered(limit+1)); err != nil {
		t.Fatalf("publish after the queue was written: %v", err)
	}
	if got := readNumber(t, reader); got != limit+1 {
		t.Fatalf("packet on the wire is %d, want %d", got, limit+1)
	}

	cl.Stop(nil)
	waitClosed(t, exited, "write loop returns after Stop")
}

// Packets pushed by one goroutine while the write loop drains the queue reach the wire in the
// order pushed, through many small batches and full queues.
func TestOutboundPacketsAreWrittenInTheOrderPublished(t *testing.T) {
	const n = 5000
	s := newQueueTestServer(t, 16)
	cl, reader := pipeClient(t, s)
	exited := startWriteLoop(cl)

	published := make(chan error, 1)
	go func() {
		for i := uint32(0); i < n; {
			_, err := s.publishToClient(cl, sub(), numbered(i))
			switch {
			case errors.Is(err, packets.ErrPendingClientWritesExceeded):
				runtime.Gosched() // full: publish it again once the write loop took some
			case err != nil:
				published <- err
				return
			default:
				i++
			}
		}
		published <- nil
	}()

	for i := uint32(0); i < n; i++ {
		if got := readNumber(t, reader); got != i {
			t.Fatalf("packet %d on the wire is %d", i, got)
		}
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	if got := cl.State.outbound.len(); got != 0 {
		t.Fatalf("%d packets queued after all were read", got)
	}

	cl.Stop(nil)
	waitClosed(t, exited, "write loop returns after Stop")
}

// The write loop returns when its client stops, whether it waits for packets or is blocked
// writing a batch.
func TestTheWriteLoopReturnsWhenTheClientStops(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pending uint32
	}{
		{"when nothing is pending", 0},
		{"when packets are pending and the peer reads nothing", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newQueueTestServer(t, 0)
			cl, _ := pipeClient(t, s)
			for i := uint32(0); i < tc.pending; i++ {
				if _, err := s.publishToClient(cl, sub(), numbered(i)); err != nil {
					t.Fatal(err)
				}
			}
			exited := startWriteLoop(cl)
			cl.Stop(nil)
			waitClosed(t, exited, "write loop returns after Stop")
		})
	}
}

// The queue reuses the array of a written batch, so a steady flow of packets allocates
// nothing, and releases one a burst made large, so an idle client does not keep it.
func TestTheOutboundQueueReusesSmallArraysAndReleasesLargeOnes(t *testing.T) {
	q := outboundQueue{ready: make(chan struct{}, 1), max: 10000}
	pk := new(packets.Packet)
	cycle := func(n int) {
		for i := 0; i < n; i++ {
			if !q.push(pk) {
				t.Fatal("push refused below the limit")
			}
		}
		<-q.ready
		batch := q.take()
		if len(batch) != n {
			t.Fatalf("took %d packets, pushed %d", len(batch), n)
		}
		for i := 0; i < len(batch); i++ {
			q.started()
		}
		q.recycle(batch)
	}

	if allocs := testing.AllocsPerRun(100, func() { cycle(3) }); allocs != 0 {
		t.Errorf("a batch of 3 packets allocates %v times, want 0", allocs)
	}
	cycle(1000)
	if held := cap(q.pending) + cap(q.spare); held > 2*outboundKeepCap {
		t.Errorf("after a burst of 1000 the idle queue holds room for %d packets, want at most %d", held, 2*outboundKeepCap)
	}
	if q.len() != 0 {
		t.Errorf("len = %d after every packet was taken and started", q.len())
	}
}
