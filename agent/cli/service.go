package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/device/gpio"
	"github.com/camagent/camagent/internal/buildinfo"
	"github.com/camagent/camagent/internal/clock"
)

// Service defaults.
const (
	// defaultEnrollPoll is how often a device that is not enrolled looks for its bundle.
	defaultEnrollPoll = 5 * time.Second
	// defaultStatusPoll is how often the LED and the service manager's status line follow
	// the agent.
	defaultStatusPoll = time.Second
	// privacyTimeout bounds applying a privacy switch change: persisting it is quick, the
	// device state publish that follows may wait for the broker.
	privacyTimeout = 10 * time.Second
)

// service is `camagent run`: it keeps one agent running until it is told to stop. It restarts
// the agent in-process when SIGHUP brings a valid new configuration, waits (without exiting,
// so systemd does not restart it in a loop) while the device is not enrolled, drives the
// status LED, hands the reset button and the privacy switch to the agent, and tells systemd
// about all of it (READY, RELOADING, STOPPING, STATUS and WATCHDOG, sd_notify(3)).
//
// Its loop (run) owns the agent. The GPIO devices and the watchdog run on goroutines of their
// own and reach the loop through channels; they never call the agent directly.
type service struct {
	args   []string // the command line, parsed again with the configuration file on SIGHUP
	stderr io.Writer
	env    Env
	opts   *runOptions // the configuration in use

	// Tuning, for tests. Zero values select the defaults.
	enrollPoll time.Duration       // 0: defaultEnrollPoll
	statusPoll time.Duration       // 0: defaultStatusPoll
	pins       *gpio.Pins          // used instead of gpio.Open(opts.pins) when set
	inputClock clock.Clock         // the button's and the switch's clock; nil: the system clock
	tune       func(*agent.Config) // applied to every agent's configuration; nil: none

	baseLog *slog.Logger // the first logger; for the goroutines, which must not race on log
	log     *slog.Logger // the current agent's logger; the loop's goroutine only
	board   *board
	beats   chan chan *agent.Agent // the watchdog's heartbeats; the loop answers with its agent; nil: made by run

	// The loop's goroutine only.
	lock         *agent.StateLock // held on lockDir while an agent is made or runs
	lockDir      string
	status       string // the STATUS= line last sent
	readyDue     bool   // READY=1 is due once an agent runs or the device waits for enrollment
	notEnrolled  string // the state directory last logged as not enrolled
	notifyFailed bool   // a notification failed and was logged
}

// outcome is how one agent's run ended.
type outcome int

const (
	outStop   outcome = iota // stop the service
	outReload                // start an agent with the new configuration
	outReset                 // the device was reset: wait for enrollment
)

