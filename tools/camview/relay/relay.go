package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// signalUpFilter subscribes to what every camera sends viewers: dev/+/up/signal. The broker's
// ACL gives a viewer identity read access to exactly these topics and write access to
// dev/+/down/signal.
const signalUpFilter = "dev/+/" + topic.Up + "/" + topic.LeafSignal

// candidateBuffer is how many trickled camera candidates wait for a session's reader before
// later ones are dropped (and logged). A camera gathers a handful.
const candidateBuffer = 32

// byeTimeout bounds the Bye sent on a viewer's behalf when its offer timed out.
const byeTimeout = 2 * time.Second

// Config configures a Relay. Every field but Logger is required.
type Config struct {
	// BrokerURL is the fleet's broker, mqtts://host:port.
	BrokerURL string
	// TLS is the client TLS configuration with the viewer certificate, normally
	// certs.ClientTLSConfig over the fleet CA pool.
	TLS *tls.Config
	// ClientID is the MQTT client id: the viewer identity viewer:<name>, optionally with a
	// "~suffix" (fleet.ClientID("viewer:web")) so several relays of one identity can coexist.
	// Another role's identity is refused: a relay carries signaling only.
	ClientID string
	// Logger receives connection events and per-session signaling events (session, device,
	// message type; never SDP, candidates or grants). Nil discards them.
	Logger *slog.Logger
	// OnKeySet, if set, makes the relay also read topic.FleetKeySet and receives each
	// non-empty message there: a key set signed by the fleet's root, as published, unchecked.
	// It returns the key set it took, or nil when it took none (not newer than the one held,
	// or refused); a set taken becomes BrokerFloor's. It runs on the MQTT client's delivery
	// goroutine, so it must not block for long. Nil: the relay does not read key sets.
	OnKeySet func(signed []byte) *certs.KeySet
	// BrokerFloor, if not nil, refuses in the TLS handshake a broker certificate that the key
	// set the relay holds retired (certs.KeySet.BrokerNotBefore): Dial chains its
	// VerifyConnection after TLS's own, on a clone of TLS. The caller sets it to the key set
	// held before Dial; each set OnKeySet takes replaces it, and when that set retires the
	// certificate of the broker the relay is connected to, the relay logs a warning and
	// connects again, with backoff, until a broker presents a certificate the set accepts.
	// Nil: the fleet CA alone decides which brokers the relay trusts.
	BrokerFloor *certs.BrokerFloor
}

// Relay is one MQTT session carrying the signaling of many viewer sessions. Its methods are
// safe for concurrent use. Close it when done.
type Relay struct {
	c      *mqtt.Client
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan error    // Run's result
	closed chan struct{} // closed by Close

	closeOnce sync.Once
	closeErr  error

	onKeySet func([]byte) *certs.KeySet
	floor    *certs.BrokerFloor // nil: none

	mu       sync.Mutex
	sessions map[string]*entry
}

// entry is one live session: offered, perhaps answered, not yet hung up or forgotten.
type entry struct {
	device    string
	key       string            // the offer's signal.Offer.Key, for the viewer's later messages
	answerKey *signal.AnswerKey // opens the camera's sealed answer
	reply     chan any          // capacity 1: the opened Answer, the Refusal, an early Bye, or an error
	replied   bool              // reply has been sent (guarded by Relay.mu)
	ended     chan signal.Bye   // capacity 1: the camera's Bye
	cands     chan signal.ICECandidate
}

