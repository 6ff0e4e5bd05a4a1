package broker_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// startConfigured starts a broker with cfg and closes it when the test ends.
func startConfigured(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// startBudgeted starts a broker with a connection budget of rate a second and the given
// connect timeout, logging to logs.
func startBudgeted(t *testing.T, pki *mqtttest.PKI, rate float64, timeout time.Duration, logs *logtest.Buffer) *broker.Broker {
	t.Helper()
	return startConfigured(t, broker.Config{
		Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), MaxConnectRate: rate, ConnectTimeout: timeout,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
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

// noCert is a TLS client without a fleet certificate: its handshakes fail once the broker
// asks for one.
var noCert = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}

// keepHandshaking runs n clients, client i from the loopback address from(i), each making TLS
// handshakes with the broker at addr with conf one after the other (handshakeFrom) until the
// test ends, pausing for pause after each one the broker refused.
func keepHandshaking(t *testing.T, addr string, conf *tls.Config, n int, from func(i int) string, pause time.Duration) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	for i := range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if handshakeFrom(from(i), addr, conf) != nil && pause > 0 {
					time.Sleep(pause)
				}
			}
		})
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
	if err := handshakeFrom("127.0.0.3", b.Addr(), cam); err != nil {
		t.Fatalf("a camera after %d silent connections: %v", len(silent), err)
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
	// A queue of 20 turns, 0.5 s long: full, it holds 12 turns beyond the 8 a host may queue
	// and weigh nothing.
	const rate, timeout = 40.0, time.Second
	b := startBudgeted(t, pki, rate, timeout, &logs)

	// The host: 24 clients without a fleet certificate, each handshaking again as soon as
	// the last one ended, until the test is over.
	keepHandshaking(t, b.Addr(), noCert, 24, func(int) string { return "127.0.0.2" }, 0)
	waitUntil(t, func() bool { return b.Throttled() > 0 }, "the host fills the queue and is throttled")

	for i := range 6 {
		from := fmt.Sprintf("127.0.0.%d", 10+i)
		cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, fmt.Sprintf("cam-%d", i)))
		if err := handshakeFrom(from, b.Addr(), cam); err != nil {
			t.Fatalf("camera %d, from %s, with the queue full of one host's ClientHellos: %v", i, from, err)
		}
	}
	if n, most := b.QueuedTurns(), int(rate*timeout.Seconds()/2)+1; n > most {
		t.Errorf("%d turns queued, more than the budget's %d within half a timeout", n, most)
	}
	// A camera that came while the queue had room took no one's turn (under emulation, the
	// host's clients are slow to fill it again), so only some count.
	if n := b.TakenTurns(); n == 0 || n > b.Throttled() {
		t.Errorf("TakenTurns = %d (Throttled %d): want some, counted in Throttled too", n, b.Throttled())
	}
	if !strings.Contains(logs.String(), "gives its queued turns to others") || !strings.Contains(logs.String(), "source=127.0.0.2") {
		t.Errorf("no warning names the host whose turns were taken; log:\n%s", logs.String())
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

// A host holding every place in the room for sockets waiting for their ClientHello gives one
// up to a camera, and the warning names the host, whose socket was closed, not the camera.
func TestTheEarlyWarningNamesTheSourceThatWasCut(t *testing.T) {
	broker.SetMinHelloRoom(t, 4)
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 1, 2*time.Second, &logs) // a queue of 1: a room of 4
	for range 4 {
		dialFrom(t, "127.0.1.1", b.Addr(), nil)
	}
	waitUntil(t, func() bool { return b.WaitingForHello() == 4 }, "4 silent sockets wait")
	cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	if err := handshakeFrom("127.0.0.5", b.Addr(), cam); err != nil {
		t.Fatalf("camera: %v", err)
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "ClientHello") {
			line = l
		}
	}
	if !strings.Contains(line, "closed_source=127.0.1.1") || !strings.Contains(line, "pushed_out=true") || !strings.Contains(line, "newcomer_source=127.0.0.5") {
		t.Errorf("the warning does not say that 127.0.1.1's socket was pushed out by 127.0.0.5's:\n%s", line)
	}
}

