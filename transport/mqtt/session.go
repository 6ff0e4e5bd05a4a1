package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/certs"
)

// session is one connection to the broker. Each has its own paho client, used for exactly one
// Connect and then discarded: paho's own reconnect logic is off (it has no jitter and no way
// to cancel it), and a paho client is not safe to reuse after Disconnect. The broker-side
// session survives because the client id and CleanSession=false stay the same.
type session struct {
	c   *Client
	b   *address // the address this session dials
	cli paho.Client

	// ctx is cancelled when the session ends; it bounds the dial, OnConnect and Publish.
	ctx    context.Context
	cancel context.CancelFunc

	lost     chan struct{} // closed by paho's connection-lost callback
	lostErr  error         // written before lost is closed
	lostOnce sync.Once

	kick chan struct{} // capacity 1: the worker asks for a reconnect after an overflow

	present bool // the CONNACK said the broker kept the session; set by connect
	resume  bool // the previous connection was up and ended on request; set by Client.Run

	// up is closed once the subscriptions are confirmed. Messages of a persistent session may
	// arrive before that; the worker holds them until up, so that a Handler can always answer
	// through Publish.
	up chan struct{}

	mu      sync.Mutex
	conn    *trackedConn // the network connection, once dialled
	aborted bool         // set by abort; no connection may be handed to paho after it

	// Guarded by Client.in.mu.
	overflowed bool // an inbound message of this session was refused by the full inbox
	dropped    int  // how many were refused
}

func newSession(c *Client, ctx context.Context, b *address) *session {
	s := &session{
		c:    c,
		b:    b,
		lost: make(chan struct{}),
		kick: make(chan struct{}, 1),
		up:   make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.WithValue(ctx, brokerKey{}, b.given))
	s.cli = paho.NewClient(c.pahoOptions(s))
	return s
}

// brokerKey is the context key under which a session's ctx holds its address as configured.
type brokerKey struct{}

// ConnectedBroker returns the broker address, as given in Config.BrokerURL or
// Config.FallbackBrokerURLs, of the connection whose OnConnect ctx is ctx; "" for any other
// ctx.
func ConnectedBroker(ctx context.Context) string {
	b, _ := ctx.Value(brokerKey{}).(string)
	return b
}

// pahoOptions configures paho for one session. See the package doc for why each is set.
func (c *Client) pahoOptions(s *session) *paho.ClientOptions {
	o := paho.NewClientOptions()
	o.Servers = []*url.URL{s.b.url}
	o.SetClientID(c.cfg.ClientID)
	o.SetCleanSession(c.cfg.CleanSession)
	// MQTT 3.1.1 only: otherwise paho retries a refused CONNECT as MQTT 3.1, a second
	// handshake that hides the first refusal.
	o.SetProtocolVersion(4)
	o.SetKeepAlive(c.cfg.KeepAlive)
	o.SetPingTimeout(c.cfg.ConnectTimeout)
	o.SetConnectTimeout(c.cfg.ConnectTimeout)
	o.SetWriteTimeout(c.cfg.ConnectTimeout)
	// Reconnection is ours (backoff with full jitter, R4); paho's would also keep a
	// connection we are trying to abandon alive.
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	// Subscriptions are re-sent by us on every connect; paho must not replay stale ones.
	o.SetResumeSubs(false)
	// Deliver in order on paho's router goroutine; our handler only enqueues, so this never
	// blocks paho. Acknowledge only when our worker has handled the message.
	o.SetOrderMatters(true)
	o.SetAutoAckDisabled(true)
	// With a persistent session the broker may send queued messages before SUBACK, before
	// any route exists: only the default handler is sure to see them. We use no routes.
	o.SetDefaultPublishHandler(s.onMessage)
	o.SetConnectionLostHandler(s.onLost)
	// We dial ourselves: a fresh TLS handshake per connection (so the certificate in the
	// Holder is the one presented), cancellation by ctx, and a handle to close on abort.
	o.SetCustomOpenConnectionFn(s.dial)
	if w := c.cfg.Will; w != nil {
		o.SetBinaryWill(w.Topic, w.Payload, w.QoS, w.Retained)
	}
	return o
}

