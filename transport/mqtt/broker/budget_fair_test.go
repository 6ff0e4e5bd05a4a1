package broker_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// startBudgeted starts a broker with a connection budget of rate a second and the given
// connect timeout, logging to logs.
func startBudgeted(t *testing.T, pki *mqtttest.PKI, rate float64, timeout time.Duration, logs *logtest.Buffer) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Config{
		Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), MaxConnectRate: rate, ConnectTimeout: timeout,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// handshakeFrom makes a TLS handshake with the broker at addr from the loopback address from,
// with conf, and returns nil if the broker served it (it then waits for CONNECT), else why not.
// It closes the connection. It may run on any goroutine.
func handshakeFrom(from, addr string, conf *tls.Config) error {
	d := &net.Dialer{Timeout: mqtttest.ClientTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := tls.DialWithDialer(d, "tcp", addr, conf)
	if err != nil {
		return err
	}
	defer c.Close()
	// TLS 1.3: a refused client certificate shows on the first read.
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var one [1]byte
	_, err = c.Read(one[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err == nil {
		return errors.New("the broker sent data before CONNECT")
	}
	return err
}

// dialFrom opens a TCP connection to addr from the loopback address from, writes first, and
// closes it when the test ends.
func dialFrom(t *testing.T, from, addr string, first []byte) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: mqtttest.ClientTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitUntil polls cond until it holds, for at most mqtttest.ClientTimeout; what says what is
// awaited.
func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(mqtttest.ClientTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%v passed, and still not: %s", mqtttest.ClientTimeout, what)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// closedSoon reports whether the broker closes c within d.
func closedSoon(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Connections that send nothing, bytes that are no TLS, or a ClientHello cut short take no
// turn from the connection budget: a camera connecting after them is served at once and
// nothing is throttled; the bytes that are no TLS end their connection at once. Before, every
// accepted TCP connection took a turn, so anyone able to open sockets, with no certificate and
// without a byte of TLS, could take every turn and have the cameras closed over the budget.
func TestSilentConnectionsTakeNoTurnFromTheBudget(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 2, 2*time.Second, &logs)
	var silent []net.Conn
	for range 6 {
		silent = append(silent, dialFrom(t, "127.0.0.2", b.Addr(), nil))
	}
	for range 2 {
		// A TLS record header announcing a 512-byte handshake record, and the ClientHello's
		// first byte: then nothing.
		silent = append(silent, dialFrom(t, "127.0.0.2", b.Addr(), []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}))
	}
	for range 3 {
		c := dialFrom(t, "127.0.0.2", b.Addr(), []byte("GET / HTTP/1.1\r\nHost: broker\r\n\r\n"))
		if !closedSoon(c, mqtttest.ClientTimeout) {
			t.Fatal("the broker did not close a connection that sent HTTP")
		}
	}
	waitUntil(t, func() bool { return b.WaitingForHello() == len(silent) }, fmt.Sprintf("%d connections wait for their ClientHello", len(silent)))

	cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	start := time.Now()
	if err := handshakeFrom("127.0.0.3", b.Addr(), cam); err != nil {
		t.Fatalf("a camera after %d silent connections: %v", len(silent), err)
	}
	// The budget is 2 a second: had any silent connection taken a turn, the camera's would
	// come half a second later at least.
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("the camera's handshake took %v: it waited for a turn", d)
	}
	if n := b.Throttled(); n != 0 {
		t.Errorf("%d connections throttled; only the camera took a turn", n)
	}
	if n := b.PeakAdmitted(); n != 1 {
		t.Errorf("PeakAdmitted = %d; only the camera took a turn", n)
	}
	// The silent ones end at the connect timeout.
	for _, c := range silent {
		if !closedSoon(c, 2*time.Second+mqtttest.ClientTimeout) {
			t.Fatal("a silent connection outlived the connect timeout")
		}
	}
	waitUntil(t, func() bool { return b.WaitingForHello() == 0 }, "the room for connections waiting for their ClientHello is empty")
}

// One host sending ClientHellos as fast as it can (a ClientHello costs nothing to make, or is
// replayed as captured) cannot take the cameras' turns: with the queue full of its
// connections, each camera that comes takes the last turn that host queued, and is served
// within the queue's wait. Before, the queue was first come first served, and every camera
// arriving while the host kept it full was closed over the budget.
func TestOneHostsClientHellosCannotTakeTheCamerasTurns(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	const rate, timeout = 10.0, 2 * time.Second // a queue of 10 turns, 1 s long
	b := startBudgeted(t, pki, rate, timeout, &logs)

	// The host: 24 clients without a fleet certificate, each handshaking again as soon as
	// the last one ended, until the test is over.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	for range 24 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				handshakeFrom("127.0.0.2", b.Addr(), noCert)
			}
		})
	}
	waitUntil(t, func() bool { return b.Throttled() > 0 }, "the host fills the queue and is throttled")

	for i := range 6 {
		from := fmt.Sprintf("127.0.0.%d", 10+i)
		cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, fmt.Sprintf("cam-%d", i)))
		start := time.Now()
		if err := handshakeFrom(from, b.Addr(), cam); err != nil {
			t.Fatalf("camera %d, from %s, with the queue full of one host's ClientHellos: %v", i, from, err)
		}
		if d := time.Since(start); d > timeout/2+500*time.Millisecond {
			t.Errorf("camera %d was served after %v, longer than the queue's wait", i, d)
		}
	}
	if n := b.QueuedTurns(); n > int(rate)+1 {
		t.Errorf("%d turns queued, more than the budget's %g within half a timeout", n, rate)
	}
}

