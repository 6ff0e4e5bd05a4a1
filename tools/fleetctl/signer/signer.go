package signer

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// Subscriptions returns the shared-subscription filters every signer subscribes to, at QoS 1.
func Subscriptions() []mqtt.Subscription {
	return []mqtt.Subscription{
		{Filter: "$share/" + ShareGroup + "/dev/+/up/" + topic.LeafCSR, QoS: 1},
		{Filter: "$share/" + ShareGroup + "/boot/+/up/" + topic.LeafCSR, QoS: 1},
	}
}

// Signer answers the fleet's certificate requests. Create it with New, run it with Run.
type Signer struct {
	cfg    Config
	log    *slog.Logger
	clk    clock.Clock
	reg    *registry.Registry
	client *mqtt.Client

	in  chan request // from the message handler to the decision loop
	out chan answer  // from the decision loop to the publishers

	bucket *bucket // used by the decision loop only, under the registry lock
	pace   pace    // used by the decision loop only
	// holding names the requests in the decision loop's hold queue, which it alone uses: a
	// device that reconnects while it waits sends its request again, with the same req_id,
	// and a copy of a request held already is not held twice.
	holding map[heldKey]struct{}

	crl chan struct{} // capacity 1: revocations not yet in the CRL file

	beat atomic.Int64 // Unix nanoseconds of the monitor loop's last pass

	ticketsSeen atomic.Bool // the broker gave a TLS session ticket: warned once

	since     int64         // Unix seconds of New: the presence's Since
	connected chan struct{} // capacity 1: a connection came up (mqtt.Config.OnConnect)

	stats struct {
		issued, reissued, refused, rateLimited, confirmed, revoked, ignored, dropped, held atomic.Uint64
	}
}

// Stats are counters since New. They only grow.
type Stats struct {
	// Issued counts new certificates.
	Issued uint64
	// Reissued counts retried requests answered with the certificate issued before.
	Reissued uint64
	// Refused counts requests answered wire.ErrCodeRefused (or wire.ErrCodeInternal).
	Refused uint64
	// RateLimited counts requests answered wire.ErrCodeRateLimited.
	RateLimited uint64
	// Confirmed counts confirmations that confirmed a certificate for the first time.
	Confirmed uint64
	// Revoked counts serials revoked.
	Revoked uint64
	// Ignored counts messages that were malformed or had no effect (e.g. a duplicate
	// confirmation, or a copy of a request held already).
	Ignored uint64
	// Dropped counts answers that could not be published; the device asks again.
	Dropped uint64
	// Held counts requests that waited for a place in the window of Config.MaxPending (each
	// once, however long it waited).
	Held uint64
}

// request is one message from a device, with its CSR parsed outside the registry lock.
type request struct {
	via    string // registry.ViaCSR or registry.ViaBoot
	device string
	msg    wire.CertRequest
	csr    *x509.CertificateRequest
	csrErr error
	// heldSince is when the request was first held for a place in the window; zero for a
	// request not held yet.
	heldSince time.Time
}

// heldKey names a request in the hold queue.
type heldKey struct{ via, device, reqID string }

func (r *request) key() heldKey { return heldKey{r.via, r.device, r.msg.ReqID} }

// answer is one response to publish.
type answer struct {
	topic string
	resp  wire.CertResponse
}

// answerTo starts the answer to r: on its device's reply topic, in the version it was asked
// in (a device that asked in version 1 must not see a field it does not know).
func answerTo(r *request) answer {
	return answer{topic: replyTopic(*r), resp: wire.CertResponse{V: r.msg.V, ReqID: r.msg.ReqID}}
}

// rateLimited is the answer telling r's device to ask again later; in version 2, with the
// time to wait (pace.retryAfter). It is called by the decision loop only.
func (s *Signer) rateLimited(r *request, now time.Time) answer {
	a := answerTo(r)
	a.resp.Error = wire.ErrCodeRateLimited
	if r.msg.V >= wire.CertVersion {
		a.resp.RetryAfter = s.pace.retryAfter(now, r.device, s.bucket.rate, s.bucket.wait(now))
	}
	return a
}