// run runs the service until ctx is cancelled (SIGTERM, SIGINT), and returns nil then. It
// returns an error when the configuration is wrong or an agent cannot start or stops on its
// own; systemd then restarts the process.
func (s *service) run(ctx context.Context) error {
	b, err := s.opts.build(s.stderr)
	if err != nil {
		return err
	}
	s.baseLog, s.log = b.log, b.log
	if s.beats == nil {
		s.beats = make(chan chan *agent.Agent)
	}
	s.readyDue = true
	defer s.unlock()
	var pins gpio.Pins
	if s.pins != nil {
		pins = *s.pins
	} else {
		if pins, err = gpio.Open(s.opts.pins); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		if pins.NoGPIO != "" {
			s.log.Info("GPIO features off: the status LED, the reset button and the privacy switch are not used", "why", pins.NoGPIO)
		}
	}
	if s.board, err = newBoard(boardConfig{Pins: pins, InputClock: s.inputClock, Logger: s.log}); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	s.board.setLED(gpio.Booting)
	s.log.Info("camagent starting", "version", buildinfo.Version(), "state", s.opts.state, "config", s.opts.config)
	s.warnComments(s.opts)
	s.setStatus("starting")

	// The devices and the watchdog outlive the agents the loop starts and stops.
	bctx, stopBoard := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stopBoard()
		wg.Wait()
	}()
	s.board.start(bctx, &wg)
	if s.env.Watchdog > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.watchdog(bctx, s.env.Watchdog/2)
		}()
	}

	// The privacy switch's position is applied to each agent before it runs, so a camera
	// switched private never serves a viewer: wait for the switch's first reading (at once).
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			s.notify(notifyStopping)
			return nil
		case <-s.board.firstLevel():
			waiting = false
		case r := <-s.beats:
			r <- nil
		}
	}

	var prev *runOptions // the configuration before a reload, until the new one has started
	for {
		a, err := s.newAgent()
		switch {
		case errors.Is(err, agent.ErrNotEnrolled):
			prev = nil
			if !s.waitEnrolled(ctx) {
				return nil
			}
			continue
		case err != nil && prev != nil:
			s.log.Error("reload: the new configuration cannot start the agent; going back to the previous one", "err", err)
			s.opts, prev = prev, nil
			continue
		case err != nil:
			return err
		}
		prev = nil
		out, next, err := s.runAgent(ctx, a)
		switch {
		case err != nil:
			return err
		case out == outStop:
			return nil
		case out == outReload:
			prev, s.opts = s.opts, next
		}
	}
}