// run connects, subscribes, and then keeps the connection until it is lost, Reconnect is
// called, an inbox overflow asks for a reconnect, or ctx is done. It returns why it ended
// and, if the connection was up, for how long.
func (s *session) run(ctx context.Context, wg *sync.WaitGroup) (endReason, time.Duration) {
	c := s.c
	defer s.cancel()
	if err := s.connect(ctx); err != nil {
		if ctx.Err() != nil {
			return endStopped, 0
		}
		c.connectFailed(s.b, err)
		return endFailed, 0
	}
	defer s.close()
	// Reconnecting on request (a certificate swap, an inbox overflow) to a session the broker
	// kept (CONNACK session present), the subscriptions of the connection just closed still
	// hold and nothing they matched was missed in the moment between: subscribing again would
	// only make the broker send every retained message again. Every other connection
	// subscribes: the first (the session may predate a change of the subscriptions), and any
	// after a loss or a failure, since a broker may drop what it queued for a session that was
	// away long (Mosquitto's max_queued_messages), and the retained state is then what the
	// client must read again.
	if !(s.resume && s.present) {
		if err := s.subscribe(ctx); err != nil {
			if ctx.Err() != nil {
				return endStopped, 0
			}
			c.connectFailed(s.b, err)
			return endFailed, 0
		}
	}

	upAt := c.cfg.Clock.Now()
	c.setUp(s)
	close(s.up)
	c.stats.connects.Add(1)
	c.log.Info("mqtt: connected", "broker", s.b.url.Host)
	if f := c.cfg.OnConnect; f != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(s.ctx)
		}()
	}

	select {
	case <-ctx.Done():
		return endStopped, 0
	case <-s.lost:
		upFor := c.cfg.Clock.Now().Sub(upAt)
		c.stats.connectionsLost.Add(1)
		c.log.Warn("mqtt: connection lost", "broker", s.b.url.Host, "err", s.lostErr, "up_for", upFor)
		return endLost, upFor
	case <-c.reconnect:
		c.log.Info("mqtt: reconnecting on request", "broker", s.b.url.Host)
		return endReconnect, c.cfg.Clock.Now().Sub(upAt)
	case <-s.kick:
		return endReconnect, c.cfg.Clock.Now().Sub(upAt)
	}
}

// connect makes the one connection attempt of this session.
func (s *session) connect(ctx context.Context) error {
	tok := s.cli.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		// Paho cannot cancel a Connect: cut the dial and the socket under it, then wait for
		// the attempt to fail so that none of its goroutines outlive Run.
		s.abort()
		<-tok.Done()
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt: connect to %s: %w", s.b.url.Host, err)
	}
	if ct, ok := tok.(*paho.ConnectToken); ok {
		s.present = ct.SessionPresent()
	}
	return nil
}

// subscribe sends every configured subscription and waits for the SUBACK.
func (s *session) subscribe(ctx context.Context) error {
	subs := s.c.cfg.Subscriptions
	if len(subs) == 0 {
		return nil
	}
	filters := make(map[string]byte, len(subs))
	for _, sub := range subs {
		filters[sub.Filter] = sub.QoS
	}
	// A nil callback adds no route, so every message goes to the default handler.
	tok := s.cli.SubscribeMultiple(filters, nil)
	timeout := time.NewTimer(s.c.cfg.ConnectTimeout)
	defer timeout.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-s.lost:
		return fmt.Errorf("mqtt: connection lost while subscribing: %w", s.lostErr)
	case <-timeout.C:
		return fmt.Errorf("mqtt: no SUBACK within %v", s.c.cfg.ConnectTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt: subscribe: %w", err)
	}
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return fmt.Errorf("mqtt: subscribe: unexpected token %T", tok)
	}
	return checkGranted(subs, st.Result(), s.c.log)
}

// checkGranted checks a SUBACK's return codes, by filter, against the subscriptions asked for:
// a filter missing, refused (0x80) or answered with anything that is not a 3.1.1 grant
// (0x00–0x02; a broker may wrongly send an MQTT 5 reason code such as 0x91) fails, unless the
// subscription is Optional, which is logged.
func checkGranted(subs []Subscription, granted map[string]byte, log *slog.Logger) error {
	for _, sub := range subs {
		q, ok := granted[sub.Filter]
		switch {
		case sub.Optional && (!ok || q > 2):
			log.Warn("mqtt: the broker refused an optional subscription; going on without it", "filter", sub.Filter, "return_code", q)
		case !ok || q == 0x80: // MQTT 3.1.1 §3.9.3: 0x80 is failure
			return fmt.Errorf("%w: %q", ErrSubscribeRefused, sub.Filter)
		case q > 2:
			return fmt.Errorf("%w: %q: return code %#x", ErrSubscribeRefused, sub.Filter, q)
		case q < sub.QoS:
			log.Warn("mqtt: broker granted a lower qos", "filter", sub.Filter, "requested", sub.QoS, "granted", q)
		}
	}
	return nil
}

