package e2e

// The chaos tests (issue 7): a breach campaign while things go wrong — agents SIGKILLed at
// random, the broker crashing and restarting, 30% of the devices cut off, a full disk during
// the commit write, a corrupted state file, certificates that expired during a long offline
// spell — and every run ends the same way: every device converged (its retained state says
// the campaign's epoch, rotation idle, as `fleetctl status` reads it), one device key left on
// its disk, and a signed ping to every device answered, those sent during the trouble
// included (R1–R4, R6, R7). Small fleets and fast agent timers keep the file under a minute
// and a half on a loaded 2-core machine; fleetsim plays the same scenarios at scale.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/tools/fleetsim/proxy"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// chaosSettle bounds the wait for a fleet to converge after the trouble ended; a subprocess
// agent runs with production timers (a lost certificate request costs it 30 s).
const chaosSettle = 75 * time.Second

// embeddedEnv is a fleet on the in-process embedded broker with one signer.
func embeddedEnv(t *testing.T) *env {
	t.Helper()
	f, _ := newFleet(t)
	e := &env{name: "embedded", f: f, url: fleettest.StartBroker(t, f, "--revocation-poll", "100ms"), applyCRL: func(testing.TB) {}}
	fleettest.StartSigner(t, f, e.url, "--log-level", "warn")
	return e
}

