package sim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/tools/fleetsim/proxy"
)

// run is one simulation: its environment, devices, observers and measurements.
type run struct {
	cfg Config
	log *slog.Logger

	f         *fleet.Fleet
	brokerURL string
	emb       *embedded
	signers   []*command
	px        *proxy.Proxy
	devs      []*device
	m         *metrics
	handler   *countingHandler

	statusMu sync.Mutex
	op       *fleet.Operator // the status session: every device's retained state
	col      *status.Collector
	pg       *pinger

	target    atomic.Uint64 // the epoch the campaign asks for
	breachAt  time.Time
	rotated   atomic.Int64
	bg        sync.WaitGroup // the scenario's timers (fault end, broker restart)
	queued    map[uint64]string
	queuedMu  sync.Mutex
	restartMu sync.Mutex
	restarts  int
	downtime  time.Duration
	backAfter time.Duration // from the broker's (last) return until every device was connected
	notBack   int           // devices not connected again within Config.Timeout
	rep       Report

	// convEpoch and convSeen are waitConverged's: the devices seen converged on convEpoch,
	// which its checks do not look at again until every device has been (convergenceSince).
	convEpoch uint64
	convSeen  []bool
}

// Run enrolls cfg.Devices simulated devices, runs the real agent for each against the broker,
// plays cfg.Scenario and reports what it measured. A run that completed returns its report;
// if a device did not converge or a command was lost, it returns ErrNotConverged and/or
// ErrCommandsLost with it. A configuration or setup error returns no report.
func Run(ctx context.Context, cfg Config) (_ *Report, err error) {
	cfg, err = cfg.withDefaults(runtime.NumCPU())
	if err != nil {
		return nil, err
	}
	if err := checkFiles(cfg); err != nil {
		return nil, err
	}
	if err := CheckSourceAddrs(ctx, cfg); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, log: cfg.Logger, queued: map[uint64]string{}}
	defer func() { err = errors.Join(err, r.close()) }()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	if err := r.enroll(ctx); err != nil {
		return nil, err
	}
	if err := r.startAgents(ctx); err != nil {
		return nil, err
	}
	if err := r.dialObservers(ctx); err != nil {
		return nil, err
	}
	if err := r.play(ctx); err != nil {
		return nil, err
	}
	r.finalPings(ctx)
	r.finish()
	rep := r.rep
	var fail []error
	if rep.NotConvergedCount > 0 {
		fail = append(fail, fmt.Errorf("%w: %d of %d", ErrNotConverged, rep.NotConvergedCount, rep.Devices))
	}
	if rep.CommandsLost > 0 {
		fail = append(fail, fmt.Errorf("%w: %d of %d", ErrCommandsLost, rep.CommandsLost, rep.CommandsSent))
	}
	return &rep, errors.Join(fail...)
}