// New validates cfg and returns a Signer that is not yet connected.
// queueLength is the signer's inbound queue. A breach sends every device's request at once,
// and a broker that does not cap a client's QoS 1 messages in flight (the embedded one; not
// Mosquitto, whose max_inflight_messages is 20) delivers them all to the signers: with the
// default 1,024 the queue overflowed on a 10,000-device fleet, and each overflow made the
// signer reconnect and receive the whole backlog again. Requests are about 1 KB each.
const queueLength = 1 << 15

func New(cfg Config) (*Signer, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	s := &Signer{
		cfg:     cfg,
		log:     cfg.Logger,
		clk:     cfg.Clock,
		reg:     cfg.Registry,
		in:      make(chan request, cfg.BatchSize),
		out:     make(chan answer, cfg.BatchSize*2),
		crl:     make(chan struct{}, 1),
		bucket:  newBucket(cfg.MaxRate, cfg.Burst),
		holding: make(map[heldKey]struct{}),
		since:   cfg.Clock.Now().Unix(),
		// One pending signal is enough: presenceLoop says "serving" for the newest connection.
		connected: make(chan struct{}, 1),
	}
	// The broker says "lost" for the instance when its connection ends without it stopping:
	// fleetctl status need not wait for its word to age.
	will, err := s.presence(wire.SignerLost, s.since)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	client, err := mqtt.New(mqtt.Config{
		BrokerURL:     cfg.BrokerURL,
		ClientID:      cfg.ClientID,
		TLS:           cfg.TLS,
		CleanSession:  false,
		Subscriptions: Subscriptions(),
		Handler:       s.handle,
		QueueLength:   queueLength,
		MinBackoff:    cfg.MinBackoff,
		MaxBackoff:    cfg.MaxBackoff,
		Logger:        cfg.Logger,
		OnConnect: func(context.Context) {
			select {
			case s.connected <- struct{}{}:
			default:
			}
		},
		Will: &mqtt.Will{Topic: PresenceTopic(cfg.ClientID), Payload: will, QoS: 1, Retained: true},
		// The signer offers to take TLS session tickets only to see whether the broker
		// makes them; it never resumes a session.
		OnSessionTicket: s.sessionTicket,
	})
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	s.client = client
	return s, nil
}

// sessionTicket warns, once, that the broker makes TLS session tickets: no fleet client
// resumes a session, so each is wasted, and Mosquitto spends about a third of every
// handshake's CPU on its two (docs/scale-out.md, "Session tickets"). A breach makes one new
// connection per device, so it runs slower on such a broker.
func (s *Signer) sessionTicket() {
	if s.ticketsSeen.Swap(true) {
		return
	}
	s.log.Warn("signer: the broker makes TLS session tickets, which no fleet client uses: making them costs the broker CPU in every handshake (a third of Mosquitto's) and slows a breach; for Mosquitto, run it with OPENSSL_CONF naming the openssl.cnf that fleetctl mosquitto-config writes beside mosquitto.conf (systemd: Environment=OPENSSL_CONF=...)",
		"broker", s.cfg.BrokerURL)
}

// Run connects and serves until ctx is done, then waits for every goroutine it started and
// returns nil (or the MQTT client's error). It may be called once. When Config.CRLPath is set
// it first writes a fresh CRL.
func (s *Signer) Run(ctx context.Context) error {
	if s.cfg.CRLPath != "" {
		var w CRLWritten
		if err := s.reg.Update(func(tx *registry.Tx) (err error) {
			w, err = WriteCRL(s.cfg.CRLPath, s.cfg.CA, tx, s.clk.Now())
			return err
		}); err != nil {
			return err
		}
		w.Log(s.log, s.cfg.CRLPath)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	start(s.decideLoop)
	if s.cfg.CRLPath != "" {
		start(s.crlLoop)
	}
	for range s.cfg.Publishers {
		start(s.publishLoop)
	}
	start(s.monitorLoop)
	start(s.compactLoop)
	// The connection outlives ctx by as long as the presence loop takes to say "stopped".
	clientCtx, stopClient := context.WithCancel(context.WithoutCancel(ctx))
	defer stopClient()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.presenceLoop(ctx, stopClient)
	}()
	err := s.client.Run(clientCtx)
	cancel()
	wg.Wait()
	// A batch decideLoop committed after crlLoop stopped may have revoked serials.
	if s.cfg.CRLPath != "" {
		select {
		case <-s.crl:
			s.writeCRL()
		default:
		}
	}
	if n := len(s.in); n > 0 {
		s.log.Warn("signer: stopping with requests not decided; the devices will ask again", "requests", n)
	}
	if err != nil {
		return fmt.Errorf("signer: %w", err)
	}
	return nil
}

