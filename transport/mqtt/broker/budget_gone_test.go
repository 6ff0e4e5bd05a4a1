//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd || solaris

// The broker looks at a socket without reading it on these systems only (peek_unix.go).

package broker_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// clientHello returns the first TLS record a client with conf sends: its ClientHello.
func clientHello(t *testing.T, conf *tls.Config) []byte {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(c, conf).Handshake() // fails once s is closed
	}()
	defer func() { s.Close(); <-done }()
	s.SetReadDeadline(time.Now().Add(mqtttest.ClientTimeout))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// Connections whose clients sent their ClientHello and then left (closed, reset, or closed
// their sending side: as agents whose connect timeout ended while they were queued do before
// they dial again) do not spend their turns: when the first of their turns comes, each is
// found gone, closed unanswered and counted as a turn wasted by its source, and the camera
// queued behind them, the queue full, gets that first turn. Before, the broker served each
// of them in its turn, ServerHello, key exchange and signature, to a peer that was gone, and
// the camera waited for all their turns.
func TestClientsGoneBeforeTheirTurnDoNotSpendIt(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	// A turn every 4 s, a queue of 5 within the 20 s wait: the clients below have 4 s to
	// queue and leave before the first of their turns comes (under qemu-arm too).
	b := startBudgeted(t, pki, 0.25, 40*time.Second, &logs)
	hello := clientHello(t, noCert)

	// A camera takes the turn at once; the next comes 4 s later.
	camA := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	if err := handshakeFrom("127.0.0.3", b.Addr(), camA); err != nil {
		t.Fatalf("the first camera: %v", err)
	}
	start := time.Now()
	// Four clients from one host send their ClientHello, are queued, and leave: two close
	// their socket, one resets it, one closes its sending side only, and reads what comes.
	const gone = 4
	var halfClosed []net.Conn
	for i := range gone {
		c := dialFrom(t, "127.0.0.2", b.Addr(), hello)
		waitUntil(t, func() bool { return b.QueuedTurns() == i+1 }, fmt.Sprintf("%d connections queued", i+1))
		tcp := c.(*net.TCPConn)
		switch i {
		case 0, 2:
			tcp.Close()
		case 1:
			tcp.SetLinger(0) // a reset
			tcp.Close()
		case 3:
			tcp.CloseWrite()
			halfClosed = append(halfClosed, tcp)
		}
	}
	setup := time.Since(start)

	// A camera from another address, queued last, the queue then full.
	camB := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-b"))
	if err := handshakeFrom("127.0.0.4", b.Addr(), camB); err != nil {
		t.Fatalf("a camera queued behind %d connections whose clients left: %v", gone, err)
	}
	// The camera's handshake was served after every one of them was found gone, and none was
	// answered.
	if n := b.SkippedGone(); n != gone {
		t.Errorf("SkippedGone = %d when the camera was served, want %d (the connections queued before it; setup took %v of the 4 s before the first of their turns)", n, gone, setup)
	}
	for _, c := range halfClosed {
		c.SetReadDeadline(time.Now().Add(mqtttest.ClientTimeout))
		got, err := io.ReadAll(c)
		if len(got) > 0 || err != nil {
			t.Errorf("the broker sent %d bytes (%v) to a client that had closed its side before its turn: its handshake went on", len(got), err)
		}
	}
	if w := b.SourceWeight("127.0.0.2"); w != gone {
		t.Errorf("the host whose clients left weighs %d, want %d: each weighs as a turn wasted", w, gone)
	}
	if n := b.Throttled(); n != 0 {
		t.Errorf("Throttled = %d", n)
	}
	if n := b.QueuedTurns(); n != 0 {
		t.Errorf("%d turns still queued", n)
	}
}