// A HelloRetryRequest (the server insists on a group the client sent no key share for) and a
// TLS 1.2 client are each served with one turn.
func TestAHelloRetryAndTLS12TakeOneTurnEach(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	srv := pki.ServerTLS(t)
	srv.CurvePreferences = []tls.CurveID{tls.CurveP384}
	var logs logtest.Buffer
	b := startConfigured(t, broker.Config{Addr: "127.0.0.1:0", TLS: srv, MaxConnectRate: 2, ConnectTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	hrr := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-hrr"))
	hrr.CurvePreferences = []tls.CurveID{tls.CurveP256, tls.CurveP384} // a key share for P-256 only
	if err := handshakeFrom("127.0.0.3", b.Addr(), hrr); err != nil {
		t.Fatalf("a client sent a HelloRetryRequest: %v", err)
	}
	t12 := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-12"))
	t12.MaxVersion = tls.VersionTLS12
	t12.CurvePreferences = []tls.CurveID{tls.CurveP384}
	if err := handshakeFrom("127.0.0.4", b.Addr(), t12); err != nil {
		t.Fatalf("a TLS 1.2 client: %v", err)
	}
	if n := b.Throttled(); n != 0 {
		t.Errorf("Throttled = %d", n)
	}
	if n := b.PeakAdmitted(); n != 1 && n != 2 {
		t.Errorf("PeakAdmitted = %d, want one turn for each of the 2 connections", n)
	}
	if n := b.QueuedTurns(); n != 0 {
		t.Errorf("%d turns queued after both were served", n)
	}
	if strings.Contains(logs.String(), "refused") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// Close, with connections queued for a turn and sockets waiting for their ClientHello,
// returns at once, leaves no goroutine behind and logs none of them as a refused handshake.
func TestCloseWithConnectionsQueuedAndWaiting(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	before := runtime.NumGoroutine()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), MaxConnectRate: 1, ConnectTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		dialFrom(t, "127.0.0.2", b.Addr(), nil)
	}
	cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { handshakeFrom(fmt.Sprintf("127.0.0.%d", 10+i), b.Addr(), cam) })
	}
	waitUntil(t, func() bool { return b.QueuedTurns() == 3 && b.WaitingForHello() == 5 }, "3 turns queued, 5 sockets waiting")
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The last queued turn is 3 s away: Close does not wait for it.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	wg.Wait()
	waitUntil(t, func() bool { return runtime.NumGoroutine() <= before+2 }, "the broker's goroutines gone")
	if strings.Contains(logs.String(), "handshake refused") {
		t.Errorf("Close logged queued connections as refused handshakes:\n%s", logs.String())
	}
}

// A connection that sends more than maxHelloBytes (8 KiB) without a whole ClientHello is
// closed as soon as it has: crypto/tls would buffer up to 64 KiB for each of the thousands of
// sockets the room holds.
func TestALongClientHelloIsCutAt8KiB(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 20, 10*time.Second, &logs)
	// A ClientHello announced at 65,000 bytes, in records of 16 KiB, all but its last 100
	// bytes.
	n := 65000
	msg := make([]byte, 4+n-100)
	msg[0] = 1 // client_hello
	msg[1], msg[2], msg[3] = byte(n>>16), byte(n>>8), byte(n)
	var hello []byte
	for len(msg) > 0 {
		k := min(len(msg), 16384)
		hello = append(hello, 0x16, 0x03, 0x01, byte(k>>8), byte(k))
		hello = append(hello, msg[:k]...)
		msg = msg[k:]
	}
	d := &net.Dialer{Timeout: mqtttest.ClientTimeout}
	c, err := d.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write(hello) // the broker stops reading, and the write may block
	if !closedSoon(c, 2*time.Second) {
		t.Fatal("a connection that sent 64 KiB of ClientHello was not closed before its timeout")
	}
	waitUntil(t, func() bool { return b.WaitingForHello() == 0 }, "the room is empty")
	// A camera is served after it.
	cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	if err := handshakeFrom("127.0.0.5", b.Addr(), cam); err != nil {
		t.Fatalf("a camera: %v", err)
	}
}