// Dial connects to the broker and returns once connected, or with an error when ctx ends
// first (naming the last connection error) or cfg is invalid. The session reconnects by
// itself until Close.
func Dial(ctx context.Context, cfg Config) (*Relay, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	role, _, err := certs.ParseIdentity(certs.ClientIDIdentity(cfg.ClientID))
	switch {
	case cfg.ClientID == "":
		return nil, errors.New("relay: Config.ClientID is required")
	case err != nil:
		return nil, fmt.Errorf("relay: Config.ClientID: %w", err)
	case role != certs.RoleViewer:
		return nil, fmt.Errorf("relay: Config.ClientID %q is not a viewer identity", cfg.ClientID)
	case cfg.TLS == nil:
		return nil, errors.New("relay: Config.TLS is required")
	}
	r := &Relay{
		log:      cfg.Logger,
		done:     make(chan error, 1),
		closed:   make(chan struct{}),
		sessions: map[string]*entry{},
		onKeySet: cfg.OnKeySet,
		floor:    cfg.BrokerFloor,
	}
	tlsConf := cfg.TLS
	if floor := cfg.BrokerFloor; floor != nil {
		tlsConf = cfg.TLS.Clone()
		verify := tlsConf.VerifyConnection
		tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			return floor.VerifyConnection(cs)
		}
	}
	subs := []mqtt.Subscription{{Filter: signalUpFilter, QoS: 0}}
	if cfg.OnKeySet != nil {
		// Retained: the broker sends the set in force at every subscription. Optional: a
		// broker whose ACL predates the topic must not keep the relay from carrying video.
		subs = append(subs, mqtt.Subscription{Filter: topic.FleetKeySet, QoS: 1, Optional: true})
	}
	var lastMu sync.Mutex
	var last error
	c, err := mqtt.New(mqtt.Config{
		BrokerURL: cfg.BrokerURL,
		ClientID:  cfg.ClientID,
		TLS:       tlsConf,
		// A clean session: nothing is queued for the relay while it is away (P2b).
		CleanSession:  true,
		Subscriptions: subs,
		Handler:       r.handle,
		MaxPayload:    max(signal.MaxMessageSize, certs.MaxKeySetSize),
		MinBackoff:    100 * time.Millisecond,
		MaxBackoff:    5 * time.Second,
		Logger:        cfg.Logger,
		OnConnectError: func(err error) {
			lastMu.Lock()
			last = err
			lastMu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	r.c = c
	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- c.Run(runCtx) }()
	if err := c.WaitConnected(ctx); err != nil {
		r.Close()
		lastMu.Lock()
		defer lastMu.Unlock()
		if errors.Is(last, certs.ErrRetiredBroker) {
			return nil, fmt.Errorf("relay: connect to %s: %w (last attempt: %w; the key set the relay holds retired the certificate that broker presents: the broker must be given its new certificate)", cfg.BrokerURL, err, last)
		}
		if last != nil {
			return nil, fmt.Errorf("relay: connect to %s: %w (last attempt: %v)", cfg.BrokerURL, err, last)
		}
		return nil, fmt.Errorf("relay: connect to %s: %w", cfg.BrokerURL, err)
	}
	return r, nil
}

// DialFleet dials the broker of fleet f (or brokerOverride when not empty) as the viewer
// relay identity viewer:<name>, with that identity's certificate from the fleet directory
// (issued there on first use, renewed there while the relay runs). It is DialFleetKeySets
// with no onKeySet. log may be nil.
func DialFleet(ctx context.Context, f *fleet.Fleet, name, brokerOverride string, log *slog.Logger) (*Relay, error) {
	return DialFleetKeySets(ctx, f, name, brokerOverride, log, nil)
}

// DialFleetKeySets is DialFleet, and hands each key set the relay takes to onKeySet, if not
// nil. The relay starts from the key set in force in f when f was opened, and also reads the
// key set operators publish on topic.FleetKeySet after a breach: a newer one that f's root
// (f.RootKey) signed becomes the relay's, kept in memory only (the fleet directory may be a
// read-only copy; after a restart the broker sends the set again, retained). A broker whose
// ACL does not let the relay read that topic is logged, and the relay goes on without it. The
// relay refuses a broker whose certificate the set it holds retired
// (certs.KeySet.BrokerNotBefore), and when a set it learns retires the broker it is connected
// to, it disconnects and connects again (Config.BrokerFloor). log may be nil.
func DialFleetKeySets(ctx context.Context, f *fleet.Fleet, name, brokerOverride string, log *slog.Logger, onKeySet func(*certs.KeySet)) (*Relay, error) {
	identity, err := certs.IdentityFor(certs.RoleViewer, name)
	if err != nil {
		return nil, fmt.Errorf("relay: viewer name: %w", err)
	}
	cert, err := f.ViewerCertificate(name)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	broker := brokerOverride
	if broker == "" {
		broker = f.Meta.Broker
	}
	host, err := certs.BrokerHost(broker)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	holder := certs.NewHolder(cert)
	held := &keySets{root: f.RootKey(), ks: f.KeySet()}
	r, err := held.dial(ctx, Config{
		BrokerURL: broker,
		TLS:       certs.ClientTLSConfig(f.Pool, host, holder),
		ClientID:  fleet.ClientID(identity),
		Logger:    log,
	}, nil, onKeySet)
	if err != nil {
		return nil, err
	}
	// A camview serve runs for months; the identity lasts 90 days. The fleet directory renews
	// it, and the next connection presents the new certificate. A relay revoked meanwhile is
	// not issued another until it is started again.
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	refreshCtx, stop := context.WithCancel(context.Background())
	go func() { <-r.closed; stop() }()
	go fleet.Refresh(refreshCtx, fleet.CertificateRefresh, cert, func() (*tls.Certificate, error) { return f.KeptViewerCertificate(name) }, holder.Set, log)
	return r, nil
}

// Close ends the MQTT session and waits for it. Offers still waiting return ErrClosed. Close
// sends no Bye: cameras end sessions whose viewer went away by themselves (ICE consent). It
// is idempotent.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		close(r.closed)
		r.cancel()
		r.closeErr = <-r.done
		r.mu.Lock()
		clear(r.sessions)
		r.mu.Unlock()
	})
	return r.closeErr
}

