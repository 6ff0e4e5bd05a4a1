package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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

// waitClosed reads from c until the broker closes it, and fails the test if it does not
// within mqtttest.ClientTimeout.
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(mqtttest.ClientTimeout))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the broker did not close %s within %v", what, mqtttest.ClientTimeout)
	}
}

// Connections that send nothing, bytes that are no TLS, or a ClientHello cut short take no
// turn from the connection budget: a camera connecting after them is served at once and
// nothing is throttled; the bytes that are no TLS end their connection at once, and the
// connect timeout ends the others. Before, every accepted TCP connection took a turn, so
// anyone able to open sockets, with no certificate and without a byte of TLS, could take every
// turn and have the cameras closed over the budget.
func TestSilentConnectionsTakeNoTurnFromTheBudget(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 2, 2*time.Second, &logs)
	dial := func(first []byte) net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", b.Addr(), mqtttest.ClientTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(first); err != nil {
			t.Fatal(err)
		}
		return c
	}
	var silent, garbage []net.Conn
	for range 6 {
		silent = append(silent, dial(nil))
	}
	for range 2 {
		// A TLS record header announcing a 512-byte handshake record, and the ClientHello's
		// first byte: then nothing.
		silent = append(silent, dial([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}))
	}
	for range 3 {
		garbage = append(garbage, dial([]byte("GET / HTTP/1.1\r\nHost: broker\r\n\r\n")))
	}
	for _, c := range garbage {
		waitClosed(t, c, "a connection that sent HTTP")
	}

	cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	if err := handshakeFrom("127.0.0.1", b.Addr(), cam); err != nil {
		t.Fatalf("a camera after %d silent and %d garbage connections: %v", len(silent), len(garbage), err)
	}
	if n := b.Throttled(); n != 0 {
		t.Errorf("%d connections throttled; only one took a turn", n)
	}
	if n := b.PeakAdmitted(); n != 1 {
		t.Errorf("PeakAdmitted = %d; only the camera took a turn", n)
	}
	for _, c := range silent {
		waitClosed(t, c, "a silent connection at its connect timeout")
	}
}

// A source that keeps failing TLS handshakes (here with a certificate from another CA) is
// suspect: while clean cameras queue for their turns it is closed without one, counted, and
// the broker says so, and every camera is served in its turn; once turns are free again the
// suspect source is served, even by the same address. Before, the failing source queued with
// the cameras and took their turns.
func TestASourceThatKeepsFailingHandshakesGetsOnlyFreeTurns(t *testing.T) {
	const attacker, camera = "127.0.0.2", "127.0.0.3"
	pki := mqtttest.NewPKI(t)
	other := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 10, 6*time.Second, &logs)
	good := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	forged := pki.ClientTLS(t, other.ClientCert(t, certs.RoleDevice, "cam-a"))

	for i := range 20 {
		if err := handshakeFrom(attacker, b.Addr(), forged); err == nil {
			t.Fatalf("handshake %d with a certificate of another CA served", i)
		}
	}
	waitUntil(t, func() bool { return b.Suspect(attacker) }, attacker+" is suspect after 20 failed handshakes")
	if b.Suspect(camera) {
		t.Fatalf("%s is suspect without a failure", camera)
	}
	// Its last forged handshakes, made while the turn of the one before was still ahead, were
	// refused without a turn already.
	before := b.Deprioritized()

	const cameras = 12 // within one source's share of the turns (half of the 30 queued)
	served := make(chan error, cameras)
	for range cameras {
		go func() { served <- handshakeFrom(camera, b.Addr(), good) }()
	}
	waitUntil(t, func() bool { return b.NextTurnIn() > 600*time.Millisecond }, "the cameras queue for their turns")
	if err := handshakeFrom(attacker, b.Addr(), good); err == nil {
		t.Error("the suspect source was served while the cameras queued")
	}
	for range cameras {
		if err := <-served; err != nil {
			t.Errorf("a camera was not served in its turn: %v", err)
		}
	}
	if th, dp := b.Throttled(), b.Deprioritized()-before; th != 0 || dp != 1 {
		t.Errorf("Throttled %d, Deprioritized %d more; want 0 and 1", th, dp)
	}

	waitUntil(t, func() bool { return b.NextTurnIn() <= 0 }, "a turn is free")
	if err := handshakeFrom(attacker, b.Addr(), good); err != nil {
		t.Errorf("the suspect source was not served with a turn free: %v", err)
	}
	for _, want := range []string{
		`msg="broker: a source keeps failing TLS handshakes; while the connection budget is contended it gets no turn" source=127.0.0.2 `,
		`msg="broker: connection rate over budget; closing new connections from sources that keep failing TLS handshakes, which get only free turns" budget_per_s=10 closed_so_far=`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the broker did not log %s\n%s", want, logs.String())
		}
	}
}

