package fleet

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// DefaultCommandTTL is how long a command stays valid when the caller does not say.
const DefaultCommandTTL = 5 * time.Minute

// Operator is an operator's live MQTT session: it sends signed commands and collects device
// replies. Close it when done.
type Operator struct {
	f      *Fleet
	client *mqtt.Client
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan error

	closeOnce sync.Once
	closeErr  error

	onMessage func(topic string, payload []byte)
	syncTopic string
	guard     *BrokerGuard

	mu      sync.Mutex
	waiters map[uint64]waiter
	syncs   map[string]chan struct{}
}

// OperatorOptions configures Dial.
type OperatorOptions struct {
	// Broker overrides the fleet's broker URL; "" uses fleet.json's.
	Broker string
	// Logger receives the session's logs; nil discards them.
	Logger *slog.Logger
	// Subscriptions are topic filters to subscribe to besides the devices' replies, at QoS 0
	// (retained state is re-read on every connect, and QoS 0 keeps it in order with Sync).
	// Their messages, retained ones included, go to OnMessage.
	Subscriptions []string
	// OnMessage receives the messages of Subscriptions, one at a time, in arrival order, on
	// the session's delivery goroutine; an empty payload is a cleared retained message. It must
	// not keep payload. Required when Subscriptions is set.
	OnMessage func(topic string, payload []byte)
}

// operatorQueueLength is how many inbound messages may wait for the session's handler: a
// fleet's worth of retained device state arrives at once.
const operatorQueueLength = 1 << 16

// ClientID returns a unique MQTT client ID for one session of identity: the identity, "~" and
// 8 random hex digits. Several sessions of one operator identity can then coexist; the brokers
// bind non-device client IDs to the identity prefix (docs/protocol.md).
func ClientID(identity string) string {
	var b [4]byte
	rand.Read(b[:])
	return identity + "~" + hex.EncodeToString(b[:])
}