func (r *run) setup(ctx context.Context) error {
	c := &r.cfg
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return fmt.Errorf("fleetsim: state dir: %w", err)
	}
	var err error
	if c.Embedded {
		addr := c.Listen
		if addr == "" {
			if addr, err = freeStablePort(); err != nil {
				return err
			}
		}
		if c.FleetDir == "" {
			r.f, err = newFleet(c.StateDir, "mqtts://"+addr)
		} else {
			r.f, err = fleet.Open(c.FleetDir)
		}
		if err != nil {
			return err
		}
		if r.emb, err = startEmbedded(ctx, r.f.Dir, addr, filepath.Join(c.StateDir, "broker-data"), c.MaxConnectRate, c.Log); err != nil {
			return err
		}
		r.brokerURL, r.rep.Broker = r.emb.url(), "embedded"
	} else {
		if r.f, err = fleet.Open(c.FleetDir); err != nil {
			return err
		}
		r.brokerURL, r.rep.Broker = c.BrokerURL, c.BrokerURL
		wctx, cancel := context.WithTimeout(ctx, readyTimeout)
		err := waitTLS(wctx, r.f, r.brokerURL)
		cancel()
		if err != nil {
			return fmt.Errorf("fleetsim: %w", err)
		}
	}
	if c.Signers > 0 {
		if r.signers, err = startSigners(ctx, r.f.Dir, r.brokerURL, c.Signers, c.Log); err != nil {
			return err
		}
		r.rep.Signers = c.Signers
	}
	proxyURL := ""
	if c.Fault.Mode != proxy.Pass {
		host := strings.TrimPrefix(r.brokerURL, "mqtts://")
		// With source addresses, the proxy dials the broker from the address each device
		// dialled it from, so that a faulted device is the same host to the broker as the
		// others, and not one more connection from 127.0.0.1 with the signers.
		if r.px, err = proxy.New(proxy.Config{Target: host, KeepSource: c.SourceAddrs > 0}); err != nil {
			return err
		}
		// The devices verify the broker's certificate for the proxy's address, 127.0.0.1:
		// `fleetctl init` puts it in the broker certificate by default.
		proxyURL = "mqtts://" + r.px.Addr()
	}
	prefix := c.Prefix
	if prefix == "" {
		var b [3]byte
		rand.Read(b[:])
		prefix = "sim-" + hex.EncodeToString(b[:]) + "-"
	}
	r.devs = newDevices(c, prefix, r.brokerURL, proxyURL)
	r.rep.Scenario, r.rep.Devices = c.Scenario, c.Devices
	for _, d := range r.devs {
		if d.faulted {
			r.rep.Faulted++
		}
		if d.skew != 0 {
			r.rep.Skewed++
		}
	}
	if r.rep.Faulted > 0 {
		r.rep.Fault, r.rep.FaultSeconds = c.Fault.String(), seconds(c.FaultDuration)
	}
	if r.rep.Skewed > 0 {
		r.rep.ClockSkewSeconds = c.ClockSkew.Seconds()
	}
	r.rep.SourceAddrs = c.SourceAddrs
	r.log.Info("fleetsim: environment ready", "broker", r.brokerURL, "fleet", r.f.Dir, "signers", len(r.signers), "devices", c.Devices, "prefix", prefix, "source_addrs", c.SourceAddrs)
	return nil
}