// Every failed handshake that had a turn counts against its source: a certificate of another
// CA, none at all, and a fleet certificate that expired or is not yet valid, even with a key
// that is not its own. The broker checks the chain before the client proves it holds the key,
// so an expired fleet certificate, which every owner keeps and TLS 1.2 sends in clear, proves
// nothing; a real camera tries one three times before its bootstrap identity.
func TestEveryFailedHandshakeCountsAgainstItsSource(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	other := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 1000, 0, &logs)
	now := time.Now()
	// Within the test CA's life, which starts certs.Backdate before now.
	expired := pki.ClientCertValidity(t, certs.RoleDevice, "cam-expired", now.Add(-4*time.Minute), time.Minute)
	early := pki.ClientCertValidity(t, certs.RoleDevice, "cam-early", now.Add(time.Hour), 0)
	stranger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stolen := &tls.Certificate{Certificate: expired.Certificate, PrivateKey: stranger, Leaf: expired.Leaf}
	tests := []struct {
		name string
		from string
		conf *tls.Config
	}{
		{"a fleet certificate that expired", "127.0.0.11", pki.ClientTLS(t, expired)},
		{"a fleet certificate not yet valid", "127.0.0.12", pki.ClientTLS(t, early)},
		{"an expired fleet certificate shown without its key", "127.0.0.13", pki.ClientTLS(t, stolen)},
		{"a certificate of another CA", "127.0.0.14", pki.ClientTLS(t, other.ClientCert(t, certs.RoleDevice, "cam-x"))},
		{"no certificate", "127.0.0.15", noCertificate(pki.ClientTLS(t, expired))},
	}
	for _, tt := range tests {
		for i := range 24 {
			if err := handshakeFrom(tt.from, b.Addr(), tt.conf); err == nil {
				t.Fatalf("%s: handshake %d served", tt.name, i)
			}
		}
	}
	// Close waits for every connection's goroutine: every failure has been scored.
	b.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !b.Suspect(tt.from) {
				t.Fatal("after 24 failed handshakes, its source is not suspect")
			}
		})
	}
}

// noCertificate returns conf presenting no client certificate.
func noCertificate(conf *tls.Config) *tls.Config {
	c := conf.Clone()
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	return c
}

// Close returns at once while handshakes wait for their turn inside the TLS handshake, after
// their ClientHello: it does not wait for the turns, which are seconds away, and every waiting
// client sees its connection closed.
func TestCloseReturnsWhileHandshakesWaitForTheirTurn(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 0.5, 30*time.Second, &logs)
	cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	const clients = 6
	ended := make(chan error, clients)
	for range clients {
		go func() { ended <- handshakeFrom("127.0.0.1", b.Addr(), cam) }()
	}
	// The turns come 2 s apart: the last one 10 s after the first.
	waitUntil(t, func() bool { return b.NextTurnIn() > 8*time.Second }, "the clients queue for their turns")
	closed := make(chan struct{})
	go func() {
		b.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("Close has not returned 5 s after it was called, with turns queued over 8 s ahead")
	}
	refused := 0
	for range clients {
		if err := <-ended; err != nil {
			refused++
		}
	}
	if refused < clients-1 {
		t.Fatalf("%d of %d waiting clients served", clients-refused, clients)
	}
}

// recordConn records what a TLS client writes and fails its first read: it captures one
// ClientHello, to replay at no crypto cost.
type recordConn struct {
	net.Conn
	out []byte
}

