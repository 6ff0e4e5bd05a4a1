package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/camagent/camagent/certs"
)

// listener is the broker's only network listener: TCP with TLS, implementing mochi's
// listeners.Listener. It replaces mochi's listeners.TCP for three reasons: every goroutine it
// starts is tracked and awaited by Close; the TLS handshake and the CONNECT packet must arrive
// within a deadline (mochi sets none before CONNECT, so an idle socket would hold a goroutine
// forever); and it keeps every live connection so that DisconnectSerial, Close and the
// certificate's expiry can cut them at the socket, which never blocks on a stalled peer.
type listener struct {
	id      string
	addr    string
	tls     *tls.Config
	timeout time.Duration
	log     *slog.Logger

	ln     net.Listener
	ctx    context.Context // cancelled by Close: aborts handshakes in progress
	cancel context.CancelFunc

	budget    *pacer        // Config.MaxConnectRate; nil: no limit
	throttled atomic.Uint64 // connections closed because their turn would come too late
	lastWarn  atomic.Int64  // Unix ns of the last "over budget" warning
	admitted  admissions    // handshakes started, per second
	expiring  atomic.Int64  // expiry timers armed and neither stopped nor fired

	mu       sync.Mutex
	closed   bool
	conns    map[*tls.Conn]*liveConn            // live connections
	bySerial map[string]map[*tls.Conn]*liveConn // the verified ones, by certificate serial (its bytes)
	wg       sync.WaitGroup                     // Serve's loop, one goroutine per connection and each expiry timer that fired
}

var _ listeners.Listener = (*listener)(nil)

// liveConn is what the listener knows of one connection.
type liveConn struct {
	raw    net.Conn          // the socket under the TLS connection
	leaf   *x509.Certificate // the verified client certificate, once the handshake is done
	expiry *time.Timer       // cuts the connection when its certificate chain expires; nil before
}

func newListener(id, addr string, conf *tls.Config, timeout time.Duration, log *slog.Logger) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &listener{
		id: id, addr: addr, tls: conf, timeout: timeout, log: log,
		ctx: ctx, cancel: cancel,
		conns:    make(map[*tls.Conn]*liveConn),
		bySerial: make(map[string]map[*tls.Conn]*liveConn),
	}
}

// Init binds the address. mochi calls it from Server.AddListener.
func (l *listener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// ID returns the listener id mochi files clients under.
func (l *listener) ID() string { return l.id }

// Protocol returns "tcp".
func (l *listener) Protocol() string { return "tcp" }

// Address returns the bound address once Init has run, the configured one before.
func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Serve accepts connections until Close. mochi runs it on a goroutine of its own; it returns
// at once if Close came first.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()

	var backoff time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure such as running out of file descriptors: say so, wait a
			// little (or for Close) and go on, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("broker: accept failed", "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		conn := tls.Server(raw, l.tls)
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			raw.Close()
			return
		}
		l.conns[conn] = &liveConn{raw: raw}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handle(conn, raw, establish)
	}
}

// handle runs one connection: the TLS handshake, then mochi's session until it ends.
func (l *listener) handle(conn *tls.Conn, raw net.Conn, establish listeners.EstablishFn) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		c := l.conns[conn]
		if c != nil && c.expiry != nil && c.expiry.Stop() {
			l.expiring.Add(-1)
			l.wg.Done() // the timer's, since it will never fire
		}
		if c != nil && c.leaf != nil {
			key := string(c.leaf.SerialNumber.Bytes())
			delete(l.bySerial[key], conn)
			if len(l.bySerial[key]) == 0 {
				delete(l.bySerial, key)
			}
		}
		delete(l.conns, conn)
		l.mu.Unlock()
		raw.Close()
	}()
	remote := raw.RemoteAddr().String()
	if l.budget == nil {
		l.admitted.add(time.Now())
	} else if !l.takeTurn() {
		return
	}
	// The deadline covers the handshake and the CONNECT packet; mochi replaces it with one
	// derived from the keepalive once the client is accepted.
	if err := raw.SetDeadline(time.Now().Add(l.timeout)); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err := conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, io.EOF) {
			level = slog.LevelDebug // a port probe or a client that gave up
		}
		l.log.Log(context.Background(), level, "broker: tls handshake refused", "remote", remote, "error", err)
		return
	}
	leaf := verifiedLeaf(conn)
	l.mu.Lock()
	c := l.conns[conn]
	c.leaf = leaf
	if leaf != nil {
		key := string(leaf.SerialNumber.Bytes())
		if l.bySerial[key] == nil {
			l.bySerial[key] = make(map[*tls.Conn]*liveConn)
		}
		l.bySerial[key][conn] = c
		// No certificate is valid after its NotAfter (certs.VerifyClient; crypto/tls and x509
		// allow no skew either), so the connection ends when its chain expires. A timer costs
		// no goroutine until it fires; the one that fires is awaited by Close.
		l.wg.Add(1)
		l.expiring.Add(1)
		c.expiry = time.AfterFunc(chainExpiry(conn.ConnectionState()).Sub(l.now()), func() { l.expire(conn, c) })
	}
	l.mu.Unlock()
	// mochi keeps the connection it is handed as the client's net.Conn: the wrapper carries
	// the broker's per-connection state to its hooks.
	if err := establish(l.id, &clientConn{Conn: conn}); err != nil {
		l.log.Debug("broker: connection ended", "remote", remote, "error", err)
	}
}

