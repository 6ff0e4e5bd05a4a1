package broker

import (
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
// the TLS handshake, once a ClientHello has arrived (clientHello).
type listener struct {
	id      string
	addr    string
	tls     *tls.Config // a clone of the broker's; with a budget, its GetConfigForClient is clientHello
	timeout time.Duration
	log     *slog.Logger

	ln     net.Listener
	ctx    context.Context // cancelled by Close: aborts handshakes in progress
	cancel context.CancelFunc

	budget         *pacer      // Config.MaxConnectRate; nil: no limit
	sources        *failScores // failed handshakes per source; nil without a budget
	maxWaiting     int         // per source: connections before their ClientHello (sourceCounts)
	maxAllWaiting  int         // all sources together: the same
	maxHolding     int         // per source: turns held before any is free at once only
	srcMu          sync.Mutex  // guards counts and allWaiting
	counts         map[netip.Addr]*sourceCounts
	allWaiting     int
	refusedEarly   atomic.Uint64 // connections closed at accept over maxWaiting or maxAllWaiting
	lastEarlyWarn  atomic.Int64  // Unix ns of the last warning about those
	throttled      atomic.Uint64 // connections closed because their turn would come too late
	deprioritized  atomic.Uint64 // connections of suspect sources closed for want of a free turn
	lastWarn       atomic.Int64  // Unix ns of the last "over budget" warning
	lastDeprioWarn atomic.Int64  // Unix ns of the last warning about suspect sources refused
	lastFullWarn   atomic.Int64  // Unix ns of the last warning that a failure went unscored
	admitted       admissions    // turns taken (without a budget: connections accepted), per second
	expiring       atomic.Int64  // expiry timers armed and neither stopped nor fired

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
// is the net.Conn given to tls.Server): it carries what the connection budget learns of the
// connection between its ClientHello and the end of its handshake. Only the connection's own
// goroutine touches its fields.
type admission struct {
	net.Conn
	source netip.Addr // sourceOf the remote address; the zero Addr is never scored
	asked  bool       // a ClientHello arrived and asked for a turn
	turn   bool       // it got one
	// waiting: counted in its source's connections before their ClientHello; holding:
	// counted in its source's turns taken and not yet ended by a finished handshake
	// (sourceCounts).
	waiting, holding bool
}

// sourceCounts is what the connection budget counts of one source's live connections.
type sourceCounts struct {
	// waiting are the connections accepted whose ClientHello is not yet read; admitWaiting
	// may close one to make room for another source's.
	waiting map[*admission]struct{}
	holding int // with a turn (coming or come) and a handshake not yet finished
}

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
		l.sources = newFailScores(maxSources)
		l.counts = make(map[netip.Addr]*sourceCounts)
		// The queue holds at most this many turns: those within half a timeout.
		queue := int(rate * (timeout / 2).Seconds())
		l.maxHolding = max(minHolding, queue/holdingShare)
		l.maxWaiting = max(minWaiting, queue)
		l.maxAllWaiting = max(minAllWaiting, allWaitingPerQueue*queue)
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
		adm := &admission{Conn: raw, source: sourceOf(raw.RemoteAddr())}
		if l.budget != nil && !l.admitWaiting(adm) {
			raw.Close()
			continue
		}
		conn := tls.Server(adm, l.tls)
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			l.release(adm)
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
		l.release(adm)
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
	if l.budget != nil {
		l.release(adm) // the handshake is over: its turn is no longer held
	}
	if err != nil {
		if errors.Is(err, errNoTurn) {
			return // counted and logged by takeTurn
		}
		// Every failure after a turn counts, a fleet certificate that expired too: the
		// broker checks the chain before the client proves it holds the key, so showing an
		// expired certificate (public, and sent in clear by TLS 1.2) proves nothing. A
		// camera whose certificate expired tries it three times before its bootstrap
		// identity (agent), well under suspectAbove.
		if adm.turn && l.ctx.Err() == nil {
			l.failed(adm.source)
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

// clientHello is the listener's tls.Config.GetConfigForClient when it has a connection budget.
// crypto/tls calls it on the connection's goroutine once it has read a whole ClientHello and
// before it answers, so only a connection that speaks TLS takes a turn: one that sends nothing,
// or bytes that are no ClientHello, never gets here, and its deadline or the TLS error ends
// it. clientHello waits for the turn (takeTurn) and returns nil, so the handshake goes on with
// the listener's configuration; without a turn it closes the socket, so the client is left
// unanswered as before (no TLS alert reaches it), and returns errNoTurn.
func (l *listener) clientHello(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	adm, ok := hello.Conn.(*admission)
	if !ok {
		// Every connection is made by Serve; refuse one that is not rather than let it
		// past the budget.
		return nil, fmt.Errorf("broker: internal error: a handshake on a %T", hello.Conn)
	}
	if adm.asked {
		// crypto/tls asks once per handshake (not again for the ClientHello that follows a
		// HelloRetryRequest); were it to ask again, the connection keeps its one turn.
		return nil, nil
	}
	adm.asked = true
	l.helloArrived(adm)
	if err := l.takeTurn(hello.Context(), adm); err != nil {
		adm.Conn.Close()
		return nil, err
	}
	return nil, nil
}

// takeTurn takes the connection's turn in the connection budget and waits for it, for at
// most half of the connect timeout, or until ctx (the handshake's, which Close cancels) is
// done. One that would wait longer is refused at once, without a turn, so that it takes
// nothing from the connections behind it. A connection from a suspect source (failScores)
// waits for no turn: it takes one only if one is free at once, and is refused otherwise.
//
// Once the turn has come, the socket deadline is set a whole connect timeout ahead: the
// handshake and the CONNECT packet have as long from their turn as before it was taken
// inside the handshake, and a client is not made to time out, and counted as failing, for a
// wait that was the broker's.
func (l *listener) takeTurn(ctx context.Context, adm *admission) error {
	now := time.Now()
	wait := l.timeout / 2
	// A source that keeps failing handshakes, or that holds its share of the turns already,
	// waits for no turn: it takes one only if one is free at once. The turn is held from now (hold), so that many ClientHellos at once
	// from one source cannot all pass before any is counted.
	under := l.hold(adm)
	suspect := l.sources.suspect(adm.source, l.now())
	if !under || suspect {
		wait = 0
	}
	at, ok := l.budget.turn(now, wait)
	if !ok {
		l.release(adm)
		if suspect {
			l.refusedSuspect(adm.source, now)
			return errNoTurn
		}
		n := l.throttled.Add(1)
		if warnDue(&l.lastWarn, now) {
			l.log.Warn("broker: connection rate over budget; closing new connections that would wait too long, or whose source holds its share of the turns already",
				"budget_per_s", l.budget.rate, "closed_so_far", n, "admitted_peak_per_s", l.admitted.peak(), "share_per_source", l.maxHolding)
		}
		return errNoTurn
	}
	adm.turn = true
	l.admitted.add(at)
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return adm.Conn.SetDeadline(time.Now().Add(l.timeout))
}

// refusedSuspect counts a connection from the suspect source src closed for want of a free
// turn, and says so at most every 10 s.
func (l *listener) refusedSuspect(src netip.Addr, now time.Time) {
	n := l.deprioritized.Add(1)
	if warnDue(&l.lastDeprioWarn, now) {
		sources, suspects, _ := l.sources.stats(l.now())
		l.log.Warn("broker: connection rate over budget; closing new connections from sources that keep failing TLS handshakes, which get only free turns",
			"budget_per_s", l.budget.rate, "closed_so_far", n, "source", sourceString(src),
			"suspect_sources", suspects, "scored_sources", sources)
	}
}

// failed counts a failed handshake of a connection that had taken a turn against its source.
func (l *listener) failed(src netip.Addr) {
	became, scored := l.sources.fail(src, l.now())
	switch {
	case became:
		l.log.Warn("broker: a source keeps failing TLS handshakes; while the connection budget is contended it gets no turn",
			"source", sourceString(src), "failures_over", suspectAbove, "leak_per_minute", leakPerSecond*60)
	case !scored && src.IsValid() && warnDue(&l.lastFullWarn, time.Now()):
		_, _, unscored := l.sources.stats(l.now())
		l.log.Warn("broker: too many sources failing TLS handshakes to score them all; the new ones are not scored",
			"max_sources", maxSources, "unscored_so_far", unscored)
	}
}

// admitWaiting counts adm, a connection just accepted, among those waiting for their
// ClientHello, and reports whether there is room for it: at most maxWaiting from its source and
// maxAllWaiting in all. A socket that sends nothing takes no turn, but it takes a goroutine and
// a file descriptor until its timeout, so one host cannot hold more than its share of them.
// One over its source's share is closed at once. When all sources together hold
// maxAllWaiting, room is made by closing a waiting socket of the source that holds the most,
// if that is more than adm's source holds after adm: a few hosts filling the room cannot
// lock every other source out, they only crowd each other.
func (l *listener) admitWaiting(adm *admission) bool {
	l.srcMu.Lock()
	c := l.counts[adm.source]
	mine := 0
	if c != nil {
		mine = len(c.waiting)
	}
	full := mine >= l.maxWaiting
	var victim *admission
	var victimSource netip.Addr
	if !full && l.allWaiting >= l.maxAllWaiting {
		var heavy *sourceCounts
		for src, hc := range l.counts {
			if src != adm.source && (heavy == nil || len(hc.waiting) > len(heavy.waiting)) {
				heavy, victimSource = hc, src
			}
		}
		if heavy != nil && len(heavy.waiting) > mine+1 {
			for v := range heavy.waiting {
				victim = v
				break
			}
			l.unwaitLocked(victim)
		} else {
			full = true
		}
	}
	if !full {
		if c == nil {
			c = &sourceCounts{}
			l.counts[adm.source] = c
		}
		if c.waiting == nil {
			c.waiting = make(map[*admission]struct{})
		}
		c.waiting[adm] = struct{}{}
		l.allWaiting++
		adm.waiting = true
	}
	l.srcMu.Unlock()
	closed, from := adm, adm.source
	if victim != nil {
		victim.Conn.Close() // its handshake fails, unscored: it took no turn
		closed, from = victim, victimSource
	} else if !full {
		return true
	}
	n := l.refusedEarly.Add(1)
	if now := time.Now(); warnDue(&l.lastEarlyWarn, now) {
		l.log.Warn("broker: too many connections waiting to send their TLS ClientHello; closing one at once",
			"source", sourceString(from), "per_source", l.maxWaiting, "in_all", l.maxAllWaiting, "closed_so_far", n, "made_room", closed != adm)
	}
	return !full
}

// helloArrived counts adm out of the connections waiting for their ClientHello.
func (l *listener) helloArrived(adm *admission) {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	l.unwaitLocked(adm)
}

func (l *listener) unwaitLocked(adm *admission) {
	if !adm.waiting {
		return
	}
	adm.waiting = false
	l.allWaiting--
	if c := l.counts[adm.source]; c != nil {
		delete(c.waiting, adm)
		l.forgetLocked(adm.source, c)
	}
}

// hold counts a turn adm is about to take against its source, and reports whether the source
// held fewer than maxHolding before. It counts it either way: release undoes it.
func (l *listener) hold(adm *admission) bool {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	c := l.counts[adm.source]
	if c == nil {
		c = &sourceCounts{}
		l.counts[adm.source] = c
	}
	under := c.holding < l.maxHolding
	c.holding++
	adm.holding = true
	return under
}

// release takes adm out of every count it is in; it may be called more than once.
func (l *listener) release(adm *admission) {
	if l.budget == nil {
		return
	}
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	l.unwaitLocked(adm)
	if !adm.holding {
		return
	}
	adm.holding = false
	if c := l.counts[adm.source]; c != nil {
		c.holding--
		l.forgetLocked(adm.source, c)
	}
}

// forgetLocked drops src's counts once they are both zero.
func (l *listener) forgetLocked(src netip.Addr, c *sourceCounts) {
	if len(c.waiting) == 0 && c.holding == 0 {
		delete(l.counts, src)
	}
}

// warnDue reports whether a warning last said at *last (Unix ns) may be said again at now, at
// most every 10 s, and if so records now.
func warnDue(last *atomic.Int64, now time.Time) bool {
	prev := last.Load()
	return now.UnixNano()-prev > int64(10*time.Second) && last.CompareAndSwap(prev, now.UnixNano())
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