// Offer sends o to device (topic.Signal(device), QoS 0, not retained) and waits for the
// camera's answer. It returns a *RefusedError when the camera refused the offer, and ctx's
// error when ctx ends first; in that case it also sends the camera a Bye for the session, so
// that an answer still in the making does not hold a viewer slot. o must be complete and valid
// (signal.Offer.Validate) and its session id unused on this relay; answerKey is the key whose
// public half is o.AnswerKey (signal.NewAnswerKey, one per offer): the camera seals its answer
// to it, and Offer returns the answer opened.
//
// After an answer, the session stays known to the relay, for Candidate, Candidates and Ended,
// until Hangup or Forget.
func (r *Relay) Offer(ctx context.Context, device string, o signal.Offer, answerKey *signal.AnswerKey) (signal.Answer, error) {
	if err := certs.ValidDeviceID(device); err != nil {
		return signal.Answer{}, fmt.Errorf("relay: offer: %w", err)
	}
	if answerKey == nil || !bytes.Equal(answerKey.Public(), o.AnswerKey) {
		return signal.Answer{}, errors.New("relay: offer: the answer key is not the one whose public half the offer carries")
	}
	b, err := signal.Encode(o)
	if err != nil {
		return signal.Answer{}, fmt.Errorf("relay: offer: %w", err)
	}
	e := &entry{
		device:    device,
		key:       o.Key,
		answerKey: answerKey,
		reply:     make(chan any, 1),
		ended:     make(chan signal.Bye, 1),
		cands:     make(chan signal.ICECandidate, candidateBuffer),
	}
	if err := r.add(o.Session, e); err != nil {
		return signal.Answer{}, err
	}
	if err := r.c.Publish(ctx, topic.Signal(device), 0, false, b); err != nil {
		r.Forget(o.Session)
		return signal.Answer{}, fmt.Errorf("relay: send offer to %s: %w", device, err)
	}
	r.log.Debug("relay: offer sent", "session", o.Session, "device", device)
	select {
	case m := <-e.reply:
		switch m := m.(type) {
		case error:
			// The camera answered, so it holds a place for the session: end it.
			r.Forget(o.Session)
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), byeTimeout)
			defer cancel()
			if err := r.send(bctx, device, signal.Bye{V: signal.Version, Session: o.Session, Key: o.Key, Reason: signal.ByeHangup}); err != nil {
				r.log.Debug("relay: bye after an answer that does not open not sent", "session", o.Session, "device", device, "err", err)
			}
			return signal.Answer{}, m
		case signal.Answer:
			r.log.Debug("relay: answered", "session", o.Session, "device", device)
			return m, nil
		case signal.Refusal:
			r.Forget(o.Session)
			r.log.Info("relay: offer refused", "session", o.Session, "device", device, "reason", m.Reason)
			return signal.Answer{}, &RefusedError{Refusal: m}
		case signal.Bye:
			r.Forget(o.Session)
			return signal.Answer{}, fmt.Errorf("%w (%s)", ErrEnded, m.Reason)
		default: // handle sends only the four above
			r.Forget(o.Session)
			return signal.Answer{}, fmt.Errorf("relay: unexpected %T in reply to an offer", m)
		}
	case <-ctx.Done():
		r.Forget(o.Session)
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), byeTimeout)
		defer cancel()
		if err := r.send(bctx, device, signal.Bye{V: signal.Version, Session: o.Session, Key: o.Key, Reason: signal.ByeHangup}); err != nil {
			r.log.Debug("relay: bye after an unanswered offer not sent", "session", o.Session, "device", device, "err", err)
		}
		return signal.Answer{}, fmt.Errorf("relay: no answer from %s: %w", device, ctx.Err())
	case <-r.closed:
		return signal.Answer{}, ErrClosed
	}
}