func (r *run) enroll(ctx context.Context) error {
	start := time.Now()
	bar := r.bar("enrolling", len(r.devs))
	var n atomic.Int64
	err := enrollAll(ctx, r.f, r.devs, r.cfg.EnrollWorkers, func() { bar.set(int(n.Add(1))) })
	bar.finish()
	if err != nil {
		return fmt.Errorf("fleetsim: %w", err)
	}
	r.rep.EnrollSeconds = seconds(time.Since(start))
	r.log.Info("fleetsim: devices enrolled", "devices", len(r.devs), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// startAgents starts every device's agent and waits until each has connected once. A connect
// storm starts them all at once; other scenarios let at most ConnectWorkers make their first
// connection at a time, so the campaign they measure does not start inside a storm.
func (r *run) startAgents(ctx context.Context) error {
	c := &r.cfg
	var logOut slog.Handler
	if c.Log != nil {
		logOut = slog.NewTextHandler(c.Log, &slog.HandlerOptions{Level: c.LogLevel})
	}
	r.m = newMetrics(time.Now()) // restarted below, when the first agent starts
	r.handler = &countingHandler{m: r.m, out: logOut}
	onEpoch := func(d *device, e uint64) {
		r.m.event(evRotation)
		if t := r.target.Load(); t > 0 && e >= t {
			r.rotated.Add(1)
		}
	}
	gate := make(chan struct{}, len(r.devs))
	if c.Scenario != ConnectStorm {
		gate = make(chan struct{}, c.ConnectWorkers)
	}
	var (
		wg        sync.WaitGroup
		connected atomic.Int64
		lastAt    atomic.Int64
		stop      = make(chan struct{})
	)
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for _, d := range r.devs {
		if err := d.prepare(c, r.handler, onEpoch); err != nil {
			return fmt.Errorf("fleetsim: %w", err)
		}
	}
	start := time.Now()
	r.m.start = start
	for _, d := range r.devs {
		select {
		case gate <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		d.run()
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A device that cannot connect yet (a clock far behind) frees its place after a
			// while, so it does not hold up the others.
			slot := time.NewTimer(5 * time.Second)
			defer slot.Stop()
			released := false
			for {
				select {
				case <-d.a.Connected():
					for at := int64(time.Since(start)); ; {
						last := lastAt.Load()
						if at <= last || lastAt.CompareAndSwap(last, at) {
							break
						}
					}
					connected.Add(1)
					if !released {
						<-gate
					}
					return
				case <-slot.C:
					if !released {
						released = true
						<-gate
					}
				case <-stop:
					if !released {
						<-gate
					}
					return
				}
			}
		}()
	}
	bar := r.bar("connecting", len(r.devs))
	deadline := time.Now().Add(c.Timeout)
	for int(connected.Load()) < len(r.devs) && time.Now().Before(deadline) && ctx.Err() == nil {
		bar.set(int(connected.Load()))
		time.Sleep(50 * time.Millisecond)
	}
	bar.set(int(connected.Load()))
	bar.finish()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	n := int(connected.Load())
	r.rep.ConnectSeconds = seconds(time.Duration(lastAt.Load()))
	if r.rep.ConnectSeconds > 0 {
		r.rep.ConnectRate = float64(n) / r.rep.ConnectSeconds
	}
	if n < len(r.devs) {
		r.log.Warn("fleetsim: not every device connected; going on", "connected", n, "devices", len(r.devs), "waited", c.Timeout)
	}
	r.log.Info("fleetsim: devices connected", "connected", n, "took", time.Duration(lastAt.Load()).Round(time.Millisecond))
	return nil
}

// dialObservers opens the status session (every device's retained state, as `fleetctl status`
// reads it) and the pinger's session.
func (r *run) dialObservers(ctx context.Context) error {
	if err := r.refreshStatus(ctx); err != nil {
		return err
	}
	ttl := min(max(10*time.Minute, 2*r.cfg.Timeout+r.cfg.FaultDuration), certs.MaxCommandLifetime)
	pctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var err error
	r.pg, err = dialPinger(pctx, r.f, r.brokerURL, ttl, slog.New(slog.DiscardHandler))
	return err
}

// refreshStatus (re)opens the status session with a fresh collector and waits until it holds
// every retained message. The status subscriptions are QoS 0, as fleetctl status makes them; a
// broker may drop QoS 0 messages to a busy subscriber, and a new session reads the retained
// state again.
func (r *run) refreshStatus(ctx context.Context) error {
	col := status.NewCollector(r.f.RootKey(), r.f.KeySet())
	dctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	op, err := r.f.Dial(dctx, fleet.OperatorOptions{Broker: r.brokerURL, Subscriptions: status.Filters(), OnMessage: col.Add})
	if err != nil {
		return err
	}
	if err := op.Sync(dctx); err != nil {
		op.Close()
		return err
	}
	r.statusMu.Lock()
	old := r.op
	r.op, r.col = op, col
	r.statusMu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (r *run) status() (*fleet.Operator, *status.Collector) {
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	return r.op, r.col
}

// convergence counts the devices converged on epoch, by both accounts: the retained state an
// operator sees (epoch reached, rotation idle) and the agent itself. It returns the count by
// both, the count by the agents alone, and the ids not converged.
func (r *run) convergence(epoch uint64) (both, agents int, behind []string) {
	_, col := r.status()
	ids := make([]string, len(r.devs))
	for i, d := range r.devs {
		ids[i] = d.id
	}
	// Not col.Report(), which sorts and copies the whole fleet's status: this runs ten times a
	// second, on the same cores as the fleet it measures.
	states, listed := col.Devices(ids)
	for i, d := range r.devs {
		agentOK := d.a != nil && d.a.Epoch() >= epoch
		s, ok := states[i], listed[i]
		if agentOK {
			agents++
		}
		if agentOK && ok && s.Epoch >= epoch && s.Rotation == wire.RotationIdle && s.State == status.Converged {
			both++
		} else {
			behind = append(behind, d.id)
		}
	}
	return both, agents, behind
}

// convergenceSince counts as convergence does, for waitConverged, but looks up the retained
// state only of the devices whose agent has converged and that an earlier call did not see
// converged on epoch: each check walks the status of the devices it looks up, ten times a
// second, on the cores the fleet it measures runs on, and most of a large fleet converges long
// before the last device. Once every device has been seen converged, one full check
// (convergence) confirms it; the devices it finds behind are looked at again.
func (r *run) convergenceSince(epoch uint64) (both, agents int) {
	if r.convEpoch != epoch || len(r.convSeen) != len(r.devs) {
		r.convEpoch, r.convSeen = epoch, make([]bool, len(r.devs))
	}
	var ids []string
	var at []int
	for i, d := range r.devs {
		switch {
		case r.convSeen[i]:
			both++
			agents++
		case d.a != nil && d.a.Epoch() >= epoch:
			agents++
			ids, at = append(ids, d.id), append(at, i)
		}
	}
	if len(ids) > 0 {
		_, col := r.status()
		states, listed := col.Devices(ids)
		for k, i := range at {
			if st := states[k]; listed[k] && st.Epoch >= epoch && st.Rotation == wire.RotationIdle && st.State == status.Converged {
				r.convSeen[i] = true
				both++
			}
		}
	}
	if both < len(r.devs) {
		return both, agents
	}
	both, agents, behind := r.convergence(epoch)
	if len(behind) > 0 {
		ix := make(map[string]int, len(r.devs))
		for i, d := range r.devs {
			ix[d.id] = i
		}
		for _, id := range behind {
			r.convSeen[ix[id]] = false
		}
	}
	return both, agents
}

// staleAfter is how long every agent may have converged while the retained state disagrees
// before the retained state is read afresh.
const staleAfter = 5 * time.Second

// waitConverged waits until every device converged on epoch or timeout passed, with a
// progress bar, and returns when it happened.
// convergenceEvery is the shortest interval between two convergence checks of waitConverged:
// the convergence time it reports is that precise.
const convergenceEvery = 100 * time.Millisecond

func (r *run) waitConverged(ctx context.Context, epoch uint64, timeout time.Duration, desc string) (time.Time, bool) {
	bar := r.bar(desc, len(r.devs))
	defer bar.finish()
	deadline := time.Now().Add(timeout)
	stuckSince := time.Time{}
	rereads := 0
	var checked time.Time
	for {
		// At most ten checks a second: each walks the devices and the status of those not
		// yet seen converged, and state messages arrive by the thousand a second in a large run.
		if wait := convergenceEvery - time.Since(checked); wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		checked = time.Now()
		both, agents := r.convergenceSince(epoch)
		bar.set(both)
		if both == len(r.devs) {
			return time.Now(), true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Now(), false
		}
		// Every agent converged but the retained state says otherwise for a while: the
		// status session may have missed a state message (QoS 0, or the embedded broker's
		// SUBSCRIBE/PUBLISH race after a restart), so read the retained state afresh. If a
		// fresh read still disagrees twice, the broker holds a stale state that nothing will
		// replace before the device reconnects: stop waiting and report it.
		if agents == len(r.devs) {
			if stuckSince.IsZero() {
				stuckSince = time.Now()
			} else if time.Since(stuckSince) > staleAfter {
				if rereads == 2 {
					r.log.Warn("fleetsim: every agent converged but the broker's retained state still says otherwise for some; giving up on them", "devices", len(r.devs)-both)
					return time.Now(), false
				}
				r.log.Info("fleetsim: re-reading the retained state")
				if err := r.refreshStatus(ctx); err != nil {
					r.log.Warn("fleetsim: status session", "err", err)
				}
				rereads++
				stuckSince = time.Time{}
			}
		} else {
			stuckSince, rereads = time.Time{}, 0
		}
		_, col := r.status()
		select {
		case <-ctx.Done():
		case <-col.Changed():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// play runs the scenario: a connect storm only waits until every device published its state;
// the others publish a breach notice, with the scenario's fault, skew or broker restart, and
// wait until every device converged.
func (r *run) play(ctx context.Context) error {
	c := &r.cfg
	_, col := r.status()
	if c.Scenario == ConnectStorm {
		epoch := uint64(0)
		for _, d := range r.devs {
			epoch = max(epoch, col.DesiredEpoch(d.id))
		}
		r.rep.Epoch = epoch
		at, _ := r.waitConverged(ctx, epoch, c.Timeout, "converged")
		r.rep.ConvergeSeconds = seconds(at.Sub(r.m.start))
		return nil
	}
	// Devices of an existing fleet first catch up with what the fleet already wants.
	if e := col.MaxEpoch(); e > 0 {
		r.log.Info("fleetsim: waiting for the devices to reach the fleet's current epoch first", "epoch", e)
		r.waitConverged(ctx, e, c.Timeout, "catching up")
	}
	target := col.MaxEpoch() + 1
	r.target.Store(target)
	r.rep.Epoch = target
	if r.px != nil {
		r.faultOn(ctx)
	}
	op, _ := r.status()
	r.breachAt = time.Now()
	pctx, cancel := context.WithTimeout(ctx, readyTimeout)
	_, err := op.PublishDesired(pctx, certs.Desired{Target: certs.TargetFleet, Epoch: target, Incident: "fleetsim"}, r.breachAt)
	cancel()
	if err != nil {
		return fmt.Errorf("fleetsim: breach notice: %w", err)
	}
	r.m.mark(fmt.Sprintf("breach notice (epoch %d)", target))
	r.log.Info("fleetsim: breach notice published", "epoch", target)
	if r.px != nil {
		// Commands for the devices that are cut off now wait in their persistent sessions.
		r.sendQueued(ctx, "during the fault", func(d *device) bool { return d.faulted })
	}
	if c.Scenario == BrokerRestart {
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			r.restartMidway(ctx)
		}()
	}
	timeout := c.Timeout + c.FaultDuration + c.RestartDowntime
	at, _ := r.waitConverged(ctx, target, timeout, "converged")
	r.bg.Wait()
	r.rep.ConvergeSeconds = seconds(at.Sub(r.breachAt))
	return nil
}

// faultOn applies the fault to the proxied devices now and lifts it after FaultDuration.
func (r *run) faultOn(ctx context.Context) {
	c := &r.cfg
	r.px.SetFault(c.Fault)
	r.m.mark("fault on: " + c.Fault.String())
	r.log.Info("fleetsim: fault on", "fault", c.Fault.String(), "devices", r.rep.Faulted, "for", c.FaultDuration)
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		select {
		case <-ctx.Done():
		case <-time.After(c.FaultDuration):
		}
		r.px.SetFault(proxy.Fault{})
		r.m.mark("fault off")
		r.log.Info("fleetsim: fault off")
	}()
}

// restartMidway restarts the embedded broker once RestartAt of the devices rotated, after
// sending every device a ping that the broker must keep across the restart.
func (r *run) restartMidway(ctx context.Context) {
	want := int64(float64(len(r.devs)) * r.cfg.RestartAt)
	for r.rotated.Load() < want && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return
	}
	// The pings go out while the broker stops and starts again: those published before it
	// stopped must survive in the devices' persistent sessions, the others are published
	// once it is back.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.sendQueued(ctx, "across the broker restart", func(*device) bool { return true })
	}()
	defer wg.Wait()
	r.m.mark(fmt.Sprintf("broker restart (%d rotated)", r.rotated.Load()))
	r.log.Info("fleetsim: restarting the broker", "rotated", r.rotated.Load())
	start := time.Now()
	if err := r.restartBroker(ctx); err != nil {
		r.log.Error("fleetsim: broker restart failed", "err", err)
		return
	}
	r.restartMu.Lock()
	r.restarts++
	r.downtime += time.Since(start)
	r.restartMu.Unlock()
	r.m.mark("broker back")
	r.log.Info("fleetsim: broker back", "down", time.Since(start).Round(time.Millisecond))
	r.waitAllBack(ctx)
}

// restartBroker restarts the broker: the embedded one itself, an external one with
// Config.RestartCommand, whose output goes to Config.Log.
func (r *run) restartBroker(ctx context.Context) error {
	if r.emb != nil {
		return r.emb.restart(ctx, r.cfg.RestartDowntime)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", r.cfg.RestartCommand)
	out := r.cfg.Log
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("restart command %q: %w", r.cfg.RestartCommand, err)
	}
	return nil
}

// waitAllBack waits, for at most Config.Timeout, until every device has been connected since
// the broker came back, and records how long that took.
func (r *run) waitAllBack(ctx context.Context) {
	back := time.Now()
	deadline := back.Add(r.cfg.Timeout)
	waiting := slices.Clone(r.devs)
	for len(waiting) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		waiting = slices.DeleteFunc(waiting, func(d *device) bool { return d.a.Status().Connected })
		if len(waiting) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	r.restartMu.Lock()
	r.backAfter = time.Since(back)
	r.notBack = len(waiting)
	r.restartMu.Unlock()
	r.m.mark(fmt.Sprintf("%d of %d devices back", len(r.devs)-len(waiting), len(r.devs)))
	r.log.Info("fleetsim: devices back after the restart", "back", len(r.devs)-len(waiting), "devices", len(r.devs), "took", r.backAfter.Round(time.Millisecond))
}

// sendQueued pings the devices chosen while the scenario's disruption is under way; their
// answers are awaited at the end of the run.
func (r *run) sendQueued(ctx context.Context, why string, which func(*device) bool) {
	var ids []string
	for _, d := range r.devs {
		if which(d) {
			ids = append(ids, d.id)
		}
	}
	sent, err := r.pg.send(ctx, ids)
	if err != nil {
		r.log.Warn("fleetsim: could not send every ping "+why, "err", err)
	}
	r.queuedMu.Lock()
	for s, id := range sent {
		r.queued[s] = id
	}
	r.queuedMu.Unlock()
	r.log.Info("fleetsim: pings sent "+why, "pings", len(sent))
}

// finalPings pings every device once more and waits for every answer, those sent during the
// disruption included, for at most PingTimeout.
func (r *run) finalPings(ctx context.Context) {
	ids := make([]string, len(r.devs))
	for i, d := range r.devs {
		ids[i] = d.id
	}
	sent, err := r.pg.send(ctx, ids)
	if err != nil {
		r.log.Warn("fleetsim: could not send every final ping", "err", err)
	}
	r.queuedMu.Lock()
	for s, id := range r.queued {
		sent[s] = id
	}
	r.queuedMu.Unlock()
	bar := r.bar("pings answered", len(sent))
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PingTimeout)
	defer cancel()
	done := make(chan []string, 1)
	// A ping whose reply the device could not publish will never be answered (the agent
	// does not publish a reply again): no point waiting for it.
	go func() { done <- r.pg.await(pctx, sent, r.m.replyDropped) }()
	var missing []string
	for waiting := true; waiting; {
		select {
		case missing = <-done:
			waiting = false
		case <-time.After(100 * time.Millisecond):
			r.pg.mu.Lock()
			n := 0
			for s := range sent {
				if _, ok := r.pg.pending[s]; !ok {
					n++
				}
			}
			r.pg.mu.Unlock()
			bar.set(n)
		}
	}
	bar.set(len(sent) - len(missing))
	bar.finish()
	r.pg.mu.Lock()
	for s := range sent {
		if _, ok := r.pg.pending[s]; ok && r.m.replyDropped(s) {
			r.rep.LostReplyDropped++
		}
	}
	r.pg.mu.Unlock()
	slices.Sort(missing)
	r.rep.CommandsSent, r.rep.CommandsLost = len(sent), len(missing)
	r.rep.Lost = missing[:min(len(missing), 50)]
}

// finish fills in the report.
func (r *run) finish() {
	rep := &r.rep
	rep.Timeline, rep.Events = r.m.timeline()
	for _, s := range rep.Timeline {
		rep.PeakConnects = max(rep.PeakConnects, s.Connects)
	}
	rep.CommandsRefused = r.m.refused.Load()
	rep.RepliesDropped = r.m.replyDrops.Load()
	rep.RotationFailures, rep.RotationFailuresByCode = r.m.rotationFailures.Load(), r.m.failuresByCode()
	rep.BrokerRestarts, rep.RestartSeconds = r.restarts, seconds(r.downtime)
	if r.restarts > 0 {
		rep.BackSeconds, rep.NotBack = seconds(r.backAfter), r.notBack
	}
	rep.MaxConnectRate = r.cfg.MaxConnectRate
	_, _, behind := r.convergence(rep.Epoch)
	rep.NotConvergedCount = len(behind)
	rep.NotConverged = behind[:min(len(behind), 50)]
	seen := map[string]status.Device{}
	_, col := r.status()
	for _, d := range col.Report().Devices {
		seen[d.ID] = d
	}
	for _, d := range r.devs {
		if !slices.Contains(rep.NotConverged, d.id) {
			continue
		}
		s, ok := seen[d.id]
		why := "no retained state"
		if ok {
			why = fmt.Sprintf("retained state: epoch %d, rotation %q, last error %q", s.Epoch, s.Rotation, s.LastError)
		}
		rep.NotConvergedDetail = append(rep.NotConvergedDetail, fmt.Sprintf("%s: agent at epoch %d; %s", d.id, d.a.Epoch(), why))
		if d.a.Epoch() >= rep.Epoch {
			rep.StaleRetained++
		}
	}
	if t := r.target.Load(); t > 0 {
		var lat []time.Duration
		var last time.Time
		for _, d := range r.devs {
			if d.epoch.Load() >= t {
				at := time.Unix(0, d.epochAt.Load())
				lat = append(lat, at.Sub(r.breachAt))
				if at.After(last) {
					last = at
				}
			}
		}
		slices.Sort(lat)
		rep.Rotated = len(lat)
		if len(lat) > 0 {
			rep.LatencyP50Seconds = seconds(percentile(lat, 0.5))
			rep.LatencyP99Seconds = seconds(percentile(lat, 0.99))
			rep.LatencyMaxSeconds = seconds(lat[len(lat)-1])
			if d := last.Sub(r.breachAt); d > 0 {
				rep.RotationsPerSecond = float64(len(lat)) / d.Seconds()
			}
		}
	}
	rep.OK = rep.NotConvergedCount == 0 && rep.CommandsLost == 0
}

// close stops everything the run started, in the order that lets each stop cleanly: the
// observers (the pinger discards its persistent session), the agents, the signers, the proxy,
// the broker.
func (r *run) close() error {
	var errs []error
	if r.pg != nil {
		errs = append(errs, r.pg.close())
	}
	if op, _ := r.status(); op != nil {
		op.Close()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, d := range r.devs {
		if d.done != nil {
			d.cancel() // all at once: a fleet stopping one by one keeps reconnecting
		}
	}
	for _, d := range r.devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.stop(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, s := range r.signers {
		errs = append(errs, s.stop())
	}
	if r.px != nil {
		r.px.Close()
	}
	if r.emb != nil {
		errs = append(errs, r.emb.stop())
	}
	if r.f != nil {
		errs = append(errs, r.f.Close())
	}
	return errors.Join(errs...)
}

// progress is a progress bar on Config.Progress, or nothing.
type progress struct {
	pb *progressbar.ProgressBar
	w  io.Writer
}

func (r *run) bar(desc string, total int) *progress {
	if r.cfg.Progress == nil {
		return &progress{}
	}
	return &progress{w: r.cfg.Progress, pb: progressbar.NewOptions(max(total, 1),
		progressbar.OptionSetWriter(r.cfg.Progress),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionThrottle(100*time.Millisecond),
	)}
}

func (p *progress) set(n int) {
	if p.pb != nil {
		p.pb.Set(n)
	}
}

func (p *progress) finish() {
	if p.pb != nil {
		p.pb.Exit()
		fmt.Fprintln(p.w)
	}
}