// Alive returns when the signer last took the registry's lock to check the rollout (every
// Config.CheckInterval, with or without requests): a watchdog's sign of progress.
func (s *Signer) Alive() time.Time { return time.Unix(0, s.beat.Load()) }

// WaitConnected returns once the signer is connected and subscribed, or ctx.Err().
func (s *Signer) WaitConnected(ctx context.Context) error { return s.client.WaitConnected(ctx) }

// Reconnect drops the broker connection and makes a new one at once (mqtt.Client.Reconnect):
// for a broker certificate retired while connected. It never blocks.
func (s *Signer) Reconnect() { s.client.Reconnect() }

// Stats returns the counters.
func (s *Signer) Stats() Stats {
	return Stats{
		Issued:      s.stats.issued.Load(),
		Reissued:    s.stats.reissued.Load(),
		Refused:     s.stats.refused.Load(),
		RateLimited: s.stats.rateLimited.Load(),
		Confirmed:   s.stats.confirmed.Load(),
		Revoked:     s.stats.revoked.Load(),
		Ignored:     s.stats.ignored.Load(),
		Dropped:     s.stats.dropped.Load(),
		Held:        s.stats.held.Load(),
	}
}

// handle is the MQTT client's Handler. It runs on the client's own delivery goroutine (never
// paho's) and only parses and queues; when the decision loop is behind it waits, which holds
// back further deliveries without touching the connection.
func (s *Signer) handle(ctx context.Context, m mqtt.Message) {
	r, ok := s.parse(m)
	if !ok {
		s.stats.ignored.Add(1)
		return
	}
	select {
	case s.in <- r:
	case <-ctx.Done():
	}
}

func (s *Signer) parse(m mqtt.Message) (request, bool) {
	var r request
	if id, dir, leaf, ok := topic.Parse(m.Topic); ok && dir == topic.Up && leaf == topic.LeafCSR {
		r.via, r.device = registry.ViaCSR, id
	} else if id, dir, leaf, ok := topic.ParseBoot(m.Topic); ok && dir == topic.Up && leaf == topic.LeafCSR {
		r.via, r.device = registry.ViaBoot, id
	} else {
		s.log.Warn("signer: message on a topic it does not serve", "topic", clip(m.Topic))
		return r, false
	}
	if err := wire.Decode(m.Payload, &r.msg); err != nil {
		s.log.Warn("signer: malformed certificate request", "device", r.device, "via", r.via, "err", err)
		return r, false
	}
	if r.msg.Kind == wire.KindRequest {
		r.csr, r.csrErr = certs.ParseCSR([]byte(r.msg.CSR))
	}
	return r, true
}

// recheckInterval is how often held requests are decided again while no message comes in:
// the confirmations that free places in the window may reach another signer of the fleet, or
// a certificate's PendingTimeout may pass.
const recheckInterval = 100 * time.Millisecond