// Candidate sends one of the viewer's trickled ICE candidates (an empty Candidate line marks
// the end of them) for a live session of device.
func (r *Relay) Candidate(ctx context.Context, device, session string, c signal.ICECandidate) error {
	r.mu.Lock()
	e := r.sessions[session]
	r.mu.Unlock()
	if e == nil || e.device != device {
		return fmt.Errorf("%w: %s", ErrUnknownSession, session)
	}
	return r.send(ctx, device, signal.Candidate{V: signal.Version, Session: session, Key: e.key, Candidate: c})
}

// Hangup ends a session: the relay forgets it and sends device a Bye with reason hangup and
// the session's key, without which the camera ignores a Bye. For a session the relay does not
// know (never offered, or ended by the camera and forgotten) it sends nothing: it holds no key
// to send, and there is nothing to end.
func (r *Relay) Hangup(ctx context.Context, device, session string) error {
	if err := certs.ValidDeviceID(device); err != nil {
		return fmt.Errorf("relay: hangup: %w", err)
	}
	r.mu.Lock()
	e := r.sessions[session]
	if e != nil && e.device == device {
		delete(r.sessions, session)
	}
	r.mu.Unlock()
	if e == nil || e.device != device {
		return nil
	}
	return r.send(ctx, device, signal.Bye{V: signal.Version, Session: session, Key: e.key, Reason: signal.ByeHangup})
}

// Forget drops a session without telling the camera, for one the camera ended itself.
func (r *Relay) Forget(session string) {
	r.mu.Lock()
	delete(r.sessions, session)
	r.mu.Unlock()
}

// Ended returns the channel that receives the camera's Bye for a live session (buffered 1,
// so a Bye that came before the call is not lost). It returns nil for a session the relay
// does not know: one never offered, refused, hung up or forgotten.
func (r *Relay) Ended(session string) <-chan signal.Bye {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.sessions[session]; e != nil {
		return e.ended
	}
	return nil
}

// Candidates returns the channel that receives the ICE candidates the camera trickles for a
// live session; nil for a session the relay does not know. Up to 32 wait there; later ones
// are dropped while nobody reads. (The camera puts its candidates in its answer; trickled
// ones are an addition.)
func (r *Relay) Candidates(session string) <-chan signal.ICECandidate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.sessions[session]; e != nil {
		return e.cands
	}
	return nil
}

// Sessions returns how many sessions the relay knows.
func (r *Relay) Sessions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Connected reports whether the MQTT session is up.
func (r *Relay) Connected() bool { return r.c.Connected() }

