package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// pinger sends signed pings and collects the replies on a persistent operator session (QoS
// 1, CleanSession false), so that a reply published while the session is reconnecting — the
// broker restarting — is queued for it rather than lost: a missing reply then means a lost
// command, never a lost observer.
type pinger struct {
	f        *fleet.Fleet
	url      string
	clientID string
	tls      func() error
	client   *mqtt.Client
	cancel   context.CancelFunc
	done     chan error
	ttl      time.Duration

	mu      sync.Mutex
	pending map[uint64]string // seq → device, not yet answered
	changed chan struct{}
}

// publishPatience bounds the attempts to publish one ping.
const publishPatience = time.Minute

func dialPinger(ctx context.Context, f *fleet.Fleet, url string, ttl time.Duration, log *slog.Logger) (*pinger, error) {
	cert, err := f.OperatorCertificate()
	if err != nil {
		return nil, err
	}
	host, err := certs.BrokerHost(url)
	if err != nil {
		return nil, err
	}
	p := &pinger{f: f, url: url, clientID: fleet.ClientID(certs.CertIdentity(cert.Leaf)), ttl: ttl, done: make(chan error, 1),
		pending: map[uint64]string{}, changed: make(chan struct{})}
	tlsConf := certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert))
	c, err := mqtt.New(mqtt.Config{
		BrokerURL:     url,
		ClientID:      p.clientID,
		TLS:           tlsConf,
		CleanSession:  false,
		Subscriptions: []mqtt.Subscription{{Filter: "dev/+/up/" + topic.LeafReply, QoS: 1}},
		Handler:       p.handle,
		QueueLength:   1 << 16,
		MinBackoff:    100 * time.Millisecond,
		MaxBackoff:    2 * time.Second,
		Logger:        log,
	})
	if err != nil {
		return nil, fmt.Errorf("pinger: %w", err)
	}
	p.client = c
	p.tls = func() error {
		// The session is persistent: discard it on the broker when done, or the broker would
		// keep queueing every device's replies for it.
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return signer.Retire(rctx, url, p.clientID, tlsConf, log)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- c.Run(runCtx) }()
	if err := c.WaitConnected(ctx); err != nil {
		p.close()
		return nil, fmt.Errorf("pinger: connect: %w", err)
	}
	return p, nil
}

func (p *pinger) handle(_ context.Context, m mqtt.Message) {
	id, _, _, ok := topic.Parse(m.Topic)
	var r wire.Reply
	if !ok || wire.Decode(m.Payload, &r) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending[r.Seq] == id && r.OK {
		delete(p.pending, r.Seq)
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// send signs a ping for each device and publishes it, QoS 1, retrying a publish that failed
// because the session was down until ctx ends. It returns the sequences sent.
func (p *pinger) send(ctx context.Context, devices []string) (map[uint64]string, error) {
	sent := make(map[uint64]string, len(devices))
	for _, id := range devices {
		env, seq, err := p.f.SignCommand("ping", id, nil, time.Now(), p.ttl)
		if err != nil {
			return sent, err
		}
		p.mu.Lock()
		p.pending[seq] = id
		p.mu.Unlock()
		// A publish that failed with the connection (whatever the error says: the broker
		// closing mid-write surfaces as a network error) is sent again once reconnected; a
		// copy that did arrive is refused by the device as a replay, harmlessly.
		giveUp := time.Now().Add(publishPatience)
		for {
			err = p.client.Publish(ctx, topic.DeviceCmd(id), 1, false, env)
			if err == nil {
				break
			}
			if ctx.Err() != nil || time.Now().After(giveUp) {
				return sent, fmt.Errorf("pinger: publish to %s: %w", id, err)
			}
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			p.client.WaitConnected(wctx)
			cancel()
			select { // the session may not know yet that it is down
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		sent[seq] = id
	}
	return sent, nil
}

// await waits until every ping in sent is answered or ctx ends, and returns the devices whose
// ping was not answered. It stops waiting early once every unanswered ping is one that gone
// (if not nil) says will never be answered.
func (p *pinger) await(ctx context.Context, sent map[uint64]string, gone func(seq uint64) bool) []string {
	for {
		p.mu.Lock()
		var missing []string
		allGone := gone != nil
		for seq, id := range sent {
			if _, ok := p.pending[seq]; ok {
				missing = append(missing, id)
				allGone = allGone && gone(seq)
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if len(missing) == 0 || allGone {
			return missing
		}
		select {
		case <-ctx.Done():
			return missing
		case <-changed:
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// close ends the session and discards it on the broker.
func (p *pinger) close() error {
	p.cancel()
	err := <-p.done
	if errors.Is(err, mqtt.ErrClosed) {
		err = nil
	}
	return errors.Join(err, p.tls())
}