// decideLoop decides queued requests in batches and hands the answers to the publishers.
// Requests held for a place in the window (Config.MaxPending) are decided again first, in the
// order they came, whenever a batch is decided and at least every recheckInterval.
func (s *Signer) decideLoop(ctx context.Context) {
	batch := make([]request, 0, s.cfg.BatchSize)
	var held []request
	retry := false // the window had room at the last decision: held requests may go at once
	for {
		batch = batch[:0]
		if !retry || len(held) == 0 {
			var recheck <-chan time.Time
			if len(held) > 0 {
				recheck = s.clk.After(recheckInterval)
			}
			select {
			case r := <-s.in:
				batch = append(batch, r)
			case <-recheck:
			case <-ctx.Done():
				if len(held) > 0 {
					s.log.Warn("signer: stopping with requests held for a place in the window; the devices will ask again", "requests", len(held))
				}
				return
			}
		}
	fill:
		for len(batch) < s.cfg.BatchSize {
			select {
			case r := <-s.in:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		batch = s.dropHeld(batch)
		n := min(len(held), s.cfg.BatchSize)
		reqs := append(held[:n:n], batch...)
		answers, deferred, full := s.decide(reqs)
		held = s.requeue(held, n, deferred, &answers)
		retry = !full
		for _, a := range answers {
			select {
			case s.out <- a:
			case <-ctx.Done():
				return
			}
		}
	}
}

// dropHeld removes from batch, in place, the copies of requests in the hold queue: the held
// one is answered when its turn comes, on the device's reply topic.
func (s *Signer) dropHeld(batch []request) []request {
	if len(s.holding) == 0 {
		return batch
	}
	kept := batch[:0]
	for _, r := range batch {
		if _, dup := s.holding[r.key()]; dup && r.msg.Kind == wire.KindRequest {
			s.stats.ignored.Add(1)
			s.log.Debug("signer: request already held; the copy is dropped", "device", r.device, "via", r.via, "req_id", r.msg.ReqID)
			continue
		}
		kept = append(kept, r)
	}
	return kept
}

// requeue returns the held requests after a decision on the first n of held: those of them
// deferred again go back in front of the ones not decided this time, in place (the queue can
// hold thousands, and is not copied per decision), and the newly deferred ones go at the back.
// The queue stays in the order the requests were first held, so the ones held longer than
// HoldTimeout are at its front; they, and new ones beyond MaxHeld, are answered rate_limited.
func (s *Signer) requeue(held []request, n int, deferred []request, answers *[]answer) []request {
	now := s.clk.Now()
	// deferred is in the order decide was given: the held requests first, then new ones.
	k := 0
	for k < len(deferred) && !deferred[k].heldSince.IsZero() {
		k++
	}
	// The others of the n were answered: they leave the queue. deferred[:k] is a subsequence
	// of held[:n], in order, and the queue holds each request once.
	j := 0
	for i := range n {
		if j < k && deferred[j].key() == held[i].key() {
			j++
			continue
		}
		delete(s.holding, held[i].key())
	}
	copy(held[n-k:n], deferred[:k])
	held = held[n-k:]
	tellRetry := func(r request) {
		s.stats.rateLimited.Add(1)
		a := s.rateLimited(&r, now)
		s.log.Info("signer: request held too long for a place in the window; the device will retry", "device", r.device, "via", r.via, "req_id", r.msg.ReqID, "retry_after_s", a.resp.RetryAfter)
		*answers = append(*answers, a)
	}
	for len(held) > 0 && now.Sub(held[0].heldSince) >= s.cfg.HoldTimeout {
		delete(s.holding, held[0].key())
		tellRetry(held[0])
		held = held[1:]
	}
	for _, r := range deferred[k:] {
		if _, dup := s.holding[r.key()]; dup {
			// Two copies came in one batch: the first is held.
			s.stats.ignored.Add(1)
			continue
		}
		r.heldSince = now
		s.stats.held.Add(1)
		if len(held) >= s.cfg.MaxHeld {
			tellRetry(r)
			continue
		}
		held = append(held, r)
		s.holding[r.key()] = struct{}{}
	}
	return held
}

// publishLoop publishes answers, one at a time; Config.Publishers of them run at once.
func (s *Signer) publishLoop(ctx context.Context) {
	for {
		select {
		case a := <-s.out:
			if err := s.publish(ctx, a); err != nil {
				s.stats.dropped.Add(1)
				s.log.Warn("signer: answer not delivered; the device will ask again", "topic", a.topic, "req_id", a.resp.ReqID, "err", err)
			}
		case <-ctx.Done():
			return
		}
	}
}

func (s *Signer) publish(ctx context.Context, a answer) error {
	b, err := wire.Encode(&a.resp)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	for {
		err := s.client.Publish(ctx, a.topic, 1, false, b)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !errors.Is(err, mqtt.ErrNotConnected) && !errors.Is(err, mqtt.ErrConnectionLost) {
			return err
		}
		if err := s.client.WaitConnected(ctx); err != nil {
			return fmt.Errorf("signer: publish %s: %w", a.topic, err)
		}
	}
}

// monitorLoop checks the abort threshold every CheckInterval, so that an aborted rollout is
// reported and persisted even while no request comes in.
func (s *Signer) monitorLoop(ctx context.Context) {
	s.beat.Store(time.Now().UnixNano())
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.clk.After(s.cfg.CheckInterval):
		}
		err := s.reg.Update(func(tx *registry.Tx) error {
			st, err := LoadRollout(s.cfg.RolloutPath)
			if err != nil {
				return err
			}
			s.checkAbort(tx, &st, s.clk.Now())
			return nil
		})
		if err != nil {
			s.log.Error("signer: rollout check failed", "err", err)
		}
		s.beat.Store(time.Now().UnixNano())
	}
}