// breachNow runs `fleetctl breach` and returns the epoch it asked for.
func breachNow(t testing.TB, e *env, incident string) uint64 {
	t.Helper()
	out := fleetctl(t, "breach", "--dir", e.f.Dir, "--broker", e.url, "--incident", incident)
	m := regexp.MustCompile(`to epoch (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("breach said %q", out)
	}
	epoch, _ := strconv.ParseUint(m[1], 10, 64)
	return epoch
}

// fleetView is an operator session reading every device's retained state into a status
// collector, as `fleetctl status` does, for as long as the test runs.
//
// After a broker restart, every device republishes its state while the view's session
// re-subscribes; the embedded broker (mochi 2.7.9) does not order a wildcard SUBSCRIBE against
// a concurrent retained PUBLISH, so a long-lived view can keep the retained state from before
// the publish and miss the publish itself (a fresh session reads the right state). The view
// therefore reads the retained state afresh when nothing has changed for a while, as an
// operator running `fleetctl status` again would, and says so.
type fleetView struct {
	t testing.TB
	e *env

	mu  sync.Mutex
	col *status.Collector
	op  *fleet.Operator
}

func viewFleet(t testing.TB, e *env) *fleetView {
	t.Helper()
	v := &fleetView{t: t, e: e}
	v.refresh()
	t.Cleanup(func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.op.Close()
	})
	return v
}

// refresh opens a new session with a new collector and closes the old one.
func (v *fleetView) refresh() {
	v.t.Helper()
	col := status.NewCollector(v.e.f.RootKey(), v.e.f.KeySet())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	op, err := v.e.f.Dial(ctx, fleet.OperatorOptions{Broker: v.e.url, Subscriptions: status.Filters(), OnMessage: col.Add})
	if err != nil {
		v.t.Fatal(err)
	}
	if err := op.Sync(ctx); err != nil {
		v.t.Fatal(err)
	}
	v.mu.Lock()
	old := v.op
	v.col, v.op = col, op
	v.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

func (v *fleetView) collector() *status.Collector {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.col
}

// behind returns the devices of ids not converged on epoch, each with what it reports.
func (v *fleetView) behind(ids []string, epoch uint64) []string {
	got := map[string]status.Device{}
	for _, d := range v.collector().Report().Devices {
		got[d.ID] = d
	}
	var out []string
	for _, id := range ids {
		d, ok := got[id]
		if !ok || d.Epoch != epoch || d.DesiredEpoch != epoch || d.Rotation != wire.RotationIdle {
			out = append(out, fmt.Sprintf("%s(epoch %d/%d, %q %s)", id, d.Epoch, d.DesiredEpoch, d.Rotation, d.LastError))
		}
	}
	return out
}

// staleAfter is how long a view waits without any change before it reads the retained state
// afresh.
const staleAfter = 3 * time.Second

// tolerateStaleState accepts, and logs, a device whose agent committed the epoch but whose
// retained state on the broker is older: the agent publishes its state from its connect
// handler and again after its commit, concurrently, and the older snapshot can reach the
// broker last, where it stays until the device reconnects. A gap in the agent (agent/agent.go
// publishState), found by fleetsim (see docs/scale-out.md); set this to false once state
// publishes are serialised.
const tolerateStaleState = false

// committedIn reports whether log (a device's) says it committed a rotation to epoch.
func committedIn(log string, epoch uint64) bool {
	return regexp.MustCompile(fmt.Sprintf(`msg="rotation committed".*\sepoch=%d(\s|$)`, epoch)).MatchString(log)
}

// waitConverged waits until every device of ids reports epoch with its rotation idle. logOf,
// if not nil, returns a device's log, to recognise the agent's stale-state gap
// (tolerateStaleState).
func (v *fleetView) waitConverged(t testing.TB, ids []string, epoch uint64, timeout time.Duration, logOf func(id string) string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		changed := v.collector().Changed()
		b := v.behind(ids, epoch)
		if len(b) == 0 {
			return
		}
		select {
		case <-changed:
		case <-time.After(staleAfter):
			v.refresh()
			now := v.behind(ids, epoch)
			if len(now) < len(b) {
				t.Logf("the retained state read afresh shows %d more devices converged than the live session did (%v); see fleetView", len(b)-len(now), b)
			}
			if len(now) > 0 && tolerateStaleState && logOf != nil {
				stale := true
				for _, d := range now {
					id, _, _ := strings.Cut(d, "(")
					stale = stale && committedIn(logOf(id), epoch)
				}
				if stale {
					t.Logf("KNOWN GAP (agent): committed epoch %d, but the broker keeps an older retained state: %v", epoch, now)
					return
				}
			}
		case <-deadline:
			t.Fatalf("%d of %d devices not converged on epoch %d within %s: %v", len(b), len(ids), epoch, timeout, b)
		}
	}
}

// pingBox sends signed pings and collects the replies on a persistent operator session (QoS
// 1, CleanSession false): a reply published while it reconnects — the broker restarting — is
// queued for it, so a missing reply means a lost command, never a lost observer.
type pingBox struct {
	f      *fleet.Fleet
	client *mqtt.Client

	mu      sync.Mutex
	pending map[uint64]string
	changed chan struct{}
}

func dialPingBox(t testing.TB, e *env) *pingBox {
	t.Helper()
	cert, err := e.f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := certs.BrokerHost(e.url)
	p := &pingBox{f: e.f, pending: map[uint64]string{}, changed: make(chan struct{})}
	c, err := mqtt.New(mqtt.Config{
		BrokerURL:     e.url,
		ClientID:      fleet.ClientID("operator:" + fleet.DefaultOperator),
		TLS:           certs.ClientTLSConfig(e.f.Pool, host, certs.NewHolder(cert)),
		CleanSession:  false,
		Subscriptions: []mqtt.Subscription{{Filter: "dev/+/up/reply", QoS: 1}},
		Handler: func(_ context.Context, m mqtt.Message) {
			id, _, _, ok := topic.Parse(m.Topic)
			var r wire.Reply
			if !ok || wire.Decode(m.Payload, &r) != nil || !r.OK {
				return
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.pending[r.Seq] == id {
				delete(p.pending, r.Seq)
				close(p.changed)
				p.changed = make(chan struct{})
			}
		},
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.client = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := c.WaitConnected(wctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// send pings every device of ids and returns the pings by sequence. A publish that fails with
// the connection (the broker going down) is sent again once reconnected; a copy that did
// arrive is refused by the device as a replay, harmlessly.
func (p *pingBox) send(t testing.TB, ids []string) map[uint64]string {
	t.Helper()
	sent := map[uint64]string{}
	for _, id := range ids {
		env, seq, err := p.f.SignCommand("ping", id, nil, time.Now(), 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		p.mu.Lock()
		p.pending[seq] = id
		p.mu.Unlock()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := p.client.Publish(ctx, topic.DeviceCmd(id), 1, false, env)
			if err == nil {
				cancel()
				break
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("ping %s: %v", id, err)
			}
			p.client.WaitConnected(ctx)
			cancel()
			time.Sleep(50 * time.Millisecond) // the session may not know yet that it is down
		}
		sent[seq] = id
	}
	return sent
}

// lost waits up to timeout for every ping of sent to be answered and returns those that were
// not, by sequence. It stops waiting early once every unanswered ping is one that gone (if
// not nil) says will never be answered.
func (p *pingBox) lost(sent map[uint64]string, timeout time.Duration, gone func(seq uint64, id string) bool) map[uint64]string {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		missing := map[uint64]string{}
		for seq, id := range sent {
			if _, ok := p.pending[seq]; ok {
				missing[seq] = id
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		allGone := gone != nil
		for seq, id := range missing {
			allGone = allGone && gone(seq, id)
		}
		if allGone {
			return missing
		}
		select {
		case <-changed:
		case <-time.After(250 * time.Millisecond):
		case <-deadline:
			return missing
		}
	}
}

// tolerateReplyGap accepts, and logs, a lost command whose reply the device itself failed to
// publish and whose redelivery it then refused as a replay: the agent runs the command, its
// connection drops before the broker acknowledges the reply (a broker restart, a cut, or the
// reconnection of its own rotation), it does not publish the reply again, and the broker's
// QoS 1 redelivery of the command finds the sequence already accepted. The command ran; its
// answer is lost. This is a gap in the agent (agent/commands.go), found by these tests and
// fleetsim (see docs/scale-out.md); set this to false once a redelivered command's reply is
// sent again.
const tolerateReplyGap = false

// replyGap reports whether log (a device's) shows the reply gap for seq.
func replyGap(log string, seq uint64) bool {
	s := fmt.Sprintf("seq=%d", seq)
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "could not publish reply") && strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// settled is how every chaos test ends: every device of dirs (id → state directory) converged
// on epoch, with one device key left on its disk, and a signed ping to each answered — and so
// were the pings in queued, sent while the trouble was under way.
//
// logOf returns a device's log, to tell the agent's known reply gap (tolerateReplyGap) from
// any other loss; nil tolerates nothing.
func settled(t *testing.T, v *fleetView, pb *pingBox, dirs map[string]string, epoch uint64, queued map[uint64]string, logOf func(id string) string) {
	t.Helper()
	ids := make([]string, 0, len(dirs))
	for id := range dirs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	v.waitConverged(t, ids, epoch, chaosSettle, logOf)
	for id, dir := range dirs {
		keys, _ := filepath.Glob(filepath.Join(dir, "creds", "*", agent.KeyFile))
		if _, err := os.Stat(filepath.Join(dir, agent.KeyFile)); err == nil {
			keys = append(keys, filepath.Join(dir, agent.KeyFile))
		}
		if len(keys) != 1 {
			t.Errorf("%s: %d device keys on disk after convergence: %v", id, len(keys), keys)
		}
	}
	all := pb.send(t, ids)
	for s, id := range queued {
		all[s] = id
	}
	known := func(seq uint64, id string) bool { return tolerateReplyGap && logOf != nil && replyGap(logOf(id), seq) }
	var lost []string
	for seq, id := range pb.lost(all, 30*time.Second, known) {
		if known(seq, id) {
			t.Logf("KNOWN GAP (agent): %s ran ping seq %d but its reply was lost with its connection, and the agent never sends a reply again", id, seq)
			continue
		}
		lost = append(lost, id)
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		t.Fatalf("%d of %d commands lost (%d sent during the trouble): no reply from %v", len(lost), len(all), len(queued), lost)
	}
	t.Logf("%d devices converged on epoch %d; %d pings answered, %d of them sent during the trouble", len(ids), epoch, len(all), len(queued))
}

// startFleet enrolls n devices named prefix-NN and runs them in this process with fast
// rotation timers, waiting until each is connected; url maps a device's index to its broker
// URL (a proxy for some).
func startFleet(t *testing.T, e *env, prefix string, n int, url func(i int) string) ([]*runningAgent, map[string]string) {
	t.Helper()
	agents := make([]*runningAgent, n)
	dirs := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("%s-%02d", prefix, i)
		dirs[id] = enroll(t, e.f, id)
		agents[i] = startAgent(t, dirs[id], url(i), fastRotation)
	}
	for _, a := range agents {
		a.waitConnected(t)
	}
	return agents, dirs
}

// SIGKILL agents (the real camagent binary) at random moments during a breach campaign, some
// twice, and start them again: each resumes from its journal and the fleet converges (R1).
func TestChaosAgentsKilledAtRandomDuringABreach(t *testing.T) {
	forEachFleetBroker(t, killedAtRandom)
}

func killedAtRandom(t *testing.T, e *env) {
	const n = 8
	v := viewFleet(t, e)
	pb := dialPingBox(t, e)
	dirs := map[string]string{}
	procs := make([]*proc, n)
	var ids []string
	for i := range n {
		id := fmt.Sprintf("cam-kill-%02d", i)
		dirs[id] = enroll(t, e.f, id)
		procs[i] = startProc(t, dirs[id], e.url)
		ids = append(ids, id)
	}
	v.waitConverged(t, ids, 0, 30*time.Second, nil) // all connected and reporting

	epoch := breachNow(t, e, "CHAOS-KILL")
	// The kills, at random moments of the campaign's first two seconds: every device once,
	// every other one twice. Each is started again at once.
	type kill struct {
		at time.Duration
		i  int
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	var kills []kill
	for i := range n {
		kills = append(kills, kill{time.Duration(rng.IntN(1500)) * time.Millisecond, i})
		if i%2 == 0 {
			kills = append(kills, kill{time.Duration(rng.IntN(2000)) * time.Millisecond, i})
		}
	}
	slices.SortFunc(kills, func(a, b kill) int { return int(a.at - b.at) })
	start := time.Now()
	for _, k := range kills {
		time.Sleep(time.Until(start.Add(k.at))) // the random moment: the point of this test
		p := procs[k.i]
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		p.done <- nil
		procs[k.i] = startProc(t, dirs[ids[k.i]], e.url)
	}
	t.Logf("%d SIGKILLs in the first %s of the campaign", len(kills), time.Since(start).Round(time.Millisecond))
	settled(t, v, pb, dirs, epoch, nil, func(id string) string { return procs[slices.Index(ids, id)].log.String() })
}

// fleetctlBin is the real fleetctl binary, built once, for the tests that crash the broker.
var fleetctlBin = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(camagentBin), "fleetctl")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/camagent/camagent/tools/fleetctl").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build fleetctl: %v\n%s", err, out)
	}
	return bin, nil
})

// brokerProc is `fleetctl broker` as a real process, to be killed and started again on the
// same address with the same persistence.
type brokerProc struct {
	t          testing.TB
	f          *fleet.Fleet
	addr, data string
	p          *proc
}

func startBrokerProc(t testing.TB, f *fleet.Fleet) *brokerProc {
	t.Helper()
	b := &brokerProc{t: t, f: f, addr: stableAddr(t), data: t.TempDir()}
	b.start()
	return b
}

func (b *brokerProc) start() {
	b.t.Helper()
	bin, err := fleetctlBin()
	if err != nil {
		b.t.Fatal(err)
	}
	p := &proc{log: new(logtest.Buffer), done: make(chan error, 1)}
	p.cmd = exec.Command(bin, "broker", "--dir", b.f.Dir, "--listen", b.addr, "--data", b.data, "--revocation-poll", "100ms")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	b.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if b.t.Failed() && testing.Verbose() {
			b.t.Logf("fleetctl broker log:\n%s", p.log.String())
		}
	})
	b.p = p
	fleettest.WaitTLS(b.t, b.f, b.addr)
}

// crash kills the broker with SIGKILL: no clean shutdown, no flush.
func (b *brokerProc) crash() {
	b.p.cmd.Process.Signal(syscall.SIGKILL)
	<-b.p.done
	b.p.done <- nil
}

// stableAddr returns a free loopback address whose port is below the ephemeral range, so that
// no outgoing connection takes it while the broker is down.
func stableAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port in 20000-31999")
	return ""
}

// The broker goes down in the middle of a campaign and comes back on the same port with the
// same persistence: the embedded broker is SIGKILLed (a crash), Mosquitto restarted with
// SIGTERM (it saves its database then; a SIGKILLed Mosquitto loses what it received since its
// last autosave, by design). Commands queued for devices that were offline during the restart
// are delivered when they return, and the campaign converges (R2, R3).
func TestChaosBrokerRestartsMidCampaign(t *testing.T) {
	const n, offline = 12, 3
	run := func(t *testing.T, e *env, restart func()) {
		v := viewFleet(t, e)
		pb := dialPingBox(t, e)
		agents, dirs := startFleet(t, e, "cam-rs", n, func(int) string { return e.url })
		// The last few go offline: their commands wait in their persistent sessions, which
		// must survive the restart.
		for _, a := range agents[n-offline:] {
			a.stop(t)
		}
		var offIDs []string
		for _, a := range agents[n-offline:] {
			offIDs = append(offIDs, a.DeviceID())
		}
		epoch := breachNow(t, e, "CHAOS-RESTART")
		queued := pb.send(t, offIDs)
		waitFor(t, 30*time.Second, "a third of the online devices to rotate", func() bool {
			rotated := 0
			for _, a := range agents[:n-offline] {
				if a.Epoch() == epoch {
					rotated++
				}
			}
			return rotated >= (n-offline)/3
		})
		restart()
		for i := n - offline; i < n; i++ {
			agents[i] = startAgent(t, dirs[agents[i].DeviceID()], e.url, fastRotation)
		}
		settled(t, v, pb, dirs, epoch, queued, agentLogs(agents))
		// Not a failure, but worth seeing: a certificate request published around the restart
		// that no signer answered costs its device a RequestTimeout.
		unanswered := 0
		for _, a := range agents {
			unanswered += strings.Count(a.log.Text(), "no certificate from the signer")
		}
		t.Logf("%d certificate requests went unanswered across the restart and were retried after RequestTimeout", unanswered)
	}
	t.Run("embedded broker SIGKILLed", func(t *testing.T) {
		f, _ := newFleet(t)
		b := startBrokerProc(t, f)
		e := &env{name: "embedded", f: f, url: "mqtts://" + b.addr, applyCRL: func(testing.TB) {}}
		fleettest.StartSigner(t, f, e.url, "--log-level", "warn")
		run(t, e, func() {
			b.crash()
			b.start()
		})
	})
	t.Run("mosquitto restarted", func(t *testing.T) {
		f, pki := newFleet(t)
		fleetctl(t, "crl", "--dir", f.Dir)
		crl, err := os.ReadFile(f.CRLPath())
		if err != nil {
			t.Fatal(err)
		}
		m := mqtttest.StartMosquitto(t, pki, brokerIdentities, mqtttest.WithCRL(crl))
		e := &env{name: "mosquitto", f: f, url: m.URL()}
		fleettest.StartSigner(t, f, e.url, "--log-level", "warn")
		run(t, e, func() { m.Restart(t) })
	})
}

// 30% of the devices are cut off through the fault proxy while the breach notice goes out,
// and commands are sent to them while they are cut off. Nobody cut off can rotate; everybody
// else does. When the link is restored they reconnect (with jittered backoff), rotate, and
// answer every command queued for them (R2, R3, R4). A cut resets their connections; a
// blackhole swallows their bytes, so only their keepalive tells them.
func TestChaosCut30PercentOfDevicesThenRestore(t *testing.T) {
	for _, mode := range []proxy.Mode{proxy.Cut, proxy.Blackhole} {
		t.Run(mode.String(), func(t *testing.T) {
			forEachFleetBroker(t, func(t *testing.T, e *env) { cutOff(t, e, mode) })
		})
	}
}

func cutOff(t *testing.T, e *env, mode proxy.Mode) {
	const n = 10
	px, err := proxy.New(proxy.Config{Target: strings.TrimPrefix(e.url, "mqtts://")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	cut := func(i int) bool { return i%10 < 3 }
	v := viewFleet(t, e)
	pb := dialPingBox(t, e)
	agents, dirs := startFleet(t, e, "cam-"+mode.String(), n, func(i int) string {
		if cut(i) {
			return "mqtts://" + px.Addr()
		}
		return e.url
	})
	if mode == proxy.Blackhole {
		// The agents' keepalive (30 s in production) is what notices a blackhole; these
		// restart with a short one.
		for i, a := range agents {
			if cut(i) {
				a.stop(t)
				agents[i] = startAgent(t, dirs[a.DeviceID()], "mqtts://"+px.Addr(), func(c *agent.Config) { fastRotation(c); c.KeepAlive = time.Second })
				agents[i].waitConnected(t)
			}
		}
	}

	px.SetFault(proxy.Fault{Mode: mode})
	faultOn := time.Now()
	epoch := breachNow(t, e, "CHAOS-"+strings.ToUpper(mode.String()))
	var cutIDs, onIDs []string
	for i, a := range agents {
		if cut(i) {
			cutIDs = append(cutIDs, a.DeviceID())
		} else {
			onIDs = append(onIDs, a.DeviceID())
		}
	}
	queued := pb.send(t, cutIDs)
	v.waitConverged(t, onIDs, epoch, chaosSettle, agentLogs(agents))
	for i, a := range agents {
		if cut(i) && a.Epoch() != 0 {
			t.Fatalf("%s rotated while cut off", a.DeviceID())
		}
	}
	if s := px.Stats(); mode == proxy.Cut && (s.Cut != 3 || s.Reset == 0) {
		t.Fatalf("proxy stats %+v: want the 3 live connections cut and their reconnections refused", s)
	} else if mode == proxy.Blackhole && s.Dropped == 0 {
		t.Fatalf("proxy stats %+v: the blackhole dropped nothing", s)
	}
	// The fault lasts at least two seconds: longer than a blackholed device's keepalive, so
	// its pings go unanswered and it gives up on the connection by itself.
	time.Sleep(time.Until(faultOn.Add(2 * time.Second)))
	px.SetFault(proxy.Fault{})
	settled(t, v, pb, dirs, epoch, queued, agentLogs(agents))
}

// mountTmpfs mounts a tmpfs of size bytes on dir for the test. It needs root (CI runs make
// test as root); without it the test fails and says so.
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test fills a %d-byte tmpfs, which needs root to mount (make test runs as root in CI); run it as root, or leave it out with -skip '%s'", size, t.Name())
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// fillDisk writes path until the filesystem refuses with ENOSPC.
func fillDisk(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
}

// The disk fills up in the middle of a rotation, between the new certificate's confirmation
// and the journal write that commits it — the worst moment: the signer revokes the old
// certificate on the confirmation. The commit fails with ENOSPC and is retried; the journal on
// disk is intact (the atomic write left no temporary file and the old content); the device
// keeps answering commands on its new certificate; once space is freed it commits and
// converges (R1, R6).
func TestChaosDiskFullDuringTheCommitWrite(t *testing.T) {
	e := embeddedEnv(t)
	mnt := t.TempDir()
	mountTmpfs(t, mnt, 512<<10)
	const id = "cam-disk-full"
	dir := filepath.Join(mnt, id)
	csr, err := agent.Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	bundle, _, err := e.f.Enroll(csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.InstallBundle(dir, bundle, time.Now()); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	filled := make(chan error, 1)
	var once sync.Once
	v := viewFleet(t, e)
	pb := dialPingBox(t, e)
	a := startAgent(t, dir, e.url, func(c *agent.Config) {
		fastRotation(c)
		c.AfterStep = func(step string) {
			if step == agent.StepSwitched {
				once.Do(func() { filled <- fillDisk(filler) })
			}
		}
	})
	a.waitConnected(t)
	epoch := breachNow(t, e, "CHAOS-DISK")
	select {
	case err := <-filled:
		if err != nil {
			t.Fatalf("fill the disk: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the rotation never reached the switch; log:\n%s", a.log.Text())
	}
	a.log.WaitFor(t, 30*time.Second, "rotation step failed", "journal commit", "no space left on device")

	// While the disk is full: the journal is the one written before (issued), whole.
	b, err := os.ReadFile(filepath.Join(dir, agent.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.NewFileStore(filepath.Join(dir, agent.StateFile), time.Now).Load()
	if err != nil || st.Cred.Phase != state.PhaseIssued {
		t.Fatalf("journal while the disk is full: %+v, %v:\n%s", st.Cred, err, b)
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(tmp) > 0 {
		t.Fatalf("temporary files left by failed writes: %v", tmp)
	}
	// The device still answers, on its new certificate.
	if missing := pb.lost(pb.send(t, []string{id}), 20*time.Second, nil); len(missing) > 0 {
		t.Fatalf("no reply while the disk is full; log:\n%s", a.log.Text())
	}
	if a.Rotations() != 0 {
		t.Fatal("the rotation committed on a full disk")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	settled(t, v, pb, map[string]string{id: dir}, epoch, nil, agentLogs([]*runningAgent{a}))
	if a.Rotations() != 1 || a.Epoch() != epoch {
		t.Fatalf("%d rotations, epoch %d", a.Rotations(), a.Epoch())
	}
}

// A device is SIGKILLed mid-rotation (after its journal said pending, or issued), and its
// state file is found corrupt when it starts again: the agent quarantines it, recovers the
// newest credential that still verifies, and converges with the others (R1, R6).
func TestChaosCorruptStateFileMidCampaign(t *testing.T) {
	forEachFleetBroker(t, corruptMidCampaign)
}

func corruptMidCampaign(t *testing.T, e *env) {
	v := viewFleet(t, e)
	pb := dialPingBox(t, e)
	steps := []string{agent.StepPending, agent.StepIssued}
	dirs := map[string]string{}
	procs := map[string]*proc{}
	for _, step := range steps {
		id := "cam-corrupt-" + step
		dirs[id] = enroll(t, e.f, id)
		procs[id] = startProc(t, dirs[id], e.url, "--crash-after", step)
	}
	v.waitConverged(t, slices.Sorted(maps.Keys(dirs)), 0, 30*time.Second, nil)
	epoch := breachNow(t, e, "CHAOS-CORRUPT")
	for id, p := range procs {
		p.killedWithin(t, 60*time.Second)
		path := filepath.Join(dirs[id], agent.StateFile)
		if err := os.WriteFile(path, []byte(`{"command_hwm": 12, "cred": {"active": 0, "pha`), 0o600); err != nil {
			t.Fatal(err)
		}
		procs[id] = startProc(t, dirs[id], e.url)
	}
	settled(t, v, pb, dirs, epoch, nil, func(id string) string { return procs[id].log.String() })
	for id, p := range procs {
		if !strings.Contains(p.log.String(), "state file was corrupt; quarantined it and recovered") {
			t.Errorf("%s did not say it quarantined its state file; log:\n%s", id, p.log.String())
		}
		if q, _ := filepath.Glob(filepath.Join(dirs[id], agent.StateFile+".corrupt-*")); len(q) != 1 {
			t.Errorf("%s: quarantined files %v, want one", id, q)
		}
	}
}

// Devices whose certificates expired while they were offline for the whole campaign come
// back, recover through their bootstrap identity, and converge on the breach epoch like the
// devices that were online (R2, R7).
func TestChaosCertificatesExpiredOfflineRebootstrapAfterTheCampaign(t *testing.T) {
	forEachFleetBroker(t, expiredOffline, "cam-expired-00", "cam-expired-01", "cam-expired-02")
}

func expiredOffline(t *testing.T, e *env) {
	const expiring, online = 3, 5
	// Enrolled first, with 3-second certificates: they expire while the campaign runs.
	short, err := fleet.Open(e.f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	short.Meta.DeviceValidity = 3
	dirs := map[string]string{}
	var expiry time.Time
	var expIDs []string
	for i := range expiring {
		id := fmt.Sprintf("cam-expired-%02d", i)
		dir := filepath.Join(t.TempDir(), id)
		csr, err := agent.Enroll(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		bundle, c, err := short.Enroll(csr, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := agent.InstallBundle(dir, bundle, time.Now()); err != nil {
			t.Fatal(err)
		}
		// The device was online once: the broker holds its persistent session, in which
		// commands sent while it is away wait for it.
		primeSession(t, e, dir, c)
		dirs[id], expiry = dir, c.NotAfter
		expIDs = append(expIDs, id)
	}
	v := viewFleet(t, e)
	pb := dialPingBox(t, e)
	onAgents, onDirs := startFleet(t, e, "cam-online", online, func(int) string { return e.url })
	epoch := breachNow(t, e, "CHAOS-EXPIRED")
	queued := pb.send(t, expIDs)
	v.waitConverged(t, slices.Sorted(maps.Keys(onDirs)), epoch, chaosSettle, agentLogs(onAgents))
	waitFor(t, 30*time.Second, "the offline devices' certificates to expire", func() bool { return time.Now().After(expiry.Add(time.Second)) })

	var back []*runningAgent
	for _, id := range expIDs {
		back = append(back, startAgent(t, dirs[id], e.url, fastRotation))
	}
	for _, a := range back {
		a.log.WaitFor(t, 30*time.Second, "bootstrap identity")
	}
	for id, dir := range onDirs {
		dirs[id] = dir
	}
	settled(t, v, pb, dirs, epoch, queued, agentLogs(append(back, onAgents...)))
	for _, a := range back {
		if !a.Certificate().NotAfter.After(time.Now().Add(time.Hour)) {
			t.Fatalf("%s still on a short certificate (until %v)", a.DeviceID(), a.Certificate().NotAfter)
		}
	}
}

// primeSession connects once as the device, with the certificate it was enrolled with, the
// way the agent does (its id as client id, a persistent session, its subscriptions), and
// leaves: the broker then queues the device's commands while it is offline. It is for devices
// whose agent must not run yet.
func primeSession(t *testing.T, e *env, dir string, c *x509.Certificate) {
	t.Helper()
	key, err := certs.LoadKeyFile(filepath.Join(dir, agent.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := certs.TLSCertificate(c, key)
	if err != nil {
		t.Fatal(err)
	}
	id := certs.CertIdentity(c)
	host, _ := certs.BrokerHost(e.url)
	client, err := mqtt.New(mqtt.Config{
		BrokerURL: e.url, ClientID: id, CleanSession: false,
		TLS:           certs.ClientTLSConfig(e.f.Pool, host, certs.NewHolder(tc)),
		Subscriptions: []mqtt.Subscription{{Filter: topic.DeviceDownFilter(id), QoS: 1}, {Filter: topic.FleetDownFilter(topic.FleetShard(id)), QoS: 1}},
		Handler:       func(context.Context, mqtt.Message) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	err = client.WaitConnected(wctx)
	wcancel()
	cancel()
	<-done
	if err != nil {
		t.Fatalf("%s: connect with its enrolled certificate: %v", id, err)
	}
}

// agentLogs returns the logOf of settled for agents running in this process.
func agentLogs(agents []*runningAgent) func(id string) string {
	return func(id string) string {
		for _, a := range agents {
			if a.DeviceID() == id {
				return a.log.Text()
			}
		}
		return ""
	}
}