// A sender with more addresses than the queue has turns, each handshaking without a fleet
// certificate again as soon as the last attempt ended, does not take every turn: each of its
// failed handshakes weighs against its address, and cameras from addresses that failed none
// take the turns those addresses queue.
func TestManyAddressesFailingHandshakesCannotStarveTheCameras(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 40, time.Second, &logs) // 20 turns within the 0.5 s wait
	const addrs = 25
	keepHandshaking(t, b.Addr(), noCert, addrs, func(i int) string { return fmt.Sprintf("127.0.4.%d", 1+i) }, 0)
	waitUntil(t, func() bool {
		for h := range addrs {
			if b.SourceWeight(fmt.Sprintf("127.0.4.%d", 1+h)) < 6 {
				return false
			}
		}
		return b.Throttled() > 0
	}, "each of the sender's addresses failed 6 handshakes, and the queue is full")
	camerasServedOverASender(t, pki, b, "127.0.5", fmt.Sprintf("%d addresses of one sender without a fleet certificate", addrs))
}

// camerasServedOverASender checks that 5 cameras, from 5 addresses (prefix.1 to prefix.5),
// each trying 3 times, are all served while a sender keeps the queue full; who says who.
func camerasServedOverASender(t *testing.T, pki *mqtttest.PKI, b *broker.Broker, prefix, who string) {
	t.Helper()
	var served atomic.Int64
	var cams sync.WaitGroup
	for i := range 5 {
		cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, fmt.Sprintf("cam-%d", i)))
		cams.Go(func() {
			for range 3 {
				if handshakeFrom(fmt.Sprintf("%s.%d", prefix, 1+i), b.Addr(), cam) == nil {
					served.Add(1)
					return
				}
				time.Sleep(300 * time.Millisecond) // a camera's backoff, short
			}
		})
	}
	cams.Wait()
	if served.Load() != 5 {
		t.Errorf("%d of 5 cameras (5 addresses, 3 tries each) were served while %s kept the queue full", served.Load(), who)
	}
}

// A fleet certificate, stolen or revoked, earns no turns a host does not weigh for: two hosts
// that complete the TLS handshake with one and never send CONNECT waste every turn they are
// given, and cameras from fresh addresses take the turns they queue. Before, only a failed
// TLS handshake weighed, and two hosts with eight loops each kept every camera out.
func TestAFleetCertificateThatNeverConnectsWeighsLikeAFailure(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 10, 2*time.Second, &logs) // 10 turns within the 1 s wait
	stolen := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-stolen"))
	// Eight clients on each host, each served then closed without CONNECT, or refused and
	// trying again 10 ms later.
	hosts := []string{"127.0.8.1", "127.0.8.2"}
	keepHandshaking(t, b.Addr(), stolen, 16, func(i int) string { return hosts[i%2] }, 10*time.Millisecond)
	waitUntil(t, func() bool {
		return b.SourceWeight(hosts[0]) >= 6 && b.SourceWeight(hosts[1]) >= 6 && b.Throttled() > 0
	}, "both hosts wasted 6 turns, and the queue is full")
	camerasServedOverASender(t, pki, b, "127.0.9", "two hosts handshaking with one fleet certificate")
}

// A host whose clients hold fleet certificates keeps the turns it queued in a storm of
// cameras from other addresses: the signers and operators reconnecting after a broker
// restart, all from one address, are not made to back off while the cameras wait for the
// certificates only they can sign. Sharing by turns queued alone took theirs (a 10,000-device
// scale run converged 70 % slower).
func TestTheSignersHostKeepsItsTurnsInAStorm(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 10, 2*time.Second, &logs) // 10 turns within the 1 s wait
	signer := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleSigner, "signer-1"))
	const signers = 6
	errs := make(chan error, signers)
	for range signers {
		go func() { errs <- handshakeFrom("127.0.0.1", b.Addr(), signer) }()
	}
	waitUntil(t, func() bool { return b.QueuedTurns() == signers-1 }, "the signers' host queues its turns")
	var wg sync.WaitGroup
	for i := range 30 {
		cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, fmt.Sprintf("cam-%d", i)))
		wg.Go(func() { handshakeFrom(fmt.Sprintf("127.0.6.%d", 1+i), b.Addr(), cam) })
	}
	for range signers {
		if err := <-errs; err != nil {
			t.Errorf("a signer from the host that queued %d turns: %v", signers-1, err)
		}
	}
	wg.Wait()
	if b.Throttled() == 0 {
		t.Error("no camera was throttled: the storm did not fill the queue")
	}
	if n := b.TakenTurns(); n != 0 {
		t.Errorf("%d turns taken, from the signers' host or from cameras that waste none", n)
	}
}
