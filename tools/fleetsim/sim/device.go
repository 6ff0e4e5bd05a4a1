package sim

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

// device is one simulated camera: the real agent, with its own key, certificate, state
// directory and MQTT connection.
type device struct {
	i       int
	id, dir string
	url     string        // the broker, or the fault proxy in front of it
	src     netip.Addr    // the address it dials from; zero: the system's choice
	faulted bool          // behind the fault proxy
	skew    time.Duration // added to its clock

	a      *agent.Agent
	cancel context.CancelFunc
	done   chan error

	// epochAt is when its epoch last rose (Unix nanoseconds); epoch is the epoch it rose to.
	epochAt atomic.Int64
	epoch   atomic.Uint64
}

// enroll enrolls the device the real way: the agent makes its keys and CSRs, the fleet signs
// them, the agent installs the bundle.
func (d *device) enroll(f *fleet.Fleet) error {
	req, err := agent.Enroll(d.dir, d.id)
	if err != nil {
		return fmt.Errorf("enroll %s: %w", d.id, err)
	}
	bundle, _, err := f.Enroll(req, time.Now())
	if err != nil {
		return fmt.Errorf("enroll %s: %w", d.id, err)
	}
	if _, err := agent.InstallBundle(d.dir, bundle, time.Now()); err != nil {
		return fmt.Errorf("enroll %s: %w", d.id, err)
	}
	return nil
}

// prepare makes the agent (agent.New: it loads the device's keys, bundle and state); run
// starts it. onEpoch runs after each rise of its epoch.
func (d *device) prepare(cfg *Config, h *countingHandler, onEpoch func(*device, uint64)) error {
	ac := agent.Config{
		StateDir:       d.dir,
		BrokerURL:      d.url,
		Firmware:       "fleetsim",
		MinBackoff:     cfg.MinBackoff,
		MaxBackoff:     cfg.MaxBackoff,
		KeepAlive:      cfg.KeepAlive,
		LocalAddr:      d.src,
		RetryMin:       cfg.RetryMin,
		RetryMax:       cfg.RetryMax,
		RequestTimeout: cfg.RequestTimeout,
		SwitchTimeout:  cfg.SwitchTimeout,
		// A skewed clock that is behind waits for the certificate's NotBefore (R5); look again
		// every second rather than every 15, so a run is not dominated by it.
		ClockRetry: time.Second,
		Logger:     slog.New(h),
	}
	if d.skew != 0 {
		ac.Clock = offsetClock(d.skew)
	}
	a, err := agent.New(ac)
	if err != nil {
		return fmt.Errorf("start %s: %w", d.id, err)
	}
	// Converged is committed: the notice alone raises the grant epoch (OnEpoch) long before.
	a.OnCommit(func(e uint64) {
		d.epoch.Store(e)
		d.epochAt.Store(time.Now().UnixNano())
		onEpoch(d, e)
	})
	d.a = a
	return nil
}

// run starts the prepared agent; stop stops it.
func (d *device) run() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan error, 1)
	go func() { d.done <- d.a.Run(ctx) }()
}

// stop stops the agent and waits for it; it does nothing for an agent never started. The
// agent stays readable (Epoch) after it stopped.
func (d *device) stop() error {
	if d.done == nil {
		return nil
	}
	d.cancel()
	err := <-d.done
	d.done = nil
	if err != nil {
		return fmt.Errorf("%s: %w", d.id, err)
	}
	return nil
}

// offsetClock is the system clock moved by a fixed offset: a device whose clock is wrong.
// Timers are unaffected (a wrong clock still counts seconds right).
type offsetClock time.Duration

var _ clock.Clock = offsetClock(0)

func (o offsetClock) Now() time.Time                         { return time.Now().Add(time.Duration(o)) }
func (o offsetClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// countingHandler is every simulated agent's log handler: it counts the events fleetsim
// reports (connections, failed attempts, lost connections, refused commands, failed rotation
// steps, replies that could not be published) from the agents' own log records, and passes warnings and errors on to out.
type countingHandler struct {
	m   *metrics
	out slog.Handler // nil: count only
}

var _ slog.Handler = (*countingHandler)(nil)

// The log messages counted: transport/mqtt's and the agent's.
const (
	msgConnected      = "mqtt: connected"
	msgCannotConnect  = "mqtt: cannot connect"
	msgConnectionLost = "mqtt: connection lost"
	msgCommandRefused = "command refused"
	msgRotationFailed = "rotation step failed; will retry"
	msgReplyFailed    = "could not publish reply"
)

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case msgConnected:
		h.m.event(evConnect)
	case msgCannotConnect:
		h.m.event(evConnectFailed)
	case msgConnectionLost:
		h.m.event(evLost)
	case msgCommandRefused:
		// A replay (a QoS 1 redelivery) is logged at info and is harmless.
		if r.Level >= slog.LevelWarn {
			h.m.refused.Add(1)
		}
	case msgRotationFailed:
		code := "unknown"
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "code" {
				code = a.Value.String()
				return false
			}
			return true
		})
		h.m.rotationFailed(code)
	case msgReplyFailed:
		h.m.replyDrops.Add(1)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "seq" && a.Value.Kind() == slog.KindUint64 {
				h.m.dropReply(a.Value.Uint64())
				return false
			}
			return true
		})
	}
	if h.out != nil && h.out.Enabled(ctx, r.Level) {
		return h.out.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if h.out == nil {
		return h
	}
	return &countingHandler{m: h.m, out: h.out.WithAttrs(attrs)}
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	if h.out == nil {
		return h
	}
	return &countingHandler{m: h.m, out: h.out.WithGroup(name)}
}

// newDevices lays out n devices under stateDir, with the share behind the proxy, the share
// with a skewed clock, and their source addresses.
func newDevices(cfg *Config, prefix, brokerURL, proxyURL string) []*device {
	ds := make([]*device, cfg.Devices)
	width := len(fmt.Sprint(cfg.Devices - 1))
	for i := range ds {
		id := fmt.Sprintf("%s%0*d", prefix, max(width, 5), i)
		d := &device{i: i, id: id, dir: filepath.Join(cfg.StateDir, "devices", id), url: brokerURL}
		if cfg.SourceAddrs > 0 {
			d.src = SourceAddr(i % cfg.SourceAddrs)
		}
		if proxyURL != "" && inShare(i, cfg.FaultShare) {
			d.faulted, d.url = true, proxyURL
		}
		// The skewed share is taken from the other end of the ids, so that with both a fault
		// and a skew some devices have one, some the other, some both.
		if cfg.ClockSkew != 0 && inShare(cfg.Devices-1-i, cfg.SkewShare) {
			d.skew = cfg.ClockSkew
		}
		ds[i] = d
	}
	return ds
}

// enrollAll enrolls every device with cfg.EnrollWorkers at a time, calling tick after each.
func enrollAll(ctx context.Context, f *fleet.Fleet, ds []*device, workers int, tick func()) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		first atomic.Pointer[error]
	)
	for range min(workers, len(ds)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ds) || ctx.Err() != nil || first.Load() != nil {
					return
				}
				if err := ds[i].enroll(f); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
				tick()
			}
		}()
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return *e
	}
	return ctx.Err()
}
