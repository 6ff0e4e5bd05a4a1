package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Publisher publishes messages. It is what the agent needs of an MQTT client.
type Publisher interface {
	// Publish sends payload to topic; see Client.Publish.
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

var _ Publisher = (*Client)(nil)

// Client is a fleet MQTT client. Create it with New and start it with Run; its other methods
// are safe for concurrent use from any goroutine, before, during and after Run.
type Client struct {
	cfg     Config    // validated, with defaults
	brokers []address // BrokerURL, then FallbackBrokerURLs
	log     *slog.Logger

	in        *inbox
	reconnect chan struct{} // capacity 1; see Reconnect
	only      atomic.Int32  // 1 + the index in brokers DialOnly kept; 0: all of them

	state atomic.Int32 // runIdle, runRunning, runDone

	mu      sync.Mutex
	cur     *session      // the session that is up, or nil
	changed chan struct{} // closed and replaced whenever cur changes or Run ends
	done    bool          // Run has returned

	stats struct {
		connects, connectFailures, connectionsLost atomic.Uint64
		messagesIn, oversizeDropped, queueDropped  atomic.Uint64
		publishErrors                              atomic.Uint64
	}
}

const (
	runIdle int32 = iota
	runRunning
	runDone
)

// endReason is why a session ended.
type endReason int

const (
	endStopped   endReason = iota // Run's ctx is done
	endFailed                     // the connection never came up
	endLost                       // the connection came up and then dropped
	endReconnect                  // Reconnect, or an inbox overflow, ended it
)

// Stats are counters since New. They only grow.
type Stats struct {
	// Connects counts connections that came up (subscriptions confirmed).
	Connects uint64
	// ConnectFailures counts attempts that did not: network and TLS errors, refused
	// CONNACKs, refused subscriptions.
	ConnectFailures uint64
	// ConnectionsLost counts connections that dropped after coming up, not counting the ones
	// ended by Reconnect or by Run stopping.
	ConnectionsLost uint64
	// MessagesIn counts PUBLISH packets received from the broker, including dropped ones.
	MessagesIn uint64
	// OversizeDropped counts messages over Config.MaxPayload, acknowledged and discarded.
	OversizeDropped uint64
	// QueueDropped counts messages left unacknowledged because the inbox was full; the broker
	// redelivers them after the reconnect that follows, but for QoS 0 ones, which are lost
	// (and cause no reconnect).
	QueueDropped uint64
	// PublishErrors counts Publish calls that returned an error.
	PublishErrors uint64
}

// New validates cfg, applies its defaults and returns a Client that is not yet connected.
// A bad field is reported as a *ConfigError (matching ErrInvalidConfig) naming it.
func New(cfg Config) (*Client, error) {
	cfg, brokers, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{
		cfg:       cfg,
		brokers:   brokers,
		log:       cfg.Logger,
		in:        newInbox(cfg.QueueLength),
		reconnect: make(chan struct{}, 1),
		changed:   make(chan struct{}),
	}, nil
}

// Run connects to the broker and keeps reconnecting, with backoff, until ctx is done. It then
// disconnects cleanly, waits for the Handler, OnConnect and every goroutine it started, and
// returns nil. Messages still queued for the Handler at that point are not acknowledged and
// will be redelivered by the broker to the next run. Run may be called once; later calls
// return ErrClosed, concurrent ones ErrAlreadyRunning.
func (c *Client) Run(ctx context.Context) error {
	if !c.state.CompareAndSwap(runIdle, runRunning) {
		if c.state.Load() == runDone {
			return ErrClosed
		}
		return ErrAlreadyRunning
	}
	select {
	case <-c.reconnect: // the first connection uses the current certificate anyway
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		c.in.close()
		wg.Wait()
		c.mu.Lock()
		c.done = true
		c.notifyLocked()
		c.mu.Unlock()
		c.state.Store(runDone)
	}()

	wg.Add(1)
	go func() {
		defer wg.Done()
		c.work(ctx)
	}()

	bo := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff, rand: c.cfg.Rand}
	wait := false   // the first attempt does not wait
	resume := false // the last connection was up and ended on request (see session.resume)
	at := 0         // the address to dial: the one that last worked, or the next after a failure
	for {
		if only := c.only.Load(); only > 0 {
			at = int(only) - 1
		}
		if wait {
			d := bo.next(c.cfg.Clock.Now())
			c.log.Info("mqtt: next connection attempt", "broker", c.brokers[at].url.Host, "in", d)
			select {
			case <-ctx.Done():
				return nil
			case <-c.cfg.Clock.After(d):
			case <-c.reconnect:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		s := newSession(c, ctx, &c.brokers[at])
		s.resume = resume
		why, upFor := s.run(ctx, &wg)
		resume = why == endReconnect
		if upFor >= c.cfg.KeepAlive {
			bo.reset()
		}
		switch why {
		case endStopped:
			return nil
		case endFailed:
			wait = true
			at = (at + 1) % len(c.brokers)
		case endLost:
			wait = true
		case endReconnect:
			wait = false
		}
	}
}

// DialOnly makes every later connection attempt (from the next that has not yet started its
// backoff wait, which the log names) go to broker, one of Config.BrokerURL and
// Config.FallbackBrokerURLs as given, and reports whether it is one (if not, nothing
// changes). It is for a caller that learnt which address is the right one, typically in
// OnConnect (ConnectedBroker): the client then stops trying the others after a failure.
// The connection that is up, if any, is left alone.
func (c *Client) DialOnly(broker string) bool {
	for i := range c.brokers {
		if c.brokers[i].given == broker {
			c.only.Store(int32(i) + 1)
			return true
		}
	}
	return false
}

// Brokers returns the addresses later connection attempts may go to, as given: BrokerURL and
// FallbackBrokerURLs, or only the one DialOnly kept.
func (c *Client) Brokers() []string {
	if only := c.only.Load(); only > 0 {
		return []string{c.brokers[only-1].given}
	}
	out := make([]string, len(c.brokers))
	for i, b := range c.brokers {
		out[i] = b.given
	}
	return out
}

// work is the one goroutine that calls the Handler, in arrival order, and acknowledges each
// message after it. Acknowledgements of a connection that has ended are dropped by paho; the
// broker redelivers those messages on the new connection.
func (c *Client) work(ctx context.Context) {
	for {
		e, over, ok := c.in.pop(ctx)
		if !ok {
			return
		}
		if over.sess != nil {
			if over.sess.ctx.Err() != nil {
				continue // that connection has ended already; the broker redelivers anyway
			}
			c.log.Warn("mqtt: inbound queue full; reconnecting so the broker redelivers the unacknowledged messages",
				"queue_length", c.cfg.QueueLength, "unacknowledged", over.dropped)
			over.sess.requestReconnect()
			continue
		}
		if e.oversize {
			c.stats.oversizeDropped.Add(1)
			c.log.Warn("mqtt: dropped oversize message", "topic", e.msg.Topic(), "size", len(e.msg.Payload()), "max", c.cfg.MaxPayload)
			e.msg.Ack()
			continue
		}
		// A persistent session's messages can arrive before the subscriptions are confirmed:
		// hold them until the connection is up, so the Handler can answer.
		select {
		case <-e.sess.up:
		case <-e.sess.ctx.Done():
			continue // that connection ended first; the broker redelivers the message
		case <-ctx.Done():
			return
		}
		c.cfg.Handler(ctx, Message{
			Topic:     e.msg.Topic(),
			Payload:   e.msg.Payload(),
			Retained:  e.msg.Retained(),
			Duplicate: e.msg.Duplicate(),
		})
		if ctx.Err() != nil {
			return // the Handler may have been cut short: leave the message to be redelivered
		}
		e.msg.Ack()
	}
}

// connectFailed records and reports a failed attempt to b.
func (c *Client) connectFailed(b *address, err error) {
	c.stats.connectFailures.Add(1)
	c.log.Warn("mqtt: cannot connect", "broker", b.url.Host, "err", err)
	if f := c.cfg.OnConnectError; f != nil {
		f(err)
	}
}

// Publish sends payload to topic with QoS 0 or 1. With QoS 1 it returns once the broker has
// acknowledged the message (PUBACK), or with an error when ctx is done or the connection ends
// first (ErrConnectionLost: the message may or may not have arrived; publishing it again is
// safe because receivers are idempotent). With QoS 0 it returns once the message is written.
// When the client is not connected it returns ErrNotConnected at once: nothing is queued
// while offline. Publish does not take ownership of payload; it must not be modified until
// Publish returns. It may be called from the Handler and from OnConnect. While a connection
// is being torn down, handing the message to paho may take up to Config.ConnectTimeout
// regardless of ctx.
func (c *Client) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) (err error) {
	defer func() {
		if err != nil {
			c.stats.publishErrors.Add(1)
		}
	}()
	if err := validTopic(topic); err != nil {
		return err
	}
	if qos > 1 {
		return fmt.Errorf("%w %d: the fleet uses QoS 0 and 1 only", ErrInvalidQoS, qos)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mqtt: publish %s: %w", topic, err)
	}
	c.mu.Lock()
	s := c.cur
	c.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w: publish %s", ErrNotConnected, topic)
	}
	tok := s.cli.Publish(topic, qos, retained, payload)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("mqtt: publish %s: %w", topic, ctx.Err())
	case <-s.ctx.Done():
		return fmt.Errorf("%w: publish %s", ErrConnectionLost, topic)
	}
	if err := tok.Error(); err != nil {
		if errors.Is(err, paho.ErrNotConnected) {
			return fmt.Errorf("%w: publish %s", ErrNotConnected, topic)
		}
		return fmt.Errorf("mqtt: publish %s: %w", topic, err)
	}
	return nil
}