// clip shortens a peer-chosen string for a log line.
func clip(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// crlDirty notes that the CRL file is behind the registry.
func (s *Signer) crlDirty() {
	select {
	case s.crl <- struct{}{}:
	default:
	}
}

// crlInterval is the least time between two CRL writes. A breach campaign revokes thousands
// of serials; re-signing the whole list after every batch cost more than the issuing.
// Mosquitto reads the CRL only when it starts, so a second of delay costs nothing.
const crlInterval = time.Second

// crlDuty bounds the share of a signer's time that goes to writing the CRL: after a write that
// took d, the next waits at least crlDuty × d. A write reads the CRL before, makes the new one
// and signs it, all under the registry's lock, which every signer's decisions wait for: on
// this machine about 50 ms with 10,000 revoked serials listed and half a second with 100,000,
// so that at one write a second per signer the signers of a 100,000-device fleet in a breach
// would spend most of their time waiting for each other's CRLs.
const crlDuty = 10

// crlPause is how long crlLoop waits after a CRL write that took took.
func crlPause(took time.Duration) time.Duration { return max(crlInterval, crlDuty*took) }

// CompactInterval is how often a signer compacts the registry (registry.Compact), the first
// time as it starts: the log then holds the certificates of the last few months, however long
// the fleet has run. Several signers may do it; all but the first find nothing to drop.
const CompactInterval = 24 * time.Hour

// compactLoop compacts the registry every CompactInterval.
func (s *Signer) compactLoop(ctx context.Context) {
	for first := true; ; first = false {
		if s.cfg.CRLPath != "" && !first { // Run has just written one before the first
			// A CRL written now leaves out every certificate expired over a day, so it lists
			// nothing the compaction drops from the log: a serial on the CRL and not in the
			// log then only ever means a revocation the log lost (WriteCRL keeps those).
			s.writeCRL()
		}
		res, err := s.reg.Compact(s.clk.Now())
		switch {
		case err != nil:
			s.log.Error("signer: cannot compact the registry; it keeps growing until the next try", "err", err)
		case res.Dropped > 0:
			s.log.Info("signer: registry compacted: the records of certificates expired over a month ago moved to the archive", "kept", res.Kept, "archived", res.Dropped)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.clk.After(CompactInterval):
		}
	}
}

// crlLoop writes the CRL when revocations were recorded, at most once per crlPause of the
// last write's duration (crlInterval at least). A write that fails is tried again after the
// same pause. Run writes it once more after every loop has stopped if anything is still
// pending.
func (s *Signer) crlLoop(ctx context.Context) {
	for {
		var pause time.Duration
		select {
		case <-ctx.Done():
			return
		case <-s.crl:
			// The work is measured on the process's own monotonic clock, whatever clock the
			// signer keeps (a test's fake one measures nothing).
			start := time.Now()
			s.writeCRL()
			took := time.Since(start)
			if pause = crlPause(took); pause > crlInterval {
				s.log.Info("signer: the crl took long to write; the next waits longer, so that writing it keeps to a tenth of the signer's time", "took", took.Round(time.Millisecond), "next_after", pause.Round(time.Millisecond))
			}
		}
		select {
		case <-ctx.Done():
		case <-s.clk.After(pause):
		}
	}
}

// writeCRL writes the CRL from the registry's revocations; on failure it marks it behind
// again.
func (s *Signer) writeCRL() {
	// Under the registry's lock, as every other writer of the CRL does (the other signers,
	// fleetctl revoke, retire and mosquitto-config): a CRL made from the revocations read
	// before another process's newer CRL must not replace it.
	var w CRLWritten
	err := s.reg.Update(func(tx *registry.Tx) (err error) {
		w, err = WriteCRL(s.cfg.CRLPath, s.cfg.CA, tx, s.clk.Now())
		return err
	})
	if err != nil {
		s.log.Error("signer: cannot write the CRL; Mosquitto will not learn of the revocation until it is written (trying again)", "path", s.cfg.CRLPath, "err", err)
		s.crlDirty()
		return
	}
	w.Log(s.log, s.cfg.CRLPath)
	s.log.Info("signer: crl written; Mosquitto applies it when it restarts", "path", s.cfg.CRLPath, "listed", w.Listed)
}