// Dial connects to the broker as the fleet's operator and waits until connected or ctx ends.
func (f *Fleet) Dial(ctx context.Context, o OperatorOptions) (*Operator, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	broker := o.Broker
	if broker == "" {
		broker = f.Meta.Broker
	}
	host, err := certs.BrokerHost(broker)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	cert, err := f.OperatorCertificate()
	if err != nil {
		return nil, err
	}
	if len(o.Subscriptions) > 0 && o.OnMessage == nil {
		return nil, fmt.Errorf("fleet: OperatorOptions.OnMessage is required with Subscriptions")
	}
	clientID := ClientID(certs.CertIdentity(cert.Leaf))
	holder := certs.NewHolder(cert)
	tlsConf := certs.ClientTLSConfig(f.Pool, host, holder)
	// A reconnection presents the certificate the fleet directory holds then (fleetctl
	// replace operator while a status --wait runs).
	tlsConf.GetClientCertificate = LoadAtHandshake(holder, f.OperatorCertificate, o.Logger)
	// The operator refuses a broker certificate the key set in force retired, as devices do,
	// and remembers the one it accepted, which a key set about to be published is checked
	// against (CheckKeySet).
	guard := f.NewBrokerGuard()
	tlsConf.VerifyConnection = guard.VerifyConnection
	op := &Operator{
		f: f, log: o.Logger, done: make(chan error, 1), onMessage: o.OnMessage, guard: guard,
		// The sync topic is private to this session: under fleet/ (which the operator may
		// use) but outside fleet/down/, so no device ever receives it.
		syncTopic: "fleet/sync/" + certs.ClientIDSession(clientID),
		waiters:   map[uint64]waiter{},
		syncs:     map[string]chan struct{}{},
	}
	subs := []mqtt.Subscription{{Filter: "dev/+/up/reply", QoS: 1}, {Filter: op.syncTopic, QoS: 0}}
	for _, s := range o.Subscriptions {
		subs = append(subs, mqtt.Subscription{Filter: s, QoS: 0})
	}
	// Why the last attempt failed, for the error when no attempt succeeds in time: an
	// operator must hear "nothing listens there", not only that the wait ran out.
	var lastMu sync.Mutex
	var last error
	client, err := mqtt.New(mqtt.Config{
		BrokerURL:     broker,
		ClientID:      clientID,
		TLS:           tlsConf,
		CleanSession:  true,
		Subscriptions: subs,
		Handler:       op.handle,
		QueueLength:   operatorQueueLength,
		MinBackoff:    100 * time.Millisecond,
		MaxBackoff:    2 * time.Second,
		Logger:        o.Logger,
		OnConnectError: func(err error) {
			lastMu.Lock()
			last = err
			lastMu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	op.client = client
	runCtx, cancel := context.WithCancel(context.Background())
	op.cancel = cancel
	// A retired broker certificate is no failure to wait out: it fails the dial at once.
	wctx, stopWait := context.WithCancelCause(ctx)
	defer stopWait(nil)
	guard.setOnRefuse(stopWait)
	go func() { op.done <- client.Run(runCtx) }()
	err = client.WaitConnected(wctx)
	guard.setOnRefuse(nil)
	if err != nil {
		op.Close()
		if cause := context.Cause(wctx); errors.Is(cause, certs.ErrRetiredBroker) {
			return nil, fmt.Errorf("fleet: connect to %s: %w", broker, cause)
		}
		lastMu.Lock()
		defer lastMu.Unlock()
		if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("fleet: cannot connect to %s (%w): %s", broker, err, f.explainConnectError(last))
		}
		return nil, fmt.Errorf("fleet: connect to %s: %w", broker, err)
	}
	return op, nil
}

// explainConnectError says, for an operator, why no connection to the broker came up: last
// is the reason of the last failed attempt, nil when none failed yet (no answer at all).
func (f *Fleet) explainConnectError(last error) string {
	if last == nil {
		return "the broker did not answer: check that it runs and that the broker URL (--broker, or fleet.json's) names it; a firewall may drop the connection"
	}
	// paho flattens the errors it wraps: the standard ones are recognised by their text too.
	msg := last.Error()
	switch {
	case errors.Is(last, syscall.ECONNREFUSED) || strings.Contains(msg, "connection refused"):
		return fmt.Sprintf("nothing accepts connections there: start the broker (fleetctl broker --dir %s, or Mosquitto) or check the broker URL (--broker, or fleet.json's); last attempt: %v", f.Dir, last)
	case strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Sprintf("the broker there presents a certificate from another CA than this fleet's (%s): --dir names another fleet than the broker serves, or --broker another fleet's broker; last attempt: %v", f.Dir, last)
	case strings.Contains(msg, "no such host"):
		return fmt.Sprintf("the broker's host name does not resolve: check the broker URL (--broker, or fleet.json's); last attempt: %v", last)
	case strings.Contains(msg, "not Authorized"), strings.Contains(msg, "bad certificate"),
		strings.Contains(msg, "certificate revoked"), strings.Contains(msg, "expired certificate"):
		return fmt.Sprintf("the broker refuses this fleet directory's operator certificate: revoked since (fleetctl replace operator ran on another copy of the fleet directory: copy its operator/ here), or expired (fleetctl check --dir %s shows when it expires); last attempt: %v", f.Dir, last)
	}
	return "last attempt: " + msg
}

// BrokerCertificate returns the certificate the broker presented in the session's last
// accepted handshake; nil before one.
func (o *Operator) BrokerCertificate() *x509.Certificate { return o.guard.Presented() }

// CheckKeySet returns an error wrapping certs.ErrRetiredBroker when ks retires the
// certificate the broker of this session presented (BrokerGuard.Check): publishing it would
// cut the fleet off that broker. PublishDesired and PublishKeySet call it before they publish.
func (o *Operator) CheckKeySet(ks *certs.KeySet) error { return o.guard.Check(ks) }

// Close ends the session and waits for it. It is idempotent.
func (o *Operator) Close() error {
	o.closeOnce.Do(func() {
		o.cancel()
		o.closeErr = <-o.done
	})
	return o.closeErr
}

// Client returns the underlying MQTT client, for publishing desired state.
func (o *Operator) Client() *mqtt.Client { return o.client }

func (o *Operator) handle(_ context.Context, m mqtt.Message) {
	if m.Topic == o.syncTopic {
		o.mu.Lock()
		ch := o.syncs[string(m.Payload)]
		delete(o.syncs, string(m.Payload))
		o.mu.Unlock()
		if ch != nil {
			close(ch)
		}
		return
	}
	id, dir, leaf, ok := topic.Parse(m.Topic)
	if !ok || dir != topic.Up || leaf != topic.LeafReply {
		if o.onMessage != nil {
			o.onMessage(m.Topic, m.Payload)
		}
		return
	}
	var r wire.Reply
	if err := wire.Decode(m.Payload, &r); err != nil {
		o.log.Warn("malformed reply", "device", id, "err", err)
		return
	}
	o.mu.Lock()
	w, ok := o.waiters[r.Seq]
	if ok && w.device != id {
		// Another device's reply with the sequence of a command to w.device: every device
		// may publish replies on its own topic, so it answers for no one else.
		o.mu.Unlock()
		o.log.Warn("reply from a device the command was not sent to", "device", id, "seq", r.Seq, "target", w.device)
		return
	}
	delete(o.waiters, r.Seq)
	o.mu.Unlock()
	if ok {
		w.ch <- &r
	}
}

// waiter is a command waiting for its reply: from device, on ch.
type waiter struct {
	device string
	ch     chan *wire.Reply
}

// Command signs and sends one command to target and, for a single device, waits for its reply.
// It returns the reply and the time from publish to reply.
func (o *Operator) Command(ctx context.Context, typ, target string, args json.RawMessage) (*wire.Reply, time.Duration, error) {
	env, seq, err := o.f.SignCommand(typ, target, args, time.Now(), DefaultCommandTTL)
	if err != nil {
		return nil, 0, err
	}
	ch := make(chan *wire.Reply, 1)
	o.mu.Lock()
	o.waiters[seq] = waiter{device: target, ch: ch}
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		delete(o.waiters, seq)
		o.mu.Unlock()
	}()
	start := time.Now()
	if target == certs.TargetFleet {
		if err := o.publishFleet(ctx, topic.Shards(), topic.FleetCmd, false, env); err != nil {
			return nil, 0, fmt.Errorf("fleet: send %s: %w", typ, err)
		}
		return nil, time.Since(start), nil
	}
	if err := o.client.Publish(ctx, topic.DeviceCmd(target), 1, false, env); err != nil {
		return nil, 0, fmt.Errorf("fleet: send %s: %w", typ, err)
	}
	select {
	case r := <-ch:
		return r, time.Since(start), nil
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("fleet: no reply from %s to %s (seq %d): %w", target, typ, seq, ctx.Err())
	}
}

// Ping sends a signed ping to device and returns its status reply and the round-trip time.
func (o *Operator) Ping(ctx context.Context, device string) (*wire.Reply, time.Duration, error) {
	if err := certs.ValidDeviceID(device); err != nil {
		return nil, 0, err
	}
	r, rtt, err := o.Command(ctx, "ping", device, nil)
	if err != nil {
		return nil, 0, err
	}
	if !r.OK {
		return r, rtt, fmt.Errorf("fleet: %s answered ping with error %q", device, r.Error)
	}
	return r, rtt, nil
}

// Sync returns once every message the broker had for this session's subscriptions when Sync
// was called has been handed to OnMessage — in particular every retained message sent when
// the session subscribed. It publishes a nonce on the session's private sync topic and waits
// for it to come back: both brokers send a subscription's retained messages before they
// process the client's next packet, and deliver one session's QoS 0 messages in order.
func (o *Operator) Sync(ctx context.Context) error {
	var b [8]byte
	rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	ch := make(chan struct{})
	o.mu.Lock()
	o.syncs[nonce] = ch
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		delete(o.syncs, nonce)
		o.mu.Unlock()
	}()
	for {
		err := o.client.Publish(ctx, o.syncTopic, 1, false, []byte(nonce))
		if err == nil {
			break
		}
		if ctx.Err() != nil || !(errors.Is(err, mqtt.ErrNotConnected) || errors.Is(err, mqtt.ErrConnectionLost)) {
			return fmt.Errorf("fleet: sync: %w", err)
		}
		if err := o.client.WaitConnected(ctx); err != nil {
			return fmt.Errorf("fleet: sync: %w", err)
		}
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fleet: sync: %w", ctx.Err())
	}
}

