package broker

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/camagent/camagent/certs"
)

// listener is the broker's only network listener: TCP with TLS, implementing mochi's
// listeners.Listener. It replaces mochi's listeners.TCP for four reasons: every goroutine it
// starts is tracked and awaited by Close; the TLS handshake and the CONNECT packet must arrive
// within a deadline (mochi sets none before CONNECT, so an idle socket would hold a goroutine
// forever); it keeps every live connection so that DisconnectSerial, Close and the
// certificate's expiry can cut them at the socket, which never blocks on a stalled peer; and
// it holds the connection budget (Config.MaxConnectRate), whose turns it hands out from inside
// the TLS handshake once a ClientHello has arrived (clientHello), shared fairly between
// sources (fair.go).
type listener struct {
	id      string
	addr    string
	tls     *tls.Config // a clone of the broker's; with a budget, its GetConfigForClient is clientHello
	timeout time.Duration
	log     *slog.Logger

	ln     net.Listener
	ctx    context.Context // cancelled by Close: aborts handshakes in progress
	cancel context.CancelFunc

	budget        *pacer        // Config.MaxConnectRate; nil: no limit
	room          *helloRoom    // sockets waiting for their ClientHello; nil without a budget
	throttled     atomic.Uint64 // connections closed for want of a turn, or whose turn another took
	taken         atomic.Uint64 // turns taken from another source's connection (pacer.take)
	lastTakeWarn  atomic.Int64  // Unix ns of the last warning about those
	refusedEarly  atomic.Uint64 // sockets closed before their ClientHello, the room for them full
	skippedGone   atomic.Uint64 // queued connections found gone when their turn came, the turn passed on
	lastWarn      atomic.Int64  // Unix ns of the last "over budget" warning
	lastEarlyWarn atomic.Int64  // Unix ns of the last warning about refusedEarly
	admitted      admissions    // turns come (without a budget: connections accepted), per second
	expiring      atomic.Int64  // expiry timers armed and neither stopped nor fired

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

// admission is a connection's socket as its TLS handshake sees it (tls.ClientHelloInfo.Conn
// is the net.Conn given to tls.Server): it carries what the connection budget knows of the
// connection until its ClientHello has taken a turn.
type admission struct {
	net.Conn
	source netip.Addr // sourceOf the remote address; with a budget only (the zero Addr without)
	// Its places in the helloRoom, of its source and of all, while it waits there, and when
	// it came in; guarded by the room's mu.
	inRoom, inAll *list.Element
	since         time.Time
	pushedOut     atomic.Bool // another socket took its place in the helloRoom
	// Only the connection's goroutine touches these: whether its ClientHello has asked for a
	// turn and got one, and the bytes read before it asked (capped: with a budget only).
	asked, turn bool
	capped      bool
	early       int
}

// maxHelloBytes caps what a connection may send before its ClientHello is whole: crypto/tls
// would buffer a ClientHello of up to 64 KiB, and the helloRoom holds thousands of sockets.
// A ClientHello is 200 bytes to 2 KiB (a post-quantum key share included), a few more with a
// session ticket.
const maxHelloBytes = 8 << 10

// errHelloTooLong is why a connection that sent more than maxHelloBytes before a whole
// ClientHello is closed.
var errHelloTooLong = fmt.Errorf("broker: more than %d bytes before a whole TLS ClientHello", maxHelloBytes)

// Read reads from the socket, with a budget at most maxHelloBytes in all until the ClientHello
// has asked for a turn. crypto/tls reads records into a buffer of its own, so a short read costs nothing.
func (a *admission) Read(p []byte) (int, error) {
	if !a.capped || a.asked {
		return a.Conn.Read(p)
	}
	left := maxHelloBytes - a.early
	if left <= 0 {
		return 0, errHelloTooLong
	}
	if len(p) > left {
		p = p[:left]
	}
	n, err := a.Conn.Read(p)
	a.early += n
	return n, err
}

// Sizing the helloRoom: it holds helloRoomPerQueue times the queue's length (the turns within
// half a connect timeout), at least minHelloRoom. A storm's sockets are accepted faster than
// their goroutines get to read the ClientHello already in them, so the room must hold well
// more than the queue, or the fleet's own reconnections would be closed at accept.
const helloRoomPerQueue = 4

// minHelloRoom is a variable for the tests, which set it low rather than open thousands of
// sockets.
var minHelloRoom = 4096

// errNoTurn is why a handshake ends without a turn in the connection budget; the listener has
// counted it and closed the socket.
var errNoTurn = errors.New("broker: no turn in the connection budget")

// errGoneBeforeTurn is why a handshake ends when its client had left by the time its turn came;
// the listener has passed the turn on, counted it and closed the socket.
var errGoneBeforeTurn = errors.New("broker: client gone before its turn in the connection budget")

// newListener returns a listener on addr serving conf, which it clones. A positive rate is the
// connection budget, Config.MaxConnectRate.
func newListener(id, addr string, conf *tls.Config, timeout time.Duration, rate float64, log *slog.Logger) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{
		id: id, addr: addr, tls: conf.Clone(), timeout: timeout, log: log,
		ctx: ctx, cancel: cancel,
		conns:    make(map[*tls.Conn]*liveConn),
		bySerial: make(map[string]map[*tls.Conn]*liveConn),
	}
	if rate > 0 {
		l.budget = newPacer(rate)
		queue := int(rate * (timeout / 2).Seconds())
		l.room = newHelloRoom(max(minHelloRoom, helloRoomPerQueue*queue), timeout/4)
		// New refuses a Config.TLS with a GetConfigForClient of its own, so the hook is free.
		// clientHello returns nil: the handshake goes on with this very configuration.
		l.tls.GetConfigForClient = l.clientHello
	}
	return l
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
		adm := &admission{Conn: raw, capped: l.budget != nil}
		if l.budget != nil {
			adm.source = sourceOf(raw.RemoteAddr()) // only the budget counts by source
		}
		if l.room != nil && !l.enterRoom(adm) {
			raw.Close()
			continue
		}
		conn := tls.Server(adm, l.tls)
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			if l.room != nil {
				l.room.leave(adm)
			}
			raw.Close()
			return
		}
		l.conns[conn] = &liveConn{raw: raw}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handle(conn, raw, adm, establish)
	}
}

