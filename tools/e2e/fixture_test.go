package e2e

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// newFleet makes a fleet directory and a PKI view of it for the broker fixtures.
func newFleet(t *testing.T) (*fleet.Fleet, *mqtttest.PKI) {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Name: "e2e fleet"})
	if err != nil {
		t.Fatal(err)
	}
	return f, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
}

// brokerIdentities are the non-device identities the Mosquitto ACL must know.
var brokerIdentities = mqtttest.WithIdentities("operator:"+fleet.DefaultOperator, "signer:default")

// enroll runs the real enrollment: the device makes its key and CSR, the fleet signs it, the
// device installs the bundle.
func enroll(t testing.TB, f *fleet.Fleet, id string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	csr, err := agent.Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	bundle, _, err := f.Enroll(csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.InstallBundle(dir, bundle, time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runningAgent is an agent running in this process.
type runningAgent struct {
	*agent.Agent
	log    *logtest.Recorder
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop stops the agent and waits for it.
func (r *runningAgent) stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		if err := <-r.done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
}

func startAgent(t testing.TB, dir, url string, tune func(*agent.Config)) *runningAgent {
	t.Helper()
	log, rec := logtest.New()
	cfg := agent.Config{StateDir: dir, BrokerURL: url, Logger: log, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{Agent: a, log: rec, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() && testing.Verbose() {
			t.Logf("agent %s log:\n%s", a.DeviceID(), rec.Text())
		}
	})
	return r
}

func (r *runningAgent) waitConnected(t testing.TB) {
	t.Helper()
	select {
	case <-r.Connected():
	case <-time.After(20 * time.Second):
		t.Fatalf("agent did not connect; log:\n%s", r.log.Text())
	}
}

// replies is a test operator's raw session: it publishes what it is told and collects every
// device reply.
type replies struct {
	client *mqtt.Client
	ch     chan *wire.Reply
	cancel context.CancelFunc
	done   chan error
}

func dialReplies(t testing.TB, f *fleet.Fleet, url string) *replies {
	t.Helper()
	cert, err := f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	r := &replies{ch: make(chan *wire.Reply, 256), done: make(chan error, 1)}
	host, _ := certs.BrokerHost(url)
	c, err := mqtt.New(mqtt.Config{
		BrokerURL:     url,
		ClientID:      fleet.ClientID("operator:" + fleet.DefaultOperator),
		TLS:           certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert)),
		CleanSession:  false,
		Subscriptions: []mqtt.Subscription{{Filter: "dev/+/up/reply", QoS: 1}},
		Handler: func(_ context.Context, m mqtt.Message) {
			var rep wire.Reply
			if wire.Decode(m.Payload, &rep) == nil {
				r.ch <- &rep
			}
		},
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.client = c
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := c.WaitConnected(wctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *replies) publish(t testing.TB, device string, env []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		err := r.client.Publish(ctx, topic.DeviceCmd(device), 1, false, env)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("publish: %v", err)
		}
		r.client.WaitConnected(ctx)
	}
}

// await returns the reply with seq, failing after timeout.
func (r *replies) await(t testing.TB, seq uint64, timeout time.Duration) *wire.Reply {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case rep := <-r.ch:
			if rep.Seq == seq {
				return rep
			}
		case <-deadline:
			t.Fatalf("no reply to seq %d within %s", seq, timeout)
			return nil
		}
	}
}