// ClearDevice deletes the retained messages the fleet keeps about device: its state
// (dev/<id>/up/state) and its own desired state (dev/<id>/down/desired), by publishing them
// empty and retained. For a device that left the fleet (RetireDevices).
func (o *Operator) ClearDevice(ctx context.Context, device string) error {
	if err := certs.ValidDeviceID(device); err != nil {
		return fmt.Errorf("fleet: clear device: %w", err)
	}
	for _, t := range []string{topic.State(device), topic.DeviceDesired(device)} {
		if err := o.client.Publish(ctx, t, 1, true, nil); err != nil {
			return fmt.Errorf("fleet: clear %s: %w", t, err)
		}
	}
	return nil
}

// PublishKeySet publishes the key set in force in this fleet directory, as the root signed
// it, retained, QoS 1, on topic.FleetKeySet, where viewer relays with an identity of their own
// learn it (they accept only a set their bundle's root signed, newer than theirs).
//
// It refuses, publishing nothing, a key set that retires the certificate of the broker it is
// connected to (CheckKeySet).
func (o *Operator) PublishKeySet(ctx context.Context) error {
	if err := o.CheckKeySet(o.f.KeySet()); err != nil {
		return err
	}
	if err := o.client.Publish(ctx, topic.FleetKeySet, 1, true, o.f.KeySetBytes()); err != nil {
		return fmt.Errorf("fleet: publish key set v%d on %s: %w", o.f.KeySet().Version, topic.FleetKeySet, err)
	}
	return nil
}