func (r *recordConn) Write(p []byte) (int, error)      { r.out = append(r.out, p...); return len(p), nil }
func (r *recordConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (r *recordConn) Close() error                     { return nil }
func (r *recordConn) SetDeadline(time.Time) error      { return nil }
func (r *recordConn) SetReadDeadline(time.Time) error  { return nil }
func (r *recordConn) SetWriteDeadline(time.Time) error { return nil }

func captureClientHello(t *testing.T, conf *tls.Config) []byte {
	t.Helper()
	rc := &recordConn{}
	_ = tls.Client(rc, conf).Handshake()
	if len(rc.out) == 0 || rc.out[0] != 0x16 {
		t.Fatal("no ClientHello captured")
	}
	return rc.out
}

// One host replaying a captured ClientHello at 500 connections a second (no crypto on its
// side) and leaving each hanging is scored only when its first handshakes time out, a connect
// timeout after their turns. Meanwhile it holds at most its share of the turns (half the
// queue), so a camera elsewhere always finds room in the queue and is served. Before, such a
// host filled the queue at once and every camera was refused for a whole connect timeout.
func TestOneHostReplayingClientHellosCannotFillTheQueue(t *testing.T) {
	const attacker, camera = "127.0.0.31", "127.0.0.32"
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	const rate, timeout = 20, 4 * time.Second
	b := startBudgeted(t, pki, rate, timeout, &logs)
	hello := captureClientHello(t, pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-x")))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker)}}
			c, err := d.Dial("tcp", b.Addr())
			if err != nil {
				continue
			}
			c.Write(hello)
			wg.Go(func() {
				c.SetReadDeadline(time.Now().Add(2 * timeout))
				io.Copy(io.Discard, c)
				c.Close()
			})
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()
	waitUntil(t, func() bool { return b.NextTurnIn() > 500*time.Millisecond }, "the attacker takes turns ahead")

	good := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	start := time.Now()
	for time.Since(start) < timeout+timeout/2 {
		at := time.Since(start)
		if err := handshakeFrom(camera, b.Addr(), good); err != nil {
			t.Errorf("camera at %.1f s: refused (%v) while one host replays ClientHellos; Throttled %d, Deprioritized %d",
				at.Seconds(), err, b.Throttled(), b.Deprioritized())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if next := b.NextTurnIn(); next > timeout/2 {
		t.Errorf("the queue runs %v ahead, past the wait a camera is given", next)
	}
}

// Sockets that send nothing take no turn, but each takes a goroutine and a file descriptor
// until the connect timeout: one address may hold at most 256 of them, the rest closed at
// once, and a camera elsewhere is served meanwhile.
func TestOneHostHoldsABoundedNumberOfSilentSockets(t *testing.T) {
	const attacker, camera = "127.0.0.51", "127.0.0.52"
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 1, 4*time.Second, &logs)
	const silent = 300
	var conns []net.Conn
	for range silent {
		d := &net.Dialer{Timeout: mqtttest.ClientTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(attacker)}}
		c, err := d.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	waitUntil(t, func() bool { return b.RefusedEarly() >= silent-256 }, "the sockets over 256 are closed")
	open := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		var one [1]byte
		_, err := c.Read(one[:])
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			open++
		}
	}
	if open > 256 {
		t.Errorf("%d of %d silent connections from one address held by the broker, want at most 256", open, silent)
	}
	if err := handshakeFrom(camera, b.Addr(), pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))); err != nil {
		t.Errorf("a camera elsewhere was refused meanwhile: %v", err)
	}
	if !strings.Contains(logs.String(), `msg="broker: too many connections waiting to send their TLS ClientHello; closing one at once" source=127.0.0.51 per_source=256`) {
		t.Errorf("the broker did not say so:\n%s", logs.String())
	}
}

// Sixteen hosts each holding their share of silent sockets fill the room all sources have
// (4,096): a camera from another address is still served, a waiting socket of one of them
// closed to make room. Before, the camera was closed at accept: sixteen addresses locked the
// fleet out without a single TLS byte.
func TestHostsFillingTheRoomForSilentSocketsOnlyCrowdEachOther(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 20, 10*time.Second, &logs)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for s := range 16 {
		from := fmt.Sprintf("127.0.1.%d", s+1)
		for range 256 {
			d := &net.Dialer{Timeout: mqtttest.ClientTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			c, err := d.Dial("tcp", b.Addr())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	}
	cam := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	if err := handshakeFrom("127.0.0.99", b.Addr(), cam); err != nil {
		t.Errorf("a camera from another address was refused with %d silent sockets from 16 others: %v (RefusedEarly %d)", len(conns), err, b.RefusedEarly())
	}
	if !strings.Contains(logs.String(), "made_room=true") {
		t.Errorf("the broker did not say it made room:\n%s", logs.String())
	}
}

// Every connection a storm from one address loses is in one of the broker's counters
// (fleetctl broker prints them all when it stops): over the budget, from a suspect source, or
// closed before its ClientHello.
func TestEveryConnectionAStormLosesIsCounted(t *testing.T) {
	const storm = 800
	pki := mqtttest.NewPKI(t)
	var logs logtest.Buffer
	b := startBudgeted(t, pki, 20, 2*time.Second, &logs)
	conf := pki.ClientTLS(t, pki.ClientCert(t, certs.RoleDevice, "cam-a"))
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range storm {
		wg.Go(func() {
			if handshakeFrom("127.0.0.1", b.Addr(), conf) != nil {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if got := b.Throttled() + b.Deprioritized() + b.RefusedEarly(); uint64(refused.Load()) != got {
		t.Errorf("%d connections refused; Throttled %d, Deprioritized %d, RefusedEarly %d", refused.Load(), b.Throttled(), b.Deprioritized(), b.RefusedEarly())
	}
}