// WaitConnected returns nil as soon as the client is connected, ctx.Err() when ctx is done
// first, and ErrClosed once Run has returned.
func (c *Client) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		up, done, changed := c.cur != nil, c.done, c.changed
		c.mu.Unlock()
		switch {
		case up:
			return nil
		case done:
			return ErrClosed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Connected reports whether a connection is up, with its subscriptions confirmed.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// Reconnect drops the current connection, cleanly, and connects again at once, without
// backoff: a new TLS handshake that presents the certificate the TLS configuration serves now
// (used after a certificate hot-swap). When offline it cuts the current backoff wait short.
// When called during a connection attempt, the attempt completes and is then replaced by a new
// one, since it may have used the old certificate. It never blocks.
func (c *Client) Reconnect() {
	select {
	case c.reconnect <- struct{}{}:
	default: // one is already pending
	}
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	return Stats{
		Connects:        c.stats.connects.Load(),
		ConnectFailures: c.stats.connectFailures.Load(),
		ConnectionsLost: c.stats.connectionsLost.Load(),
		MessagesIn:      c.stats.messagesIn.Load(),
		OversizeDropped: c.stats.oversizeDropped.Load(),
		QueueDropped:    c.stats.queueDropped.Load(),
		PublishErrors:   c.stats.publishErrors.Load(),
	}
}

func (c *Client) setUp(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = s
	c.notifyLocked()
}

func (c *Client) setDown(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == s {
		c.cur = nil
		c.notifyLocked()
	}
}

// notifyLocked wakes WaitConnected callers. c.mu must be held.
func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}