// PublishDesired signs d (SignDesired) and publishes it retained, QoS 1, on the target's
// desired-state topic: for certs.TargetFleet fleet/down/<shard>/desired on every shard (an
// error that reached only some is a *PartialError), else dev/<id>/down/desired.
// It sets d.Version from NextSeq and d.IssuedAt from now, and returns the document as signed.
// Every document carries a key set (SignDesired): one that retires the certificate of the
// broker it is connected to is refused, and nothing published (CheckKeySet).
func (o *Operator) PublishDesired(ctx context.Context, d certs.Desired, now time.Time) (*certs.Desired, error) {
	carried := o.f.KeySet()
	if len(d.KeySet) > 0 {
		ks, err := certs.OpenKeySet(o.f.root, d.KeySet)
		if err != nil {
			return nil, fmt.Errorf("fleet: desired state key set: %w", err)
		}
		carried = ks
	}
	if err := o.CheckKeySet(carried); err != nil {
		return nil, err
	}
	if d.Target != certs.TargetFleet {
		if err := certs.ValidDeviceID(d.Target); err != nil {
			return nil, fmt.Errorf("fleet: desired state: %w", err)
		}
	}
	seq, err := o.f.NextSeq(now)
	if err != nil {
		return nil, err
	}
	d.Version, d.IssuedAt = seq, now.Unix()
	b, err := o.f.SignDesired(d)
	if err != nil {
		return nil, err
	}
	if d.Target == certs.TargetFleet {
		if err := o.publishFleet(ctx, topic.Shards(), topic.FleetDesired, true, b); err != nil {
			return nil, fmt.Errorf("fleet: publish fleet-wide desired state (version %d): %w", d.Version, err)
		}
		return &d, nil
	}
	t := topic.DeviceDesired(d.Target)
	if err := o.client.Publish(ctx, t, 1, true, b); err != nil {
		return nil, fmt.Errorf("fleet: publish desired state on %s: %w", t, err)
	}
	return &d, nil
}

// RepublishFleetDesired publishes a fleet-wide desired-state document as signed before (raw),
// retained, on the given shards: it completes a publication that reached only some of them
// (status.Collector.FleetShardsBehind names the others). An error that reached only some of
// them is a *PartialError.
func (o *Operator) RepublishFleetDesired(ctx context.Context, raw []byte, shards []string) error {
	if err := o.publishFleet(ctx, shards, topic.FleetDesired, true, raw); err != nil {
		return fmt.Errorf("fleet: publish fleet-wide desired state again: %w", err)
	}
	return nil
}

// PartialError says that the broker acknowledged a fleet-wide message on only some shards: the
// devices of the others may not have it. Publishing it again is harmless — devices take each
// version, and each command sequence, once — and reaches them.
type PartialError struct {
	Published, Shards int   // acknowledged, of the shards it was published on
	Err               error // the first shard's error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("the broker acknowledged it on %d of %d shards, so the devices of the others may not have it (run the same command again to reach them): %v", e.Published, e.Shards, e.Err)
}

func (e *PartialError) Unwrap() error { return e.Err }

// publishFleet publishes payload, QoS 1, on build(shard) for each of shards, all at once; if
// the broker did not acknowledge them all, it returns a *PartialError saying how many it did.
func (o *Operator) publishFleet(ctx context.Context, shards []string, build func(shard string) string, retained bool, payload []byte) error {
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Go(func() { errs[i] = o.client.Publish(ctx, build(s), 1, retained, payload) })
	}
	wg.Wait()
	var first error
	published := 0
	for i, err := range errs {
		if err == nil {
			published++
		} else if first == nil {
			first = fmt.Errorf("%s: %w", build(shards[i]), err)
		}
	}
	if first != nil {
		return &PartialError{Published: published, Shards: len(shards), Err: first}
	}
	return nil
}