// newAgent makes an agent from the configuration in use.
func (s *service) newAgent() (*agent.Agent, error) {
	b, err := s.opts.build(s.stderr)
	if err != nil {
		return nil, err
	}
	s.log = b.log
	cfg := b.cfg
	if s.tune != nil {
		s.tune(&cfg)
	}
	// The state directory is this process's while an agent uses it: a second camagent on it
	// (one started by hand beside the service) would run a second rotation journal over the
	// same files. It is let go while the device waits for enrollment, which camagent enroll
	// must be able to write.
	if s.lock == nil || s.lockDir != cfg.StateDir {
		s.unlock()
		l, err := agent.LockState(cfg.StateDir)
		if err != nil {
			return nil, fmt.Errorf("run: %w", err)
		}
		s.lock, s.lockDir = l, cfg.StateDir
		// Under the lock, before the agent writes anything: the temporary files of writes
		// a SIGKILL or a power cut interrupted (agent.StateLock.RemoveTemps).
		n, err := l.RemoveTemps()
		switch {
		case err != nil:
			s.log.Warn("could not remove every temporary file left by interrupted writes", "state", cfg.StateDir, "removed", n, "err", err)
		case n > 0:
			s.log.Info("removed temporary files left by interrupted writes", "state", cfg.StateDir, "removed", n)
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		s.unlock()
		return nil, err
	}
	return a, nil
}

// unlock lets go of the state directory.
func (s *service) unlock() {
	s.lock.Unlock()
	s.lock, s.lockDir = nil, ""
}

// runAgent applies the privacy switch's position to a, runs it, and serves the loop's events
// until ctx is cancelled, a reload brings a new configuration, or the reset button is held.
// The agent's Run has returned when runAgent returns.
func (s *service) runAgent(ctx context.Context, a *agent.Agent) (outcome, *runOptions, error) {
	if on, known := s.board.switchLevel(); known {
		// Before Run: the setting is persisted and the video starts with it. A save that
		// fails leaves privacy on (SetPrivacy never fails the other way), so the agent runs:
		// exiting would only restart it into the same disk.
		if err := a.SetPrivacy(ctx, on, "switch"); err != nil {
			s.log.Error("privacy switch: could not save privacy mode; it is on", "switch_on", on, "err", err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	stop := func() error {
		cancel()
		return <-done
	}
	s.refresh(a)
	s.readyNow()

	every := s.statusPoll
	if every == 0 {
		every = defaultStatusPoll
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.notify(notifyStopping)
			s.setStatus("stopping")
			return outStop, nil, stop()
		case err := <-done:
			if ctx.Err() != nil { // SIGTERM: runCtx ended with ctx, and Run returned first
				s.notify(notifyStopping)
				s.setStatus("stopping")
				return outStop, nil, err
			}
			if err == nil {
				err = errors.New("run: the agent stopped on its own")
			}
			return outStop, nil, err
		case <-s.env.Reload:
			o, ok := s.reload()
			if !ok {
				continue
			}
			// The old agent's Run has fully returned before the new agent is made: both use
			// the same state directory and MQTT client id.
			if err := stop(); err != nil {
				return outStop, nil, err
			}
			return outReload, o, nil
		case <-s.board.long:
			s.log.Warn("reset button held: factory reset; stopping the agent")
			s.setStatus("factory reset")
			if err := stop(); err != nil {
				s.log.Error("the agent stopped with an error before the factory reset", "err", err)
			}
			s.factoryReset()
			return outReset, nil, nil
		case <-s.board.short:
			s.logStatus(a.Status())
		case <-s.board.privacy:
			on, _ := s.board.switchLevel()
			pctx, pcancel := context.WithTimeout(ctx, privacyTimeout)
			if err := a.SetPrivacy(pctx, on, "switch"); err != nil {
				s.log.Error("privacy switch: could not change privacy mode", "on", on, "err", err)
			}
			pcancel()
		case r := <-s.beats:
			r <- a
		case <-tick.C:
		}
		s.refresh(a)
	}
}

// waitEnrolled waits while the device is not enrolled: the LED shows Error and the state
// directory is looked at every enrollPoll until a bundle appears. It returns true when an
// agent should be tried again (a bundle appeared, or a reload brought a new configuration),
// false when ctx was cancelled.
func (s *service) waitEnrolled(ctx context.Context) bool {
	dir := s.opts.state
	every := s.enrollPoll
	if every == 0 {
		every = defaultEnrollPoll
	}
	s.board.setLED(gpio.Error)
	s.setStatus("not enrolled: waiting for a bundle in " + dir)
	if s.notEnrolled != dir {
		s.notEnrolled = dir
		s.log.Warn("the device is not enrolled; waiting for its bundle (camagent enroll --id ID, then fleetctl enroll, then camagent enroll --bundle FILE, as the service user)",
			"state", dir, "looking_every", every)
	}
	s.readyNow()
	for {
		timer := time.NewTimer(every)
		select {
		case <-ctx.Done():
			timer.Stop()
			s.notify(notifyStopping)
			return false
		case <-timer.C:
			if _, err := os.Stat(filepath.Join(dir, agent.BundleFile)); err == nil {
				s.log.Info("enrollment bundle found; starting the agent", "state", dir)
				return true
			}
		case <-s.env.Reload:
			timer.Stop()
			if o, ok := s.reload(); ok {
				s.opts = o
				return true
			}
		case <-s.board.long:
			timer.Stop()
			s.log.Warn("reset button held: factory reset")
			s.factoryReset()
			s.board.setLED(gpio.Error)
		case <-s.board.short:
			timer.Stop()
			s.log.Info("status (reset button): not enrolled", "state", dir, "version", buildinfo.Version())
		case <-s.board.privacy:
			timer.Stop() // applied when an agent starts
		case r := <-s.beats:
			timer.Stop()
			r <- nil
		}
	}
}

// reload reads and checks the configuration again after SIGHUP. On success it returns the
// new configuration, and READY=1 follows once it runs; on failure it logs why, sends READY=1
// at once and the service goes on with the configuration in use.
func (s *service) reload() (*runOptions, bool) {
	s.notify(notifyReloading)
	s.log.Info("SIGHUP: reloading the configuration", "config", s.opts.config)
	o, err := parseRunArgs("camagent run", s.args, io.Discard, nil)
	if err == nil {
		_, err = o.build(s.stderr)
	}
	if err != nil {
		s.log.Error("reload failed; keeping the configuration in use", "err", err)
		s.notify(notifyReady)
		return nil, false
	}
	if o.pins != s.opts.pins {
		s.log.Warn("reload: GPIO pin changes take effect at the next restart (systemctl restart camagent)",
			"led-pin", o.pins.LED, "button-pin", o.pins.Button, "privacy-pin", o.pins.Privacy)
		o.pins = s.opts.pins
	}
	s.warnComments(o)
	s.readyDue = true
	return o, true
}

// warnComments logs a warning for each value of o's configuration file that seems to carry a
// comment: the value keeps it (commentRule). The value is not logged: it may be a secret's.
func (s *service) warnComments(o *runOptions) {
	for _, e := range o.commentedValues() {
		s.log.Warn("configuration: a value holds \" #\", which is part of the value: "+commentRule,
			"config", o.config, "line", e.Line, "key", e.Key)
	}
}

// factoryReset wipes the state directory (SECURITY-BAR S10). The agent must not be running.
func (s *service) factoryReset() {
	dir := s.opts.state
	left, err := agent.Reset(dir)
	if err != nil {
		s.log.Error("factory reset failed", "state", dir, "err", err)
		return
	}
	s.log.Warn("factory reset done: keys, certificates, tokens, sealed settings and the journal are wiped; the device must be enrolled again",
		"state", dir, "left_alone", left)
	s.notEnrolled = ""
}

// refresh makes the LED and the status line follow a's status.
func (s *service) refresh(a *agent.Agent) {
	st := a.Status()
	s.board.setLED(ledState(st))
	s.setStatus(statusLine(st))
}

// logStatus logs st for a short press of the reset button.
func (s *service) logStatus(st agent.Status) {
	s.log.Info("status (reset button)",
		"device", st.DeviceID, "epoch", st.Epoch, "cert_serial", st.CertSerial,
		"cert_not_after", st.CertNotAfter.UTC().Format(time.RFC3339), "connected", st.Connected,
		"clock_behind", st.ClockBehind, "rotating", st.Rotating, "privacy", st.Privacy,
		"version", buildinfo.Version())
}

// setStatus sends STATUS=line when it changed.
func (s *service) setStatus(line string) {
	if line == s.status {
		return
	}
	s.status = line
	s.notify("STATUS=" + line)
}

// readyNow sends READY=1 if it is due.
func (s *service) readyNow() {
	if s.readyDue {
		s.readyDue = false
		s.notify(notifyReady)
	}
}

// notify sends state to the service manager, if there is one. A failure is logged once.
func (s *service) notify(state string) {
	if s.env.Notify == nil {
		return
	}
	if err := s.env.Notify(state); err != nil && !s.notifyFailed {
		s.notifyFailed = true
		s.log.Warn("could not notify the service manager", "state", state, "err", err)
	}
}

// watchdog sends WATCHDOG=1 every interval while the service is alive: its loop answers a
// heartbeat, and so does the running agent's main loop (agent.Alive). A wedged loop gets no
// ping, and systemd kills and restarts the process when WatchdogSec passes without one.
func (s *service) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		err := s.alive(ctx, every/2)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			if s.env.Notify != nil {
				s.env.Notify(notifyWatchdog) // a failure is the loop's to log (notify)
			}
			if failing {
				failing = false
				s.baseLog.Info("watchdog: the agent answers again")
			}
		case !failing:
			failing = true
			s.baseLog.Error("watchdog: the agent does not answer; not pinging systemd, which restarts it if this lasts", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// alive asks the service's loop, and the agent it runs, for a heartbeat within d.
func (s *service) alive(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	reply := make(chan *agent.Agent, 1)
	select {
	case s.beats <- reply:
	case <-ctx.Done():
		return errors.New("the service loop did not answer")
	}
	if a := <-reply; a != nil {
		return a.Alive(ctx)
	}
	return nil
}