// handle runs one connection: the TLS handshake, then mochi's session until it ends.
func (l *listener) handle(conn *tls.Conn, raw net.Conn, adm *admission, establish listeners.EstablishFn) {
	defer l.wg.Done()
	defer func() {
		if l.room != nil {
			l.room.leave(adm)
		}
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
	limit := l.timeout
	if l.budget == nil {
		l.admitted.add(time.Now())
	} else {
		// The ClientHello must arrive within the timeout; its turn comes at most half a
		// timeout later, and the turn gives the rest of the handshake a whole timeout again
		// (takeTurn). The socket deadline bounds each step; this bounds them all.
		limit += l.timeout/2 + l.timeout
	}
	// The deadline covers the handshake and the CONNECT packet (with a budget, the ClientHello,
	// then from its turn the rest of the handshake and the CONNECT packet); mochi replaces it
	// with one derived from the keepalive once the client is accepted.
	if err := raw.SetDeadline(time.Now().Add(l.timeout)); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, limit)
	err := conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if errors.Is(err, errNoTurn) || adm.pushedOut.Load() {
			return // counted, and logged at most every 10 s
		}
		if errors.Is(err, errGoneBeforeTurn) {
			l.log.Debug("broker: client gone before its turn; turn passed on", "remote", remote)
			return // counted, as wasted too
		}
		if l.ctx.Err() != nil {
			return // Close cut it, waiting for its turn or in its handshake
		}
		if adm.turn {
			// A turn wasted weighs against its source when the queue is shared (pacer). Every
			// failure counts: a fleet certificate that expired too, since the broker checks the
			// chain before the client proves it holds the key, so showing one (public, and sent
			// in clear by TLS 1.2) proves nothing. (A client found gone when its turn came
			// weighs too, counted by pacer.pass: or queueing and leaving would cost nothing.)
			l.budget.waste(adm.source, time.Now())
		}
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
	cc := &clientConn{Conn: conn}
	if err := establish(l.id, cc); err != nil {
		l.log.Debug("broker: connection ended", "remote", remote, "error", err)
	}
	if adm.turn && !cc.accepted.Load() && l.ctx.Err() == nil {
		// A turn that ended in no MQTT connection (no CONNECT, or a refused one: a revoked
		// certificate, another's client id) is wasted too: a fleet certificate, stolen or
		// revoked, must not earn a host turns it does not weigh for.
		l.budget.waste(adm.source, time.Now())
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

// enterRoom counts adm, just accepted, as waiting for its ClientHello (helloRoom), and reports
// whether it may wait. A socket of another source that it pushes out is closed here.
func (l *listener) enterRoom(adm *admission) bool {
	now := time.Now()
	out, ok := l.room.enter(adm, now)
	cut := adm
	if out != nil {
		out.Conn.Close()
		cut = out
	}
	if out != nil || !ok {
		n := l.refusedEarly.Add(1)
		if warnDue(&l.lastEarlyWarn, now) {
			l.log.Warn("broker: too many connections have not sent their TLS ClientHello; closing the oldest of the source that holds the most, or old ones, or new ones",
				"waiting_at_most", l.room.max, "closed_so_far", n, "closed_source", cut.source.String(),
				"closed_remote", cut.RemoteAddr().String(), "pushed_out", out != nil, "newcomer_source", adm.source.String())
		}
	}
	return ok
}

// clientHello is the listener's tls.Config.GetConfigForClient when it has a connection budget.
// crypto/tls calls it on the connection's goroutine once it has read a whole ClientHello and
// before it answers, so only a connection that speaks TLS takes a turn: one that sends nothing,
// or bytes that are no ClientHello, never gets here, and its deadline, the TLS error or the
// helloRoom ends it. clientHello waits for the turn (takeTurn) and returns nil, so the
// handshake goes on with the listener's configuration; without a turn it closes the socket,
// so the client is left unanswered as before (no TLS alert reaches it), and returns errNoTurn.
func (l *listener) clientHello(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	adm, ok := hello.Conn.(*admission)
	if !ok {
		// Every connection is made by Serve; refuse one that is not rather than let it past
		// the budget.
		return nil, fmt.Errorf("broker: internal error: a handshake on a %T", hello.Conn)
	}
	if adm.asked {
		// crypto/tls asks once per handshake (not again for the ClientHello that follows a
		// HelloRetryRequest); were it to ask again, the connection keeps its one turn.
		return nil, nil
	}
	adm.asked = true
	if !l.room.leave(adm) {
		// Pushed out of the room. Serve closes the socket, perhaps not yet: close it here, so
		// that crypto/tls's alert for the error goes nowhere.
		adm.Conn.Close()
		return nil, errNoTurn
	}
	if err := l.takeTurn(hello.Context(), adm); err != nil {
		adm.Conn.Close()
		return nil, err
	}
	return nil, nil
}

// takeTurn takes the connection's turn in the connection budget and waits for it, for at
// most half of the connect timeout, or until ctx (the handshake's, which Close cancels) is
// done. One that would wait longer is refused at once, without a turn, so that it takes
// nothing from the connections behind it, unless the source that weighs the most weighs at
// least stealMargin more than its own: then it takes the last turn that source queued
// (pacer.take), and the connection that had it is refused when it learns so.
//
// When the turn comes, a connection whose client has left (peerGone: it closed or reset the
// socket, as a client whose connect timeout ended while it was queued does before it dials
// again) does not spend it: the turn passes to the connections queued after it (pacer.pass),
// counted in skippedGone and as a turn wasted by its source, and the connection is closed,
// so the broker does no handshake for a peer that is gone and a storm's reconnections do not
// cost the turns of the clients still there.
//
// Once the turn is spent, the socket deadline is set a whole connect timeout ahead: the
// handshake and the CONNECT packet have as long from their turn as when the turn was taken at
// accept, and a client is not made to time out for a wait that was the broker's.
func (l *listener) takeTurn(ctx context.Context, adm *admission) error {
	now := time.Now()
	t, ok := l.budget.take(adm.source, now, l.timeout/2)
	if !ok {
		l.overBudget(now)
		return errNoTurn
	}
	if t.stolen {
		n := l.taken.Add(1)
		if warnDue(&l.lastTakeWarn, now) {
			l.log.Warn("broker: connection budget full; a source that wasted turns or queued many gives its queued turns to others",
				"source", t.from.String(), "weight", t.fromWeight, "taken_so_far", n)
		}
	}
	if err := l.awaitTurn(ctx, t); err != nil {
		return err
	}
	if peerGone(adm.Conn) && l.budget.pass(t, time.Now()) {
		l.skippedGone.Add(1)
		return errGoneBeforeTurn
	}
	at, ok := l.budget.claim(t)
	if !ok {
		l.overBudget(time.Now())
		return errNoTurn
	}
	adm.turn = true
	l.admitted.add(at)
	return adm.Conn.SetDeadline(time.Now().Add(l.timeout))
}

// awaitTurn waits until t comes, or another connection takes it, or ctx is done: then it
// abandons t and returns ctx's error. t may come earlier than it was given for (pacer.pass).
func (l *listener) awaitTurn(ctx context.Context, t *turn) error {
	var timer *time.Timer
	for {
		d := l.budget.due(t, time.Now())
		if d <= 0 {
			return nil
		}
		// Queued (pacer.take queues every turn still to come), so t.taken and t.moved are set.
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		} else {
			timer.Reset(d) // since Go 1.23, no value of the timer as it was is received after
		}
		select {
		case <-timer.C:
		case <-t.moved:
		case <-t.taken:
			return nil // claim says so
		case <-ctx.Done():
			l.budget.abandon(t)
			return ctx.Err()
		}
	}
}

// overBudget counts a connection closed for want of a turn, and says so at most every 10 s.
func (l *listener) overBudget(now time.Time) {
	n := l.throttled.Add(1)
	if warnDue(&l.lastWarn, now) {
		l.log.Warn("broker: connection rate over budget; closing new connections that would wait too long, and queued ones of the sources that hold the most turns",
			"budget_per_s", l.budget.rate, "closed_so_far", n, "admitted_peak_per_s", l.admitted.peak())
	}
}

// warnDue reports whether a warning last given at *last (Unix ns) may be given again at now,
// at most every 10 s, and if so records now.
func warnDue(last *atomic.Int64, now time.Time) bool {
	prev := last.Load()
	return now.UnixNano()-prev > int64(10*time.Second) && last.CompareAndSwap(prev, now.UnixNano())
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