// expire cuts conn, whose certificate chain has just expired, if it is still live.
func (l *listener) expire(conn *tls.Conn, c *liveConn) {
	defer l.wg.Done()
	l.expiring.Add(-1)
	l.mu.Lock()
	live := l.conns[conn] == c
	l.mu.Unlock()
	if !live {
		return
	}
	l.log.Info("broker: certificate expired; connection cut",
		"identity", certs.CertIdentity(c.leaf), "serial", c.leaf.SerialNumber.Text(16))
	c.raw.Close()
}

// now is the broker's clock, Config.Now, which New sets as the TLS configuration's.
func (l *listener) now() time.Time {
	if l.tls.Time != nil {
		return l.tls.Time()
	}
	return time.Now()
}

// chainExpiry returns when the verified client certificate stops being valid: the earliest
// NotAfter in its chain, leaf or CA. With several verified chains (a cross-signed CA), the
// certificate is valid while any of them is, so the latest of those.
func chainExpiry(st tls.ConnectionState) time.Time {
	var end time.Time
	for _, chain := range st.VerifiedChains {
		var first time.Time
		for _, c := range chain {
			if first.IsZero() || c.NotAfter.Before(first) {
				first = c.NotAfter
			}
		}
		if first.After(end) {
			end = first
		}
	}
	return end
}

// takeTurn waits for the connection's turn in the connection budget, for at most half of the
// connect timeout, and reports whether it got one. One that would wait longer is refused at
// once, without a turn, so that it takes nothing from the connections behind it.
func (l *listener) takeTurn() bool {
	now := time.Now()
	at, ok := l.budget.turn(now, l.timeout/2)
	if !ok {
		n := l.throttled.Add(1)
		if last := l.lastWarn.Load(); now.UnixNano()-last > int64(10*time.Second) && l.lastWarn.CompareAndSwap(last, now.UnixNano()) {
			l.log.Warn("broker: connection rate over budget; closing new connections that would wait too long",
				"budget_per_s", l.budget.rate, "closed_so_far", n, "admitted_peak_per_s", l.admitted.peak())
		}
		return false
	}
	l.admitted.add(at)
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-l.ctx.Done():
			return false
		}
	}
	return true
}

// pacer hands out turns, a smooth budget of rate a second with a burst of one: each turn comes
// at least 1/rate after the one before, in the order asked for, so no second of the clock
// holds more than rate turns, plus one. It is safe for concurrent use.
type pacer struct {
	rate     float64
	interval time.Duration

	mu   sync.Mutex
	next time.Time // the earliest time of the next turn
}

func newPacer(rate float64) *pacer {
	return &pacer{rate: rate, interval: time.Duration(float64(time.Second) / rate)}
}

// turn takes the next turn and returns its time, if that is at most wait after now; else it
// takes nothing and returns false.
func (p *pacer) turn(now time.Time, wait time.Duration) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := p.next
	if at.Before(now) {
		at = now
	}
	if at.Sub(now) > wait {
		return time.Time{}, false
	}
	p.next = at.Add(p.interval)
	return at, true
}

// Close stops accepting, cuts every connection at the socket, lets mochi forget its clients
// (closeClients) and waits for every goroutine the listener started.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	raws := make([]net.Conn, 0, len(l.conns))
	for _, c := range l.conns {
		raws = append(raws, c.raw)
	}
	l.mu.Unlock()

	l.cancel()
	if l.ln != nil {
		l.ln.Close()
	}
	for _, raw := range raws {
		raw.Close()
	}
	closeClients(l.id)
	l.wg.Wait()
}

// disconnectSerial cuts every connection whose verified client certificate has serial, and
// returns how many it cut. Connections still in their handshake are left alone: they meet
// Config.Revoked at CONNECT.
func (l *listener) disconnectSerial(serial *big.Int) int {
	l.mu.Lock()
	var cut []net.Conn
	for _, c := range l.bySerial[string(serial.Bytes())] {
		cut = append(cut, c.raw)
	}
	l.mu.Unlock()
	for _, raw := range cut {
		raw.Close()
	}
	return len(cut)
}

// admissions counts the connections admitted in each second of the clock, by the time of
// their turn, and keeps the most in any one second: the figure to hold against the connection
// budget. Callers may add out of order (a goroutine can be delayed between taking its turn
// and counting it): it counts the last few seconds apart. It is safe for concurrent use.
type admissions struct {
	mu   sync.Mutex
	sec  [8]int64 // the Unix second counted in n at the same index (sec mod 8)
	n    [8]int
	most int
}

func (a *admissions) add(t time.Time) {
	s := t.Unix()
	i := s & 7
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sec[i] != s {
		if a.sec[i] > s {
			return // more than 8 s late: that second is gone
		}
		a.sec[i], a.n[i] = s, 0
	}
	a.n[i]++
	a.most = max(a.most, a.n[i])
}

func (a *admissions) peak() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.most
}