// close ends a session whose Connect succeeded: it stops Publish from using it, cancels
// OnConnect, and, unless the connection is already lost, disconnects cleanly.
func (s *session) close() {
	s.c.setDown(s)
	s.cancel()
	select {
	case <-s.lost:
		return // paho has already stopped everything before calling onLost
	default:
	}
	s.cli.Disconnect(uint(disconnectQuiesce / time.Millisecond))
	// Disconnect returns after the quiesce period even when paho is still stopping (a
	// DISCONNECT that could not be written); paho then closes the socket, which ends its
	// goroutines. Wait for that close so that nothing of this session outlives Run.
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return
	}
	t := time.NewTimer(s.c.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case <-conn.closed:
	case <-t.C:
		s.c.log.Warn("mqtt: connection not closed after disconnect", "broker", s.b.url.Host)
	}
}

// abort makes an attempt in progress fail: it cancels the dial and closes the socket.
func (s *session) abort() {
	s.cancel()
	s.mu.Lock()
	s.aborted = true
	conn := s.conn
	s.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// dial is paho's CustomOpenConnectionFn: TCP plus a TLS handshake with the client
// certificate the TLS configuration serves now.
func (s *session) dial(*url.URL, paho.ClientOptions) (net.Conn, error) {
	c := s.c
	if err := c.checkIdentity(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, c.cfg.ConnectTimeout)
	defer cancel()
	d := tls.Dialer{Config: s.b.tls}
	if a := c.cfg.LocalAddr; a.IsValid() {
		d.NetDialer = &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))}
	}
	raw, err := d.DialContext(ctx, "tcp", s.b.url.Host)
	if err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			// R5: a Raspberry Pi without RTC boots with a clock years behind.
			return nil, fmt.Errorf("mqtt: dial %s: %w (is the device clock right?)", s.b.url.Host, err)
		}
		return nil, fmt.Errorf("mqtt: dial %s: %w", s.b.url.Host, err)
	}
	conn := &trackedConn{Conn: raw, closed: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		conn.Close()
		return nil, fmt.Errorf("mqtt: dial %s: %w", s.b.url.Host, context.Canceled)
	}
	s.conn = conn
	return conn, nil
}

// checkIdentity refuses to connect with a client certificate that is not the client id's.
func (c *Client) checkIdentity() error {
	var cert *tls.Certificate
	if f := c.cfg.TLS.GetClientCertificate; f != nil {
		var err error
		if cert, err = f(&tls.CertificateRequestInfo{Version: tls.VersionTLS13}); err != nil {
			return fmt.Errorf("mqtt: client certificate: %w", err)
		}
	} else if len(c.cfg.TLS.Certificates) > 0 {
		cert = &c.cfg.TLS.Certificates[0]
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return errors.New("mqtt: no client certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("mqtt: client certificate: %w", err)
		}
	}
	if id := certs.CertIdentity(leaf); !certs.ClientIDAllowed(id, c.cfg.ClientID) {
		return fmt.Errorf("%w: certificate is for %q, client id is %q", ErrIdentityMismatch, id, c.cfg.ClientID)
	}
	return nil
}

// onMessage is paho's default publish handler. It runs on paho's router goroutine and must
// never block: it only appends to the inbox.
func (s *session) onMessage(_ paho.Client, m paho.Message) {
	c := s.c
	c.stats.messagesIn.Add(1)
	e := entry{msg: m, sess: s, oversize: len(m.Payload()) > c.cfg.MaxPayload}
	if c.in.push(e) == pushOverflow {
		// Not acknowledged: the broker redelivers it after the reconnect the worker asks
		// for once it has caught up (a QoS 0 message is lost; see inbox.push). Logged there,
		// not here, to keep this path non-blocking.
		c.stats.queueDropped.Add(1)
	}
}

// onLost is paho's connection-lost handler; paho calls it on a goroutine of its own after it
// has stopped its workers.
func (s *session) onLost(_ paho.Client, err error) {
	s.lostOnce.Do(func() {
		s.lostErr = err
		close(s.lost)
	})
}

// requestReconnect asks run to end the session so that a new one starts at once.
func (s *session) requestReconnect() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// trackedConn reports when paho closes the connection.
type trackedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (t *trackedConn) Close() error {
	err := t.Conn.Close()
	t.once.Do(func() { close(t.closed) })
	return err
}