func (r *Relay) add(session string, e *entry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.closed:
		return ErrClosed
	default:
	}
	if _, dup := r.sessions[session]; dup {
		return fmt.Errorf("%w: %s", ErrSessionInUse, session)
	}
	r.sessions[session] = e
	return nil
}

// send publishes m to device at QoS 0, not retained: signaling is never queued for a party
// that is offline (P2b).
func (r *Relay) send(ctx context.Context, device string, m signal.Message) error {
	select {
	case <-r.closed:
		return ErrClosed
	default:
	}
	b, err := signal.Encode(m)
	if err != nil {
		return fmt.Errorf("relay: %s: %w", m.MessageType(), err)
	}
	if err := r.c.Publish(ctx, topic.Signal(device), 0, false, b); err != nil {
		return fmt.Errorf("relay: send %s to %s: %w", m.MessageType(), device, err)
	}
	return nil
}

// handle routes one message from a camera to its session. It runs on the MQTT client's
// delivery goroutine and never blocks.
func (r *Relay) handle(_ context.Context, m mqtt.Message) {
	if m.Topic == topic.FleetKeySet {
		if r.onKeySet != nil && len(m.Payload) > 0 {
			if ks := r.onKeySet(m.Payload); ks != nil {
				r.takeFloor(ks)
			}
		}
		return
	}
	device, dir, leaf, ok := topic.Parse(m.Topic)
	if !ok || dir != topic.Up || leaf != topic.LeafSignal {
		return
	}
	msg, err := signal.Decode(m.Payload)
	if err != nil {
		// signal's errors name fields and sizes, never values that could be secret.
		r.log.Warn("relay: malformed signaling message", "device", device, "err", err)
		return
	}
	session := msg.SessionID()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.sessions[session]
	if e == nil {
		return // another relay's session, or one that ended
	}
	if e.device != device {
		r.log.Warn("relay: signaling for a session from a device it was not offered to", "session", session, "device", device, "offered_to", e.device, "type", msg.MessageType())
		return
	}
	switch msg := msg.(type) {
	case signal.SealedAnswer:
		if e.replied {
			return
		}
		e.replied = true
		a, err := e.answerKey.Open(msg)
		if err != nil {
			r.log.Warn("relay: the camera's answer does not open", "session", session, "device", device, "err", err)
			e.reply <- fmt.Errorf("relay: answer from %s: %w", device, err)
			return
		}
		e.reply <- a // capacity 1, sent once
	case signal.Refusal:
		if !e.replied {
			e.replied = true
			e.reply <- msg // capacity 1, sent once
		}
	case signal.Candidate:
		select {
		case e.cands <- msg.Candidate:
		default:
			r.log.Warn("relay: camera candidate dropped: nobody reads them", "session", session, "device", device)
		}
	case signal.Bye:
		r.log.Info("relay: the camera ended the session", "session", session, "device", device, "reason", msg.Reason)
		select {
		case e.ended <- msg:
		default: // a repeated Bye
		}
		if !e.replied {
			e.replied = true
			e.reply <- msg
		}
	default:
		r.log.Debug("relay: ignored a camera's signaling message", "session", session, "device", device, "type", msg.MessageType())
	}
}

// takeFloor makes ks's broker floor the relay's. When it retires the certificate of the broker
// the relay is connected to, whoever holds that certificate's key may be posing as the broker:
// the relay drops the connection and connects again, and the handshake refuses that
// certificate from then on. It never blocks.
func (r *Relay) takeFloor(ks *certs.KeySet) {
	if r.floor == nil || !r.floor.Set(ks) {
		return
	}
	r.log.Warn("relay: the new key set retires the certificate of the broker the relay is connected to (the fleet replaced that broker's key; whoever still presents it may not be the broker): disconnecting, and connecting again only to a broker with a certificate issued from the floor on",
		"version", ks.Version, "broker_not_before", time.Unix(ks.BrokerNotBefore, 0).UTC().Format(time.RFC3339))
	r.c.Reconnect()
}