// Silent sockets from many hosts cannot hold the room for connections waiting for their
// ClientHello: sixteen hosts holding two sockets each in a room of 32 give way to a camera
// from a seventeenth (the oldest socket of one of them is closed); thirty-two hosts holding
// one each give way once their sockets have waited longer than a quarter of the connect
// timeout. Before the room, silent sockets took turns from the budget; without sharing it,
// they would have locked every camera out until their timeout.
func TestSilentSocketsFromManyHostsCannotHoldTheRoom(t *testing.T) {
	broker.SetMinHelloRoom(t, 32)
	pki := mqtttest.NewPKI(t)
	cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	const timeout = 4 * time.Second // a quarter: 1 s

	t.Run("sixteen hosts, two sockets each", func(t *testing.T) {
		var logs logtest.Buffer
		b := startBudgeted(t, pki, 2, timeout, &logs)
		var silent []net.Conn
		for h := range 16 {
			for range 2 {
				silent = append(silent, dialFrom(t, fmt.Sprintf("127.0.1.%d", 1+h), b.Addr(), nil))
			}
		}
		waitUntil(t, func() bool { return b.WaitingForHello() == 32 }, "32 silent sockets wait")
		// A seventeenth socket of one of them is refused at accept.
		extra := dialFrom(t, "127.0.1.1", b.Addr(), nil)
		if !closedSoon(extra, mqtttest.ClientTimeout) {
			t.Fatal("a third socket of a host holding two, in a full room, was not closed")
		}
		if err := handshakeFrom("127.0.0.5", b.Addr(), cam); err != nil {
			t.Fatalf("a camera with the room full of sixteen hosts' silent sockets: %v", err)
		}
		closed := 0
		for _, c := range silent {
			if closedSoon(c, 10*time.Millisecond) {
				closed++
			}
		}
		if closed != 1 || b.RefusedEarly() != 2 {
			t.Errorf("%d silent sockets closed, %d refused early; want 1 pushed out and 2 (with the refused one)", closed, b.RefusedEarly())
		}
		if !strings.Contains(logs.String(), "ClientHello") {
			t.Errorf("no warning about connections refused before their ClientHello; log:\n%s", logs.String())
		}
	})

	t.Run("thirty-two hosts, one socket each", func(t *testing.T) {
		var logs logtest.Buffer
		b := startBudgeted(t, pki, 2, timeout, &logs)
		for h := range 32 {
			dialFrom(t, fmt.Sprintf("127.0.2.%d", 1+h), b.Addr(), nil)
		}
		waitUntil(t, func() bool { return b.WaitingForHello() == 32 }, "32 silent sockets wait")
		filled := time.Now()
		if err := handshakeFrom("127.0.0.5", b.Addr(), cam); err == nil && time.Since(filled) < time.Second {
			t.Fatal("a camera got into a full room of equal hosts before any socket there had waited a quarter of the timeout")
		}
		time.Sleep(time.Until(filled.Add(time.Second + 100*time.Millisecond)))
		if err := handshakeFrom("127.0.0.5", b.Addr(), cam); err != nil {
			t.Fatalf("a camera with the room full of silent sockets older than a quarter of the timeout: %v", err)
		}
	})
}
